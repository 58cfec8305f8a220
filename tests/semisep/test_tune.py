"""A Ray Tune sweep with real Ray Tune, Ray Train and an MLflow SQLite store: parent and child runs,
the summary, a registered candidate, ASHA stopping a bad trial, and resuming an interrupted sweep."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from semisep.pipeline.config import Config

pytestmark = pytest.mark.slow


def _children(client, parent):
    exp = client.get_run(parent).info.experiment_id
    return {r.data.tags["semisep.trial_id"]: r for r in client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'")}


def test_sweep_interrupted_resumed_with_baseline_asha_and_candidate(ingested, tmp_path):
    from mlflow import MlflowClient

    base, _ = ingested
    cfg = Config.from_dict(base.to_dict())
    cfg.mlflow.tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"  # its own store; shards stay shared
    cfg.mlflow.registered_model = "sweep-candidates"
    cfg.train.max_steps, cfg.train.val_every, cfg.train.patience = 4, 2, 10
    cfg.tune.name, cfg.tune.max_concurrent, cfg.tune.grace_steps = f"sweep-{tmp_path.name}", 1, 2
    # after the baseline: a point with a learning rate that wrecks training (ASHA must stop it at its
    # first rung), then a sensible one; the sweep is interrupted once the third trial has started
    cfg.tune.points = [{"alpha": 1e-3, "beta": 1e-3, "lr": 0.5, "critic_lr": 0.5}, {"alpha": 1e-3, "beta": 1e-3, "lr": 1e-3}]
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    command = [sys.executable, "-m", "semisep.cli", "tune", "--config", str(config), "--num-samples", "1"]
    client = MlflowClient(cfg.tracking_uri)

    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    parent = None
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:  # interrupt once the third trial has started
        runs = client.search_runs(client.get_experiment_by_name(cfg.mlflow.experiment).experiment_id.split(),
                                  "tags.semisep.kind = 'sweep'") if client.get_experiment_by_name(cfg.mlflow.experiment) else []
        if runs:
            parent = runs[0].info.run_id
            if len(_children(client, parent)) >= 3:
                break
        time.sleep(1)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 130, out[-3000:]
    before = {k: r for k, r in _children(client, parent).items() if r.info.status in ("FINISHED", "KILLED")}
    assert sorted(r.info.status for r in before.values()) == ["FINISHED", "KILLED"], out[-3000:]

    proc = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    children = _children(client, parent)
    assert len(children) == 4
    for trial, run in before.items():  # finished trials were not run again
        assert children[trial].info.run_id == run.info.run_id and children[trial].info.end_time == run.info.end_time
    for run in children.values():
        assert {"train.alpha", "train.beta", "train.n_critic", "train.lr"} <= set(run.data.params)
        assert {"val_loss", "val_sdr"} <= set(run.data.metrics)

    summary = pd.read_csv(client.download_artifacts(parent, "sweep/summary.csv"))
    assert len(summary) == 4 and set(summary.run_id) == {r.info.run_id for r in children.values()}
    baseline = summary[(summary.alpha == 0) & (summary.beta == 0)]
    assert len(baseline) == 1 and baseline.status.iloc[0] == "finished"
    wrecked = summary[summary.lr == 0.5]
    assert wrecked.status.iloc[0] == "stopped by ASHA" and wrecked.steps.iloc[0] == 2
    assert client.download_artifacts(parent, "sweep/val_sdr_vs_alpha_beta.png")

    version = client.get_run(parent).data.tags["semisep.candidate_version"]
    mv = client.get_model_version("sweep-candidates", version)
    best = summary[summary.status == "finished"].sort_values("best_score", ascending=False).iloc[0]
    assert mv.run_id == best.run_id and mv.tags["semisep.sweep_run_id"] == parent
    assert client.get_run(parent).info.status == "FINISHED"
