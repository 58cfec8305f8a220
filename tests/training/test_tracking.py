"""MetricLogger: metrics reach the run in few calls, keep their steps, and survive a dead server."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient

from semisep.training.tracking import MetricLogger


def _run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("t", artifact_location=str(tmp_path / "artifacts"))
    return uri, client, client.create_run(experiment).info.run_id


def _history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_metrics_are_sent_in_batches_with_their_steps(tmp_path):
    uri, client, run_id = _run(tmp_path)
    logger = MetricLogger(uri, run_id, interval=3600)
    calls = []
    send = logger.client.log_batch
    logger.client.log_batch = lambda *a, **k: calls.append(1) or send(*a, **k)
    logger.log({"loss": 1.0}, 1)  # the first call sends (nothing was sent yet)
    for step in range(2, 40):
        logger.log({"loss": float(step)}, step)
    assert len(calls) == 1 and _history(client, run_id, "loss") == [(1, 1.0)]
    logger.log({"val_sdr": 2.5}, 40, now=True)  # a validation goes out at once, with everything before it
    assert len(calls) == 2
    assert _history(client, run_id, "loss") == [(s, float(s)) for s in range(1, 40)]
    assert _history(client, run_id, "val_sdr") == [(40, 2.5)]


def test_a_dead_server_keeps_the_metrics_until_it_answers(tmp_path, monkeypatch):
    uri, client, run_id = _run(tmp_path)
    logger = MetricLogger(uri, run_id, interval=0, backoff=0)
    send = logger.client.log_batch

    def down(*a, **k):
        raise mlflow.exceptions.MlflowException("503 Service Unavailable")

    logger.client.log_batch = down
    for step in range(1, 6):
        logger.log({"loss": float(step)}, step)
    assert len(logger.pending) == 5 and "503" in logger.last_error
    assert not logger.flush()
    logger.client.log_batch = send
    assert logger.flush() and not logger.pending
    assert _history(client, run_id, "loss") == [(s, float(s)) for s in range(1, 6)]
