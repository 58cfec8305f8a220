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


def run_kind(cfg) -> str:
    """supervised, supervised+remix, semi-supervised or semi-supervised+remix; self-training(+remix)
    when pseudo-labels are in the batches."""
    kind = "semi-supervised" if cfg.train.semi_supervised else "self-training" if cfg.train.pseudo > 0 else "supervised"
    return kind + ("+remix" if cfg.train.remix > 0 else "")


def run_tags(cfg, dataset_version: str) -> dict[str, str]:
    """The provenance tags every training run (and sweep trial) carries, copied to registered versions."""
    from semisep.pipeline.table import table_id

    return {"semisep.dataset_version": dataset_version, "semisep.store_id": table_id(cfg.data.shards_dir),
            "semisep.git_commit": git_commit(),
            "semisep.config_hash": cfg.hash(), "semisep.transform_hash": cfg.transform.hash(),
            "semisep.kind": run_kind(cfg)} | pseudo_lineage(cfg)


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
    """Logs metric dicts and figures to one run with an MlflowClient (no global mlflow state).

    The tracking server going away must not stop or stall training: a failed call keeps its
    metrics in a buffer and the logger stops calling for ``backoff`` seconds; the next call after
    that sends the buffer first. ``flush`` tries once more and says whether everything is in.
    Figures are not buffered (a missing picture is not worth holding memory for).

    Metrics are sent at most every ``interval`` seconds, in one ``log_batch`` (each keeps its own
    step and timestamp): a call to the store costs tens of milliseconds, which at the supervised
    step's pace on a CPU (~30 steps/s, losses every 5 steps) was a third of the training time.
    """

    def __init__(self, tracking_uri: str, run_id: str, backoff: float = 30.0, interval: float = 5.0):
        self.client = client(tracking_uri)
        self.run_id, self.tracking_uri, self.backoff, self.interval = run_id, tracking_uri, backoff, interval
        self.pending: list = []
        self.down_since: float | None = None
        self.last_sent = 0.0
        self.last_error = ""

    def _send(self) -> bool:
        if self.down_since is not None and time.time() - self.down_since < self.backoff:
            return False
        self.last_sent = time.time()
        try:
            while self.pending:
                self.client.log_batch(self.run_id, metrics=self.pending[:1000])
                self.pending = self.pending[1000:]
        except Exception as exc:  # noqa: BLE001 - any failure of the server: keep training, keep the metrics
            self.down_since, self.last_error = time.time(), " ".join(str(exc).split())[:200]
            return False
        self.down_since = None
        return True

    def log(self, metrics: dict[str, float], step: int, now: bool = False) -> None:
        """Buffer ``metrics`` at ``step``; send the buffer if ``interval`` has passed (or ``now``)."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), stamp, step) for k, v in metrics.items()]
        if now or time.time() - self.last_sent >= self.interval:
            self._send()

    def log_figure(self, figure, artifact_file: str) -> None:
        """A matplotlib Figure as a PNG artifact (best effort); pyplot figures are closed after."""
        try:
            if self.down_since is None:
                self.client.log_figure(self.run_id, figure, artifact_file)
        except Exception as exc:  # noqa: BLE001
            self.down_since, self.last_error = time.time(), " ".join(str(exc).split())[:200]
        finally:
            if getattr(figure.canvas, "manager", None) is not None:
                import matplotlib.pyplot as plt

                plt.close(figure)

    def set_tag(self, key: str, value: str) -> None:
        """Best effort, like the metrics: a missing tag must not stop training."""
        try:
            self.client.set_tag(self.run_id, key, value)
        except Exception as exc:  # noqa: BLE001
            self.down_since, self.last_error = time.time(), " ".join(str(exc).split())[:200]

    def flush(self) -> bool:
        """Send what is buffered now (ignoring the back-off); True when nothing is left."""
        self.down_since = None
        return self._send() or not self.pending


def mlflow_environment(cfg) -> dict[str, str]:
    """What MLflow's HTTP client reads from the environment: bounded retries and timeout, so an
    unreachable server costs seconds per call instead of MLflow's ~4 minutes."""
    return {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(cfg.mlflow.request_retries),
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(cfg.mlflow.request_timeout))),
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def use_mlflow_environment(cfg) -> None:
    """Set ``mlflow_environment`` for this process (a value already in the environment wins): the
    CLI does, and so does every Ray Train worker and Tune trial, whose processes may have been
    started by a Ray that did not have it."""
    import os

    for key, value in mlflow_environment(cfg).items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a worker's output is a log


