"""A Tune trial's last figures reach MLflow even when the server failed in its last moments."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from semisep.pipeline.config import Config
from tests.conftest import mlflow_server_process

pytestmark = pytest.mark.slow


class FlakyProxy:
    """An HTTP proxy in front of a real MLflow server that answers 503 to the first ``refusals``
    metric uploads holding ``key`` at ``step``: the server failing at the end of a trial."""

    def __init__(self, upstream: str, key: str, step: int, refusals: int = 1):
        self.upstream, self.key, self.step, self.left = urlsplit(upstream), key, step, refusals
        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.endswith("/runs/log-batch") and proxy._refuse(body):
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                reply = conn.getresponse()
                data = reply.read()
                self.send_response(reply.status)
                for k, v in reply.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _refuse(self, body: bytes) -> bool:
        if self.left <= 0:
            return False
        metrics = json.loads(body or b"{}").get("metrics", [])
        if any(m.get("key") == self.key and int(m.get("step", -1)) == self.step for m in metrics):
            self.left -= 1
            self.refused += 1
            return True
        return False


def test_a_trial_sends_its_last_metrics_though_the_server_refused_them_once(ingested, tmp_path):
    """The last validation's upload is refused (HTTP 503): the trial's logger holds the figures for
    its back-off; the trial sends them before it ends instead of dropping them."""
    from mlflow import MlflowClient
    from ray import tune

    from semisep.training.tracking import start_run
    from semisep.training.trial import trainable

    base, _ = ingested
    with mlflow_server_process(tmp_path) as server:
        proxy = FlakyProxy(server, "best_val_sdr", step=4)
        cfg = Config.from_dict(base.to_dict())
        cfg.mlflow.tracking_uri, cfg.mlflow.request_retries = proxy.url, 0  # one attempt per call: one refusal fails it
        cfg.train.max_steps, cfg.train.val_every, cfg.train.patience = 4, 2, 10
        parent = start_run(cfg.tracking_uri, cfg.mlflow.experiment, "parent", {}, {})
        tuner = tune.Tuner(trainable(cfg, {"CPU": 1}),
                           param_space={"arm": {"label": "last-metrics"}, "parent_run_id": parent, "sweep": "flush"},
                           run_config=tune.RunConfig(name="flush", storage_path=str(tmp_path / "tune"), verbose=0))
        grid = tuner.fit()
        assert not [r.error for r in grid if r.error], [r.error for r in grid]
        assert proxy.refused == 1, "the server's failure at the end did happen"
        client = MlflowClient(server)
        (run,) = client.search_runs([client.get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "best_val_sdr")}
        assert sorted(history) == [2, 4], history  # the last validation's figures arrived
        assert history[4] == pytest.approx(grid[0].metrics["best_val_sdr"])
        # and what the loop logs after the last report (buffered, sent at most every 5 s) is sent too
        assert [m.step for m in client.get_metric_history(run.info.run_id, "validation_overhead_s")] == [2, 4]
        assert run.info.status == "FINISHED"
