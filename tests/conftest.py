"""Shared fixtures: a tiny generated corpus, a tiny config, one real local Ray for the session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest

from semisep.pipeline.config import load_config
from semisep.pipeline.demo_corpus import generate_demo_corpus

TINY = dict(track_seconds=4.0, paired_train=2, unpaired_per_role=2, valid=1, gate=1, test=2, test_in_domain=0)


def tiny_config(workdir, corpus, **extra):
    overrides = [
        f"data.workdir={workdir}",
        "data.excerpt_frames=32", "data.excerpt_hop=16",
        f"data.corpora=[{{name: paired, path: {corpus}/paired}}, {{name: target, path: {corpus}/target}},"
        f" {{name: unpaired, path: {corpus}/unpaired, format: folder, use: unpaired}}]",
        "model.base_channels=4", "model.critic_channels=4", "model.critic_layers=3",
        "train.batch_size=4", "train.max_steps=4", "train.val_every=2", "train.log_every=1",
        "train.lr=0.001", "train.n_critic=2", "train.remix=0", "train.shuffle_buffer=8", "ray.num_cpus=2",
        "eval.corpus=target", "mlflow.experiment=tests",
    ]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return load_config(None, overrides)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, ready, proc: subprocess.Popen | None = None, log=None, timeout: float = 300) -> None:
    """Poll ``ready()`` until true; fail with the log's tail if ``proc`` died or time ran out (a loaded
    2-core machine takes over two minutes to start an MLflow server with its auth app)."""
    deadline = time.time() + timeout
    while not ready():
        if (proc is not None and proc.poll() is not None) or time.time() > deadline:
            tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"{what} did not start: {tail}")
        time.sleep(0.5)


@contextmanager
def mlflow_server_process(root, auth: dict | None = None):
    """A real `mlflow server` on loopback (SQLite, local artifacts) for the block; yields its URL.

    ``auth``: run it behind MLflow's basic-auth app as cluster.yaml does (deploy/mlflow-auth.ini,
    its user store moved into ``root``), with this admin login ({"username", "password"})."""
    port = free_port()
    log_path = root / "server.log"
    log = open(log_path, "w")
    env = dict(os.environ)
    args = []
    if auth:
        from pathlib import Path

        ini = (Path(__file__).resolve().parents[1] / "deploy" / "mlflow-auth.ini").read_text()
        ini = "\n".join(f"database_uri = sqlite:///{root}/auth.db" if line.startswith("database_uri") else line
                        for line in ini.splitlines())
        (root / "auth.ini").write_text(ini)
        env |= {"MLFLOW_AUTH_CONFIG_PATH": str(root / "auth.ini"), "MLFLOW_AUTH_ADMIN_USERNAME": auth["username"],
                "MLFLOW_AUTH_ADMIN_PASSWORD": auth["password"], "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret"}
        args = ["--app-name", "basic-auth"]
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{root}/server.db",
                             "--artifacts-destination", str(root / "artifacts"), "--workers", "1", *args],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            return True
        except urllib.error.HTTPError:  # up, and asking for a login
            return True
        except OSError:
            return False

    try:
        wait_for("mlflow server", healthy, proc, log_path)
        yield url
    finally:
        os.killpg(proc.pid, 9)  # the server's uvicorn workers ignore a polite SIGTERM for a long while
        proc.wait(30)
        log.close()


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    generate_demo_corpus(root, seed=1, progress=False, **TINY)
    return root


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the in-process tests; its workers start as semisep's do (WORKER_ENV)."""
    import ray

    from semisep.pipeline.ray_session import WORKER_ENV

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING",
                 runtime_env={"env_vars": {k: v for k, v in WORKER_ENV.items() if k not in os.environ}})
    yield ray
    ray.shutdown()


def spoil_gate_shards(cfg) -> list[str]:
    """Overwrite every shard of the ``gate`` split with bytes no reader accepts; returns them.

    Only `semisep promote` measures on the gate's songs, from their audio. Every test that trains,
    validates, sweeps or runs an experiment on the ``ingested`` store runs with these shards
    spoiled: had any of them opened one, it would have failed naming it."""
    from semisep.pipeline.manifest import read_manifest

    manifest, _ = read_manifest(cfg.data.shards_dir)
    shards = sorted(set(manifest[(manifest.split == "gate") & (manifest.status == "ok")].shard))
    for shard in shards:
        with open(shard, "wb") as fh:
            fh.write(b"not a shard: the gate split is read by nothing but the promotion gate")
    return shards


@pytest.fixture(scope="session")
def ingested(tiny_corpus, tmp_path_factory, ray_session):
    """The tiny corpus ingested into a fresh workdir, its gate shards spoiled; returns (config, report)."""
    from semisep.pipeline.ingest import ingest

    cfg = tiny_config(tmp_path_factory.mktemp("work"), tiny_corpus)
    report = ingest(cfg, progress=False)
    assert spoil_gate_shards(cfg), "the tiny corpus has gate songs"
    return cfg, report


@pytest.fixture(scope="session")
def trained(ingested):
    """Supervised and semi-supervised tiny models trained with real Ray Train and MLflow."""
    from semisep.evaluation.registry import log_model
    from semisep.training.train import train

    cfg, _ = ingested
    out = {}
    for name, alpha, beta in (("supervised", 0.0, 0.0), ("semi-supervised", 0.001, 0.001)):
        run_cfg = type(cfg).from_dict(cfg.to_dict())
        run_cfg.train.alpha, run_cfg.train.beta = alpha, beta
        out[name] = train(run_cfg, name, log_model=log_model)
    return cfg, out