def log_dataset(tracking_uri: str, run_id: str, version: str, store_uri: str, summary: dict) -> None:
    """Record the shard store as the run's training input: name, digest = the table version read,
    source = the store (a Delta table: ``DeltaTable(uri, version=...)`` opens what the run read)."""
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(name="semisep-shards", digest=version, source_type="local", source=json.dumps({"uri": store_uri, "format": "delta", "version": version}),
                      profile=json.dumps(summary))
    client(tracking_uri).log_inputs(run_id, datasets=[DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])])


def pseudo_lineage(cfg) -> dict[str, str]:
    """A student's tags: the teacher whose pseudo-labels it learns from, and the label set's
    version (empty without train.pseudo). Copied to registered versions like the other semisep tags."""
    if cfg.train.pseudo <= 0:
        return {}
    from semisep.pipeline.pseudo_store import pinned_label_set, pseudo_dir

    _, info, number = pinned_label_set(pseudo_dir(cfg), cfg.pseudo.version)
    return {"semisep.teacher": info.get("teacher", ""), "semisep.pseudo_version": info.get("version", ""),
            "semisep.pseudo_labels": pseudo_dir(cfg), "semisep.pseudo_table_version": str(number)}


def log_pseudo_labels(cfg, run_id: str) -> None:
    """Record the pseudo-label store as a training input of the run (digest = its version, the
    teacher in its source and a tag): the student names the teacher model version it learned from."""
    if cfg.train.pseudo <= 0:
        return
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    from semisep.pipeline.pseudo_store import pinned_label_set, pseudo_dir

    rows, info, number = pinned_label_set(pseudo_dir(cfg), cfg.pseudo.version)
    dataset = Dataset(name="semisep-pseudo-labels", digest=info.get("version", ""), source_type="local",
                      source=json.dumps({"uri": pseudo_dir(cfg), "format": "delta", "version": number,
                                         "teacher": info.get("teacher", "")}),
                      profile=json.dumps({"mixtures": len(rows), "excerpts": int(rows.rows.sum())}))
    client(cfg.tracking_uri).log_inputs(run_id, datasets=[DatasetInput(dataset, [
        InputTag("mlflow.data.context", "training"), InputTag("semisep.teacher", info.get("teacher", ""))])])


def run_description(cfg, result) -> str:
    """A training run in words (markdown), for the MLflow UI's description: what, on which data,
    how good on validation, with which settings, how to use it."""
    t, m = cfg.train, cfg.model
    v = result.best_val
    corpora = ", ".join(f"{c.name} ({c.format}, {c.use})" for c in cfg.data.corpora) or "none"
    stopped = "stopped early (no validation gain for train.patience validations)" if result.early_stopped \
        else "ran its whole step budget"
    quality = (f"Best validation vocal SDR **{v['val_sdr_vocals']:.2f} dB** (accompaniment {v['val_sdr_accompaniment']:.2f} dB, "
               f"L_s {v['val_loss']:.4f}) at step {result.best_step} of {result.steps}; it {stopped}.") if v else \
        f"No validation was recorded ({result.steps} steps)."
    adversarial = (f"alpha {t.alpha:g}, beta {t.beta:g}, n_critic {t.n_critic}, critic input {t.critic_input}, "
                   f"paired share of adversarial examples {t.adversarial_paired:g}") if t.semi_supervised else "no critics"
    return "\n".join([
        f"**{run_kind(cfg)} separator** trained by semisep (Ray Train, {t.num_workers} worker(s)) on the shards of "
        f"dataset version `{result.dataset_version}` from corpora {corpora}.",
        "",
        quality,
        "",
        f"Settings: {adversarial}; remix share {t.remix:g}; source gains {t.gain_db[0]:g} to {t.gain_db[1]:g} dB; "
        f"batch {t.batch_size}, lr {t.lr:g}, chosen on {t.select_on}; U-Net depth {m.depth}, {m.base_channels} "
        f"base channels; transform {cfg.transform.sample_rate} Hz, n_fft {cfg.transform.n_fft}, hop "
        f"{cfg.transform.hop_length}; excerpts of {cfg.data.excerpt_frames} frames.",
        "",
        f"Use it: `semisep separate song.wav -o out --model runs:/{result.run_id}/separator`, or in Python "
        f"`x, sr = soundfile.read(\"song.wav\"); mlflow.pyfunc.load_model(\"runs:/{result.run_id}/separator\")"
        f".predict(x, params={{\"sample_rate\": sr}})` (x as (samples, channels), as soundfile gives it, or (channels, "
        f"samples); the estimates come back in the same layout).",
    ])


def describe_run(cfg, run_id: str, result) -> None:
    """Write ``run_description`` as the run's MLflow description (the ``mlflow.note.content`` tag)."""
    client(cfg.tracking_uri).set_tag(run_id, "mlflow.note.content", run_description(cfg, result))
