"""Driver side of a training run: Ray Train ``TorchTrainer`` plus the MLflow run around it.

``train(cfg, name)`` reads the shard manifest, starts an MLflow run (config as params, dataset
version, git commit and config hash as tags), runs the worker loop on ``train.num_workers``
workers, then writes the best separator as a model folder and logs it as an MLflow pyfunc
(``training/registry.py``; tag ``semisep.model_uri``) next to the last checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from pipeline import storage as store
from pipeline.config import Config
from pipeline.errors import SemisepError
from pipeline.manifest import MANIFEST, read_manifest
from pipeline.ray_session import ensure_ray
from training.checkpoint import safe_load, save_model
from training.data import ray_datasets, stream_paths
from training.registry import log_model
from training.tracking import log_dataset, run_tags, start_run
from training.worker import train_loop_per_worker


@dataclass
class TrainResult:
    name: str
    run_id: str
    model_dir: str
    checkpoint_dir: str
    best_step: int
    best_val_loss: float
    steps: int
    early_stopped: bool


def train(cfg: Config, name: str, resume: bool = False, tags: dict[str, str] | None = None,
          callbacks: list | None = None, storage: str | None = None, gpus_per_worker: float = 0.0) -> TrainResult:
    """Train one separator with Ray Train; returns where the best model landed.

    ``tags`` are added to the MLflow run (a sweep passes ``mlflow.parentRunId``), ``callbacks`` to
    Ray Train's RunConfig (a sweep passes Tune's report callback), ``storage`` (path or URI) replaces
    ``data.storage_path``, ``gpus_per_worker`` may be a fraction.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    ensure_ray(cfg)
    paths = stream_paths(cfg)
    manifest, version = read_manifest(cfg.data.shards_dir)
    t = cfg.train
    if t.batch_size % t.num_workers:
        raise SemisepError(f"train.batch_size={t.batch_size} must divide by train.num_workers={t.num_workers}")
    kind = "semi-supervised" if t.semi_supervised else "supervised"
    tags = run_tags(cfg, version) | (tags or {})
    run_id = start_run(cfg.tracking_uri, cfg.mlflow.experiment, name, cfg.to_dict(), tags)
    log_dataset(cfg.tracking_uri, run_id, version, store.join(cfg.data.shards_dir, MANIFEST),
                {s: len(p) for s, p in paths.items()} | {"files": len(manifest)})
    storage = store.normalize(storage) if storage else cfg.data.results_dir
    # each run gets its own folder, so a second run of the same name never restores the first
    run_dir_name = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    resume_from = _latest_checkpoint(storage, name) if resume else None
    if resume and resume_from is None:
        raise SemisepError(f"--resume: no checkpoint of run {name!r} under {storage}")
    threads = max(1, (cfg.ray.num_cpus or os.cpu_count() or 1) // t.num_workers)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg.to_dict(), "run_id": run_id, "tracking_uri": cfg.tracking_uri, "threads": threads,
                           "resume_from": resume_from},
        scaling_config=ray.train.ScalingConfig(
            num_workers=t.num_workers, use_gpu=t.use_gpu or gpus_per_worker > 0,
            resources_per_worker={"CPU": t.cpus_per_worker} | ({"GPU": gpus_per_worker} if gpus_per_worker else {})
            | t.worker_resources),
        run_config=ray.train.RunConfig(
            name=run_dir_name, storage_path=storage,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),  # the controller's INFO lines
            failure_config=ray.train.FailureConfig(max_failures=2),
            callbacks=callbacks or None,
        ),
        datasets=ray_datasets(cfg, paths),
        dataset_config=ray.train.DataConfig(datasets_to_split=[s for s in ("paired", "mixture", "vocals", "accompaniment")
                                                                if s in paths and paths[s]]),
    )
    from training.tracking import client

    mlflow = client(cfg.tracking_uri)
    try:
        result = trainer.fit()
    except Exception:
        mlflow.set_terminated(run_id, "FAILED")
        raise
    if result.checkpoint is None:
        mlflow.set_terminated(run_id, "FAILED")
        raise SemisepError(f"training run {name} produced no checkpoint: {result.error}")
    with result.checkpoint.as_directory() as d:
        state = safe_load(os.path.join(d, "state.pt"))
        meta = json.load(open(os.path.join(d, "meta.json")))
        checkpoint_dir = result.checkpoint.path
        model_dir = os.path.join(cfg.data.workdir, "models", name)
        info = {"name": name, "run_id": run_id, "dataset_version": version, "kind": kind,
                "best_step": meta["best_step"], "steps": meta["step"], "best_val_loss": meta["best_val_loss"]}
        save_model(model_dir, state["best_separator"], cfg, info)
        mlflow.log_artifacts(run_id, d, artifact_path="checkpoint")
    mlflow.set_tag(run_id, "semisep.best_step", str(meta["best_step"]))
    mlflow.set_tag(run_id, "semisep.model_uri", log_model(cfg.tracking_uri, run_id, model_dir))
    mlflow.set_terminated(run_id, "FINISHED")
    early = meta["step"] < t.max_steps
    return TrainResult(name, run_id, model_dir, checkpoint_dir, meta["best_step"], meta["best_val_loss"],
                       meta["step"], early)


def _latest_checkpoint(storage: str, name: str) -> str | None:
    """Folder (path or URI) of the newest checkpoint of any earlier run called ``name``."""
    found = []
    for path in store.list_files(storage, lambda base: base == "state.pt"):
        step_dir, _ = path.rsplit("/", 1)
        run_dir, step = step_dir.rsplit("/", 1)
        run = run_dir.rsplit("/", 1)[1]
        if run.startswith(f"{name}-") and step.startswith("step_"):
            found.append((run, step, step_dir))
    return max(found)[2] if found else None
