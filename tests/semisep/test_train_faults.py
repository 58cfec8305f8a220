"""`semisep train` when the MLflow server dies mid-run: training goes on, the model and the
checkpoints are kept, and the command exits non-zero soon after, naming the tracking server."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import yaml

from semisep.pipeline.config import Config
from tests.conftest import mlflow_server_process

pytestmark = pytest.mark.slow


def test_tracking_server_killed_mid_run(ingested, tmp_path):
    from mlflow import MlflowClient

    base, _ = ingested
    root = tmp_path / "server"
    root.mkdir()
    server = mlflow_server_process(root)
    url = server.__enter__()
    try:
        cfg = Config.from_dict(base.to_dict())
        cfg.mlflow.tracking_uri, cfg.mlflow.experiment = url, "killed-server"
        cfg.data.workdir = str(tmp_path / "work")
        cfg.data.store = base.data.shards_dir
        cfg.train.alpha = cfg.train.beta = 0.0
        cfg.train.max_steps, cfg.train.val_every, cfg.train.log_every, cfg.train.patience = 300, 20, 5, 1000
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(cfg.to_dict()))
        proc = subprocess.Popen([sys.executable, "-m", "semisep.cli", "train", "--config", str(config), "--name", "orphan"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        client = MlflowClient(url)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:  # kill the server once training logs
            exp = client.get_experiment_by_name("killed-server")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            if runs and client.get_metric_history(runs[0].info.run_id, "val_loss"):
                break
            time.sleep(0.5)
        assert proc.poll() is None, "training ended before the server could be killed"
    finally:
        server.__exit__(None, None, None)
    killed = time.time()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, out[-2000:] + err[-2000:]
    assert time.time() - killed < 120 + 60, time.time() - killed  # the rest of training, then < 2 minutes
    (last,) = [line for line in err.splitlines() if line.startswith("semisep: error")]
    assert f"MLflow tracking server {url} unreachable" in last and "Traceback" not in err
    model = tmp_path / "work" / "models" / "orphan"
    assert (model / "separator.pt").is_file() and (model / "model.json").is_file()
    assert str(model) in last and "checkpoints in" in last
    assert list((tmp_path / "work" / "ray_results").glob("orphan-*/step_*/state.pt"))


def test_two_commands_at_once_each_use_their_own_ray(ingested, tmp_path):
    """Two `semisep train` on one machine start two local Rays; Ray Train's clean-up in each must
    find its own (it used to fail with "Found multiple active Ray instances")."""
    base, _ = ingested
    procs = []
    for name in ("first", "second"):
        cfg = Config.from_dict(base.to_dict())
        cfg.data.workdir, cfg.data.store = str(tmp_path / name), base.data.shards_dir
        cfg.train.alpha = cfg.train.beta = 0.0
        cfg.ray.num_cpus = 1
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump(cfg.to_dict()))
        procs.append(subprocess.Popen([sys.executable, "-m", "semisep.cli", "train", "--config", str(config), "--name", name],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
        assert "multiple active Ray instances" not in out and "Traceback" not in out


@pytest.mark.parametrize("signum", ["SIGTERM"])
def test_an_interrupted_training_ends_its_run_killed(ingested, tmp_path, signum):
    """SIGTERM (a scheduler, ``kill``) unwinds like Ctrl-C: the MLflow run ends KILLED, not RUNNING forever."""
    import signal

    from mlflow import MlflowClient

    base, _ = ingested
    cfg = Config.from_dict(base.to_dict())
    cfg.data.workdir = str(tmp_path / "work")
    cfg.data.store = base.data.shards_dir
    cfg.mlflow.tracking_uri, cfg.mlflow.experiment = f"sqlite:///{tmp_path / 'mlflow.db'}", "interrupted"
    cfg.train.alpha = cfg.train.beta = 0.0
    cfg.train.max_steps, cfg.train.val_every, cfg.train.log_every, cfg.train.patience = 100000, 20, 5, 10**6
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    proc = subprocess.Popen([sys.executable, "-m", "semisep.cli", "train", "--config", str(config), "--name", "stopped"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = MlflowClient(cfg.mlflow.tracking_uri)
    deadline, run_id = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:  # stop it once it trains
        exp = client.get_experiment_by_name("interrupted")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        if runs and client.get_metric_history(runs[0].info.run_id, "val_loss"):
            run_id = runs[0].info.run_id
            break
        time.sleep(0.5)
    assert run_id and proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(getattr(signal, signum))
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert "semisep: interrupted" in err
    assert client.get_run(run_id).info.status == "KILLED"
