"""A real two-node Ray cluster on this machine: `ray job submit` of the nightly job (ingestion,
2-worker training placed one worker per node, registration, the gate), shards and checkpoints on
shared storage (file:// URIs through pyarrow), runs in a real `mlflow server`; a night with nothing
new; then a night with new audio whose elastic training loses the second node half-way and
finishes on the first.

Both nodes are `ray start` processes on loopback addresses of their own (127.0.0.2 head,
127.0.0.3 worker; Ray turns 127.0.0.1 into the machine's outward address), with their own temp
dirs and token authentication as cluster.yaml sets it up. Every process the cluster started is
found by its RAY_TMPDIR (and its children) and killed by pid; a `ray stop` would also kill any
other Ray on the machine.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import yaml

from tests.conftest import TINY, free_port, mlflow_server_process, tiny_config, wait_for

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"


def _cluster_processes(temp_root: str) -> set[int]:
    """Processes started for this cluster: RAY_TMPDIR under ``temp_root``, and their children
    (Ray's agents drop RAY_TMPDIR from their environment but are the raylet's children)."""
    found = set()
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("RAY_TMPDIR", "").startswith(temp_root):
                found.add(proc.pid)
                found.update(c.pid for c in proc.children(recursive=True))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def kill_processes(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextmanager
def two_node_cluster():
    """Head (2 CPUs, 1 `trainer`) and worker (2 CPUs, 1 `trainer`, 2 `ingest`); yields (dashboard
    URL, env, the worker node's RAY_TMPDIR: its processes are the ones that carry it)."""
    # a short root: Ray's unix sockets live under it and their paths must stay under 108 bytes
    root = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    token = Path(root) / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(PATH=f"{BIN}:{env.get('PATH', '')}", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
               RAY_USAGE_STATS_ENABLED="0",
               # the head checks each node every second instead of every 3 (a killed node refuses at
               # once; a busy one still has the default 10 s to answer): a lost node is seen ~10 s sooner
               RAY_health_check_period_ms="1000",
               # after the node loss Ray Train first asks for 2 workers again and waits this long for
               # them before going on with 1 (default 60 s; docs/cluster.md)
               RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="20")
    gcs, dashboard = free_port(), free_port()

    def start(name: str, args: list[str]) -> None:
        node_env = env | {"RAY_TMPDIR": os.path.join(root, name)}
        os.makedirs(node_env["RAY_TMPDIR"])
        out = subprocess.run([str(BIN / "ray"), "start", *args, "--disable-usage-stats",
                              f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
                              f"--runtime-env-agent-port={free_port()}"],
                             env=node_env, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, f"ray start ({name}) failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"

    try:
        start("head", ["--head", f"--node-ip-address={HEAD_IP}", f"--port={gcs}", "--num-cpus=2",
                       '--resources={"trainer": 1}', "--include-dashboard=true", f"--dashboard-host={HEAD_IP}",
                       f"--dashboard-port={dashboard}", f"--ray-client-server-port={free_port()}"])
        start("worker", [f"--address={HEAD_IP}:{gcs}", f"--node-ip-address={WORKER_IP}", "--num-cpus=2",
                         '--resources={"trainer": 1, "ingest": 2}'])
        yield f"http://{HEAD_IP}:{dashboard}", env, os.path.join(root, "worker")
    finally:
        for _ in range(3):  # a dying raylet may still start a worker: sweep until none is left
            pids = _cluster_processes(root)
            if not pids:
                break
            kill_processes(pids)
            time.sleep(1)
        assert not _cluster_processes(root), "cluster processes survived the clean-up"
        shutil.rmtree(root, ignore_errors=True)


def submit(address: str, env: dict, *args: str, timeout: float = 600) -> str:
    """`ray job submit` of one semisep command; returns the job's output, fails on a failed job."""
    out = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", address, "--", str(BIN / "semisep"), *args],
                         env=env, capture_output=True, text=True, timeout=timeout)
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "succeeded" in text, f"job {args} failed:\n{text[-6000:]}"
    return text


def _registered_checkpoint(storage: Path, runs: str, before: set[Path]) -> bool:
    """Whether Ray Train has registered a checkpoint of a run whose folder matches ``runs`` and is not
    in ``before`` (its checkpoint manager's snapshot file)."""
    for path in storage.glob(f"{runs}/checkpoint_manager_snapshot.json"):
        if path.parent in before:
            continue
        try:
            latest = json.loads(path.read_text()).get("latest_checkpoint_result") or {}
        except ValueError:  # being written
            continue
        if (latest.get("checkpoint_dir_name") or "").startswith("step_"):
            return True
    return False


def _files(root: Path, name: str) -> list[Path]:
    return sorted(root.rglob(name))


def test_jobs_on_two_nodes_with_shared_storage_and_nightly(tmp_path):
    from mlflow import MlflowClient

    from semisep.pipeline.demo_corpus import generate_demo_corpus

    corpus = tmp_path / "corpus"
    generate_demo_corpus(corpus, seed=3, progress=False, **TINY)
    shared = tmp_path / "shared"  # stands for S3/NFS: both nodes reach it through file:// URIs
    with mlflow_server_process(tmp_path) as mlflow_url, two_node_cluster() as (address, env, worker_node):
        cfg = tiny_config(tmp_path / "driver", corpus, **{
            "data.store": f"file://{shared}/shards", "data.storage_path": f"file://{shared}/ray_results",
            "data.task_resources": "{ingest: 1}", "train.num_workers": 2, "train.worker_resources": "{trainer: 1}",
            "mlflow.tracking_uri": mlflow_url, "mlflow.experiment": "cluster", "promote.floor_db": -100})
        config = tmp_path / "cluster-test.yaml"
        config.write_text(yaml.safe_dump(cfg.to_dict()))
        client = MlflowClient(mlflow_url)

        # 1. the first night, as a job: ingests (the shards land in the shared store as its version 0),
        # trains on both nodes, registers, gates
        out = submit(address, env, "nightly", "--config", str(config))
        assert "dataset version 0" in out, out[-3000:]
        shards = [p for p in _files(shared / "shards", "part-*.parquet") if "_sources" not in p.parts]
        assert len(shards) >= 5 and (shared / "shards" / "_delta_log").is_dir() and (shared / "shards" / "_sources").is_dir()
        assert "has no nightly model: training" in out and "promotion gate" in out, out[-3000:]
        runs = client.search_runs([client.get_experiment_by_name("cluster").experiment_id])
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        nodes = runs[0].data.tags["semisep.worker_nodes"].split(",")
        assert len(nodes) == 2 and len(set(nodes)) == 2, f"both workers on one node: {nodes}"
        assert "val_loss" in runs[0].data.metrics
        checkpoints = _files(shared / "ray_results", "state.pt")
        assert checkpoints and all(p.parent.name.startswith("step_") for p in checkpoints)
        versions = client.search_model_versions(f"name='{cfg.mlflow.registered_model}'")
        assert len(versions) == 1 and versions[0].tags["semisep.promotion.decision"] in ("promoted", "refused")

        # 2. the same night again: no new audio, no training, and it says so
        out = submit(address, env, "nightly", "--config", str(config))
        assert "no new data" in out and "nothing to train" in out
        assert len(client.search_runs([runs[0].info.experiment_id])) == 1

        # 3. new unpaired vocals arrive, and the night trains elastically (1 to 2 workers): they are
        # ingested, and the second node dies after the first checkpoint; the run goes on with the
        # worker left, from that checkpoint, its data streams re-split over one worker, finishes,
        # registers its model, and the gate rules on it
        new = corpus / "unpaired" / "vocals" / "arrived_tonight.wav"
        shutil.copy(next((corpus / "unpaired" / "vocals").glob("*.wav")), new)
        with open(new, "r+b") as fh:  # other bytes than its twin: a new file, a new shard
            fh.seek(-64, os.SEEK_END)
            fh.write(bytes(64))
        steps = 50
        elastic = {"train.num_workers": [1, 2], "train.max_steps": steps, "train.val_every": 10,
                   "train.checkpoint_every_s": 0, "train.patience": 1000}
        config.write_text(yaml.safe_dump(tiny_config(tmp_path / "driver", corpus, **{
            "data.store": f"file://{shared}/shards", "data.storage_path": f"file://{shared}/ray_results",
            "data.task_resources": "{ingest: 1}", "train.worker_resources": "{trainer: 1}",
            "mlflow.tracking_uri": mlflow_url, "mlflow.experiment": "cluster", "promote.floor_db": -100,
            **elastic}).to_dict()))
        before = set((shared / "ray_results").glob("nightly-*"))
        job = subprocess.Popen([str(BIN / "ray"), "job", "submit", "--address", address, "--", str(BIN / "semisep"),
                                "nightly", "--config", str(config)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 300
        while not _registered_checkpoint(shared / "ray_results", "nightly-*", before):
            assert job.poll() is None and time.time() < deadline, "no checkpoint before the run ended"
            time.sleep(0.1)
        kill_processes(_cluster_processes(worker_node))  # the second node is gone, its worker with it
        out, _ = job.communicate(timeout=600)
        assert job.returncode == 0 and "succeeded" in out, out[-6000:]
        assert "1 files processed now" in out and "has no nightly model: training" in out, out[-3000:]
        assert "instead of 2" in out and "promotion gate" in out, out[-3000:]
        runs = client.search_runs([runs[0].info.experiment_id], order_by=["attributes.start_time DESC"])
        assert len(runs) == 2
        run = runs[0]
        versions = client.search_model_versions(f"name='{cfg.mlflow.registered_model}'")
        assert len(versions) == 2 and all("semisep.promotion.decision" in v.tags for v in versions)
        assert len({v.tags["semisep.dataset_version"] for v in versions}) == 2
        world = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "world_size"), key=lambda m: m.step)]
        assert world == [2.0, 1.0], world
        resumed = [m.step for m in client.get_metric_history(run.info.run_id, "resumed_at_step")]
        assert len(resumed) == 1 and 0 < resumed[0] < steps
        # every validation after the re-split checked the epochs it finished: each row once
        errors = client.get_metric_history(run.info.run_id, "data_coverage_errors")
        epochs = client.get_metric_history(run.info.run_id, "data_epochs/paired")
        assert errors and all(m.value == 0 for m in errors), [(m.step, m.value) for m in errors]
        assert max(m.value for m in epochs) > 1 + max(m.value for m in epochs if m.step <= resumed[0])
        assert run.info.status == "FINISHED" and run.data.metrics["val_loss"] > 0
