"""MLflow at the edges: one run per training, metrics from rank 0, artifacts from the driver."""

from __future__ import annotations

import subprocess
import time
from typing import Any


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_tags(cfg, dataset_version: str) -> dict[str, str]:
    """The provenance tags every training run (and sweep trial) carries, copied to registered versions."""
    return {"semisep.dataset_version": dataset_version, "semisep.git_commit": git_commit(),
            "semisep.config_hash": cfg.hash(), "semisep.transform_hash": cfg.transform.hash(),
            "semisep.kind": "semi-supervised" if cfg.train.semi_supervised else "supervised"}


def client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def experiment_id(tracking_uri: str, name: str) -> str:
    """The experiment's id, creating it if needed. With a local SQLite store its artifacts live
    next to the database (``<workdir>/mlartifacts``), not in ``./mlruns`` of whatever folder the
    command ran from; a server decides its own artifact location."""
    from pathlib import Path
    from urllib.parse import quote

    c = client(tracking_uri)
    exp = c.get_experiment_by_name(name)
    if exp:
        return exp.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        location = (Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts" / quote(name, safe="")).as_uri()
    return c.create_experiment(name, artifact_location=location)


def start_run(tracking_uri: str, experiment: str, run_name: str, params: dict, tags: dict) -> str:
    """Create a run with params and tags; returns its id (the run is left RUNNING)."""
    from mlflow.entities import Param

    c = client(tracking_uri)
    run = c.create_run(experiment_id(tracking_uri, experiment), run_name=run_name, tags=tags)
    items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
    for i in range(0, len(items), 100):
        c.log_batch(run.info.run_id, params=items[i:i + 100])
    return run.info.run_id


class MetricLogger:
    """Logs metric dicts to one run with an MlflowClient (no global mlflow state)."""

    def __init__(self, tracking_uri: str, run_id: str):
        self.client = client(tracking_uri)
        self.run_id = run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_figure(self, figure, artifact_file: str) -> None:
        import matplotlib.pyplot as plt

        self.client.log_figure(self.run_id, figure, artifact_file)
        plt.close(figure)


def log_dataset(tracking_uri: str, run_id: str, version: str, manifest_path: str, summary: dict) -> None:
    """Record the shard store as the run's training input: name, digest = dataset version, source."""
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(name="semisep-shards", digest=version, source_type="local", source=json.dumps({"uri": manifest_path}),
                      profile=json.dumps(summary))
    client(tracking_uri).log_inputs(run_id, datasets=[DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])])
