"""Driver side of a training run: Ray Train ``TorchTrainer`` plus the MLflow run around it.

``train(cfg, name)`` reads the shard manifest, starts an MLflow run (config as params, dataset
version, git commit and config hash as tags), runs the worker loop on ``train.num_workers``
workers (a number, or [min, max]: Ray Train's elastic scaling), then writes the best separator as a model folder, logs the last checkpoint and the run's
description, and hands the model folder to ``log_model`` (the entry points pass
evaluation/registry.py's, which logs it as an MLflow pyfunc; tag ``semisep.model_uri``).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Callable

from semisep.pipeline import storage as store
from semisep.pipeline.config import Config
from semisep.pipeline.errors import SemisepError
from semisep.pipeline.ray_session import ensure_ray
from semisep.training.checkpoint import META, STATE, safe_load, save_model
from semisep.training.data import pin_version, stream_files
from semisep.training.tracking import (
    client, describe_run, log_dataset, log_pseudo_labels, run_kind, run_tags, start_run)
from semisep.training.worker import train_loop_per_worker


@dataclass
class TrainResult:
    name: str
    run_id: str
    model_dir: str
    checkpoint_dir: str
    best_step: int
    steps: int
    early_stopped: bool
    best_val: dict = field(default_factory=dict)  # validation figures at the best step
    dataset_version: str = ""
    learning_curve: str = ""  # PNG of validation vocal SDR against step

    def summary(self) -> str:
        v = self.best_val
        figures = (f"validation SDR vocals {v['val_sdr_vocals']:.2f} dB, accompaniment {v['val_sdr_accompaniment']:.2f} dB, "
                   f"loss {v['val_loss']:.4f}") if v else "no validation"
        return f"best at step {self.best_step} of {self.steps}{' (early stopped)' if self.early_stopped else ''}: {figures}"


PORT_RACE_ATTEMPTS = 3


def _port_race(exc: BaseException) -> bool:
    """Rank 0 could not listen on the port Ray Train picked for torch's process group: Ray finds a
    free port, closes it, and rank 0 binds it moments later, so another program on the node (a
    second `semisep train`, its Ray) can take it in between (EADDRINUSE). Ray Train counts it as a
    controller error and does not retry it."""
    import ray.train

    return isinstance(exc, ray.train.ControllerError) and "EADDRINUSE" in str(exc)


def fit_retrying_port_races(make_trainer: Callable, say=None, attempts: int = PORT_RACE_ATTEMPTS):
    """``make_trainer().fit()``, started again (a new trainer, so a new port) when the process group
    lost its port to another program before it could listen; any other failure is raised."""
    for attempt in range(1, attempts + 1):
        try:
            return make_trainer().fit()
        except Exception as exc:  # noqa: BLE001 - only the port race is retried
            if attempt == attempts or not _port_race(exc):
                raise
            (say or print)(f"the port Ray Train chose for torch's process group was taken by another program "
                           f"before rank 0 could listen on it; starting the workers again "
                           f"(attempt {attempt + 1} of {attempts})")


def train(cfg: Config, name: str, resume: bool = False, tags: dict[str, str] | None = None,
          callbacks: list | None = None, storage: str | None = None, gpus_per_worker: float = 0.0,
          log_model: Callable[[str, str, str], str] | None = None,
          on_progress: Callable[[dict], None] | None = None, say=None) -> TrainResult:
    """Train one separator with Ray Train; returns where the best model landed.

    ``tags`` are added to the MLflow run (a sweep passes ``mlflow.parentRunId``), ``callbacks`` to
    Ray Train's RunConfig (a sweep passes Tune's report callback), ``storage`` (path or URI) replaces
    ``data.storage_path``, ``gpus_per_worker`` may be a fraction. ``log_model(tracking_uri, run_id,
    model_dir) -> model URI`` packages the best model in the run (semisep.evaluation.registry.log_model).
    ``on_progress(record)`` is called in this process with what rank 0 reports while it trains (its
    losses every ``log_every`` steps, its validation figures), through a Ray queue; ``say`` gets
    Ray's dashboard line.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    storage = store.normalize(storage) if storage else cfg.data.results_dir
    resume_from = _latest_checkpoint(storage, name) if resume else None
    if resume and resume_from is None:
        raise SemisepError(f"--resume: no checkpoint of run {name!r} under {storage}")
    cfg = pin_version(cfg, _checkpoint_meta(resume_from).get("config") if resume_from else None)
    files = stream_files(cfg)
    version = str(cfg.data.version)
    t = cfg.train
    if any(t.batch_size % n for n in range(t.min_workers, t.max_workers + 1)):
        raise SemisepError(f"train.batch_size={t.batch_size} must divide by train.num_workers={t.num_workers}")
    kind = run_kind(cfg)
    tags = run_tags(cfg, version) | (tags or {})
    try:
        run_id = start_run(cfg.tracking_uri, cfg.mlflow.experiment, name, cfg.to_dict(), tags)
        log_dataset(cfg.tracking_uri, run_id, version, cfg.data.shards_dir,
                    {s: len(f.paths) for s, f in files.items()})
        log_pseudo_labels(cfg, run_id)
    except Exception as exc:  # noqa: BLE001 - no run to train into
        raise SemisepError(f"MLflow tracking server {cfg.tracking_uri}: cannot start the run "
                           f"({' '.join(str(exc).split())[:200]}); nothing was trained") from None
    # each run gets its own folder, so a second run of the same name never restores the first
    run_dir_name = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if resume_from:  # the registry's lineage covers every step: this run continues that one
        _link_resumed(client(cfg.tracking_uri), run_id, resume_from)
    progress = None
    make_trainer = lambda: TorchTrainer(  # noqa: E731 - built again if its process group cannot start
        train_loop_per_worker,
        train_loop_config={"cfg": cfg.shipped().to_dict(), "run_id": run_id, "tracking_uri": cfg.tracking_uri,
                           "resume_from": resume_from, "submitted_at": time.time(),
                           "progress": progress.queue if progress else None},
        scaling_config=ray.train.ScalingConfig(
            num_workers=(t.min_workers, t.max_workers) if t.elastic else t.num_workers,
            use_gpu=t.use_gpu or gpus_per_worker > 0,
            **({"elastic_resize_monitor_interval_s": t.resize_interval_s} if t.elastic else {}),
            resources_per_worker={"CPU": t.cpus_per_worker} | ({"GPU": gpus_per_worker} if gpus_per_worker else {})
            | t.worker_resources),
        run_config=ray.train.RunConfig(
            name=run_dir_name, storage_path=storage,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),  # the controller's INFO lines
            failure_config=ray.train.FailureConfig(max_failures=2),
            callbacks=callbacks or None,
        ),
    )
    mlflow = client(cfg.tracking_uri)
    try:
        # Ray after MLflow: a refused login or an unreachable server is reported before a local Ray
        # (~5-10 s) starts
        ensure_ray(cfg, say)
        progress = _ProgressQueue(on_progress) if on_progress else None
        result = fit_retrying_port_races(make_trainer, say)
    except BaseException as exc:  # Ctrl-C (and SIGTERM, which the CLI turns into one) ends the run KILLED
        _terminate_quietly(mlflow, run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        if progress:
            progress.close()
    if result.checkpoint is None:
        _terminate_quietly(mlflow, run_id)
        raise SemisepError(f"training run {name} produced no checkpoint: {result.error}")
    checkpoint_dir = result.checkpoint.path
    model_dir = os.path.join(cfg.data.workdir, "models", name)
    with result.checkpoint.as_directory() as d:
        state = safe_load(os.path.join(d, STATE))
        meta = json.load(open(os.path.join(d, META)))
        info = {"name": name, "run_id": run_id, "dataset_version": version, "kind": kind,
                "best_step": meta["best_step"], "steps": meta["step"], "best_val": meta["best_val"]}
        save_model(model_dir, state["best_separator"], cfg, info)
        early = meta["step"] < t.max_steps
        done = TrainResult(name, run_id, model_dir, checkpoint_dir, meta["best_step"], meta["step"], early,
                           meta["best_val"], version)
        try:  # the model and checkpoints are safe on disk; now the run's record
            mlflow.log_artifacts(run_id, d, artifact_path="checkpoint")
            mlflow.set_tag(run_id, "semisep.best_step", str(meta["best_step"]))
            done.learning_curve = _learning_curve(cfg, mlflow, run_id, name)
            mlflow.log_artifact(run_id, done.learning_curve)
            if log_model is not None:
                mlflow.set_tag(run_id, "semisep.model_uri", log_model(cfg.tracking_uri, run_id, model_dir))
            describe_run(cfg, run_id, done)
            mlflow.set_terminated(run_id, "FINISHED")
        except Exception as exc:  # noqa: BLE001 - the server went away during training
            raise SemisepError(
                f"MLflow tracking server {cfg.tracking_uri} unreachable at the end of training "
                f"({' '.join(str(exc).split())[:200]}): the model is in {model_dir} and the checkpoints in "
                f"{checkpoint_dir}; MLflow run {run_id} is incomplete (no model logged)") from None
    return done


def _learning_curve(cfg: Config, mlflow, run_id: str, name: str) -> str:
    """The run's validation vocal SDR against step as ``<workdir>/curves/<name>.png``; returns its path."""
    from semisep.training import learning_curve

    folder = os.path.join(cfg.data.workdir, "curves")
    os.makedirs(folder, exist_ok=True)
    curve = learning_curve.history(mlflow, run_id)
    gain = learning_curve.last_quarter_gain(curve)
    mlflow.log_metric(run_id, "val_sdr_last_quarter_gain", gain)
    return learning_curve.save({name: [curve]}, os.path.join(folder, f"{name}.png"),
                               f"{name}: validation (last quarter of the steps gained {gain:+.2f} dB)")


class _ProgressQueue:
    """A Ray queue rank 0 puts its progress records on, and a thread here handing them to
    ``on_progress`` until ``close``. The queue's actor takes no CPU (it must not hold a CPU that a
    training worker waits for)."""

    def __init__(self, on_progress: Callable[[dict], None]):
        import threading

        from ray.util.queue import Queue

        self.queue = Queue(maxsize=256, actor_options={"num_cpus": 0})
        self.on_progress, self.done = on_progress, threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        from ray.util.queue import Empty

        while True:
            try:
                self.on_progress(self.queue.get(timeout=0.5))
            except Empty:
                if self.done.is_set():
                    return
            except Exception:  # noqa: BLE001 - a display problem must not stop training
                if self.done.is_set():
                    return

    def close(self) -> None:
        """Drain what is left, then stop the queue. Bounded: after an interrupt a ``get`` can hang in
        Ray (seen after SIGTERM mid-run), and killing the queue's actor is what ends it."""
        self.done.set()
        self.thread.join(timeout=10)
        self.queue.shutdown()
        self.thread.join(timeout=5)  # a daemon thread: one still stuck does not keep the process


def _terminate_quietly(mlflow, run_id: str, status: str = "FAILED") -> None:
    """Mark the run FAILED (or KILLED) if the server can be told; the training error is what the user needs."""
    try:
        mlflow.set_terminated(run_id, status)
    except Exception:  # noqa: BLE001
        pass


def _checkpoint_meta(checkpoint_dir: str) -> dict:
    """The checkpoint's meta.json; {} where it cannot be read (the worker refuses such a checkpoint)."""
    try:
        return json.loads(store.read_bytes(store.join(checkpoint_dir, META)))
    except Exception:  # noqa: BLE001
        return {}


def _link_resumed(mlflow, run_id: str, checkpoint_dir: str) -> None:
    """Tag the run with the run and step its checkpoint comes from (semisep.resumed_from_run, _step)."""
    meta = _checkpoint_meta(checkpoint_dir)
    if not meta:
        return
    if meta.get("run_id"):
        mlflow.set_tag(run_id, "semisep.resumed_from_run", meta["run_id"])
    mlflow.set_tag(run_id, "semisep.resumed_from_step", str(meta.get("step", "")))


RUN_DIR = re.compile(r"(?P<name>.+)-(?P<stamp>\d{8}-\d{6})")


def _latest_checkpoint(storage: str, name: str) -> str | None:
    """Folder (path or URI) of the newest checkpoint of any earlier run called exactly ``name``."""
    found = []
    for path in store.list_files(storage, lambda base: base == STATE):
        step_dir, _ = path.rsplit("/", 1)
        run_dir, step = step_dir.rsplit("/", 1)
        match = RUN_DIR.fullmatch(run_dir.rsplit("/", 1)[1])
        if match and match["name"] == name and step.startswith("step_"):
            found.append((match["stamp"], step, step_dir))
    return max(found)[2] if found else None
