"""One config object for every stage: dataclasses, loaded from YAML, overridable from the CLI.

A YAML file holds any subset of the sections below; what it leaves out keeps the default.
Overrides use dotted keys with YAML values, e.g. ``--set train.alpha=0.01 --set train.max_steps=50``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import SemisepError
from pipeline.spectrogram import TransformConfig


CORPUS_FORMATS = ("musdb18", "musdb18hq", "dsd100", "medleydb", "ccmixter", "ikala", "folder")


@dataclass
class CorpusConfig:
    """A folder of audio and how to read it (layouts: see pipeline/corpora.py).

    format: one of CORPUS_FORMATS.
    use: ``paired`` rows hold all three sources; ``unpaired`` turns train tracks into one row
    set per role (valid and test tracks stay paired: they need the truth).
    split: the split of tracks that sit in no split folder (folder, medleydb, ccmixter, ikala).
    splits: renames split folders, e.g. ``{Dev: train}``; ``skip`` leaves a folder out.
    partition: weights per split, e.g. ``{train: 1, valid: 1, test: 1}``: each track goes to a
    split by a hash of its id (stable when tracks are added); overrides split and splits.
    """

    name: str
    path: str
    format: str = "musdb18hq"
    use: str = "paired"
    split: str = "train"
    splits: dict[str, str] = field(default_factory=dict)
    partition: dict[str, float] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Where data lives and how excerpts are cut.

    workdir: the driver's local folder: models, reports, the default MLflow store, and the defaults
    of ``store`` and ``storage_path``.
    store: the shards and their manifest, a path or URI (``s3://bucket/semisep/shards``; see
    pipeline/storage.py); default ``<workdir>/shards``. Every node must reach it.
    storage_path: Ray Train / Tune results and checkpoints, a path or URI shared by all nodes;
    default ``<workdir>/ray_results``.
    audio_cache: where corpora given as URIs (``s3://bucket/audio/MedleyDB``) are mirrored for
    scanning and decoding; default ``<workdir>/audio_cache``. Ingestion tasks on other nodes fetch
    the files they need into the same path.
    task_resources: extra Ray resources each ingestion task asks for, e.g. ``{ingest: 1}`` to keep
    ingestion on the CPU workers that advertise it (cluster.yaml).
    excerpt_frames: STFT frames per excerpt; a multiple of 2**model.depth.
    excerpt_hop: frames between excerpt starts (less than excerpt_frames overlaps them).
    max_failed_share: ``semisep ingest`` exits with status 3 when more files than this share fail.
    in_memory: training workers hold their share of the excerpts in memory (fast for corpora
    that fit); false streams them from Parquet every epoch with a local shuffle buffer.
    """

    workdir: str = "work"
    store: str = ""
    storage_path: str = ""
    audio_cache: str = ""
    task_resources: dict[str, float] = field(default_factory=dict)
    corpora: list[CorpusConfig] = field(default_factory=list)
    excerpt_frames: int = 64
    excerpt_hop: int = 32
    dtype: str = "float16"
    shuffle_buffer: int = 256
    in_memory: bool = True
    max_failed_share: float = 0.25

    @property
    def shards_dir(self) -> str:
        """``store`` or ``<workdir>/shards``: an absolute path or a URI."""
        from pipeline.storage import normalize

        return normalize(self.store or os.path.join(self.workdir, "shards"))

    @property
    def audio_cache_dir(self) -> str:
        return os.path.abspath(self.audio_cache or os.path.join(self.workdir, "audio_cache"))

    @property
    def results_dir(self) -> str:
        """``storage_path`` or ``<workdir>/ray_results``: an absolute path or a URI."""
        from pipeline.storage import normalize

        return normalize(self.storage_path or os.path.join(self.workdir, "ray_results"))


@dataclass
class ModelConfig:
    """U-Net separator and DCGAN-style critics."""

    depth: int = 4
    base_channels: int = 16
    critic_channels: int = 16
    critic_layers: int = 4
    dropout: float = 0.0


@dataclass
class TrainConfig:
    """The loss L_s + alpha * L_u + beta * L_add and its optimisation.

    alpha = beta = 0 is the supervised baseline: no critic is built or stepped.
    Validation, early stopping and a checkpoint every ``val_every`` steps and at the end.
    precision: ``fp32`` or ``bf16`` (autocast on the GPU; fp32 on CPU). compile: torch.compile
    the separator (the critics stay eager: the gradient penalty's double backward).
    worker_resources: extra Ray resources per training worker, e.g. ``{trainer: 1}`` so workers
    land only on nodes that advertise it (one per node when each node has one).
    """

    alpha: float = 0.001
    beta: float = 0.001
    n_critic: int = 5
    gp_lambda: float = 10.0
    batch_size: int = 64
    lr: float = 5e-5
    critic_lr: float = 5e-5
    max_steps: int = 1000
    val_every: int = 100
    patience: int = 5
    log_every: int = 10
    seed: int = 0
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: int = 1
    worker_resources: dict[str, float] = field(default_factory=dict)
    precision: str = "fp32"
    compile: bool = False

    @property
    def semi_supervised(self) -> bool:
        return self.alpha > 0 or self.beta > 0


@dataclass
class EvalConfig:
    """Test data and BSS Eval settings.

    protocol: ``paper`` (mono, the model's rate) or ``sigsep`` (original rate and channels).
    """

    corpus: str = ""
    split: str = "test"
    protocol: str = "paper"
    win_seconds: float = 1.0
    max_tracks: int = 0


@dataclass
class MlflowConfig:
    """Tracking store; empty tracking_uri means $MLFLOW_TRACKING_URI or ``sqlite:///<workdir>/mlflow.db``."""

    tracking_uri: str = ""
    experiment: str = "semisep"
    registered_model: str = "semisep-separator"


@dataclass
class TuneConfig:
    """``semisep tune``: a Ray Tune sweep; ranges are [low, high], sampled log-uniformly.

    Every sweep starts with the supervised baseline (alpha = beta = 0), then ``points`` (trials to
    run as given, e.g. a known-good setting), then ``num_samples`` trials from the searcher
    (``optuna``: TPE; ``random``). ASHA stops trials whose validation loss lags, first at
    ``grace_steps``. Each trial trains on one device (training/trial.py) with train.cpus_per_worker
    CPUs and ``gpus_per_worker`` GPUs (fractions let several small trials share a GPU);
    ``max_concurrent`` trials at a time (0: as many as the cluster's CPUs allow).
    """

    name: str = "sweep"
    num_samples: int = 8
    alpha: list = field(default_factory=lambda: [1e-4, 1e-1])
    beta: list = field(default_factory=lambda: [1e-4, 1e-1])
    n_critic: list = field(default_factory=lambda: [1, 2, 5])
    lr: list = field(default_factory=lambda: [1e-5, 1e-3])
    critic_lr: list = field(default_factory=lambda: [1e-5, 1e-3])
    points: list = field(default_factory=list)
    searcher: str = "optuna"
    grace_steps: int = 0
    reduction_factor: int = 2
    max_concurrent: int = 0
    gpus_per_worker: float = 0.0
    seed: int = 0


@dataclass
class PromoteConfig:
    """The gate ``semisep promote`` applies, on median-over-tracks SDR of one evaluation run.

    A candidate replaces the champion when its vocal SDR is at least ``margin_db`` higher and its
    accompaniment SDR at most ``accompaniment_tolerance_db`` lower; with no champion yet, when its
    vocal SDR reaches ``floor_db``. ``lock`` (default ``<workdir>/registry.lock``) serialises
    promotions: put it on storage every promoting machine shares.
    """

    margin_db: float = 0.1
    accompaniment_tolerance_db: float = 0.5
    floor_db: float = 0.0
    lock: str = ""


@dataclass
class RayConfig:
    """Empty address starts a local Ray; ``auto`` or ``ray://host:port`` joins a cluster."""

    address: str = ""
    num_cpus: int = 0


@dataclass
class ExperimentConfig:
    """``semisep experiment``: the supervised baseline against the semi-supervised model.

    For each seed in ``seeds`` both are trained with the train section's settings (the baseline
    with alpha = beta = 0 and no critics), same architecture, data order, step budget and early
    stopping, as Ray Tune trials of one device each (``gpus_per_trial`` GPUs, fractions share one;
    ``max_concurrent`` at once, 0: as many as fit). Both are scored with museval on every entry of
    ``test_sets`` (``{name, corpus, split}``; the first is the headline). ``generate_demo``: write
    the demo corpus (the demo section's sizes) under <workdir>/demo_corpus and ingest it first.
    """

    name: str = "experiment"
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    test_sets: list = field(default_factory=list)
    generate_demo: bool = False
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0


@dataclass
class DemoConfig:
    """Sizes of the generated demo corpus (see pipeline/demo_corpus.py)."""

    seed: int = 0
    track_seconds: float = 20.0
    paired_train: int = 6
    unpaired_per_role: int = 8
    valid: int = 2
    test: int = 4
    test_in_domain: int = 2


@dataclass
class Config:
    transform: TransformConfig = field(default_factory=TransformConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)

    @property
    def tracking_uri(self) -> str:
        """mlflow.tracking_uri, else $MLFLOW_TRACKING_URI, else a SQLite store in the workdir."""
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        return "sqlite:///" + os.path.abspath(os.path.join(self.data.workdir, "mlflow.db"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> "Config":
        return _build(cls, raw or {}, source)

    def validate(self) -> "Config":
        unit = 2**self.model.depth
        if self.data.excerpt_frames % unit:
            raise SemisepError(
                f"data.excerpt_frames={self.data.excerpt_frames} must be a multiple of "
                f"2**model.depth={unit}: set one of them so it divides"
            )
        if self.transform.freq_bins % unit:
            raise SemisepError(
                f"transform.freq_bins={self.transform.freq_bins} must be a multiple of {unit}"
            )
        if self.train.precision not in ("fp32", "bf16"):
            raise SemisepError(f"train.precision={self.train.precision!r}: use 'fp32' or 'bf16'")
        if self.eval.protocol not in ("paper", "sigsep"):
            raise SemisepError(f"eval.protocol={self.eval.protocol!r}: use 'paper' or 'sigsep'")
        for corpus in self.data.corpora:
            if corpus.format not in CORPUS_FORMATS:
                raise SemisepError(
                    f"corpus {corpus.name!r}: format {corpus.format!r} is not known; "
                    f"use one of {', '.join(CORPUS_FORMATS)}"
                )
            if any(w < 0 for w in corpus.partition.values()) or (corpus.partition and not sum(corpus.partition.values())):
                raise SemisepError(f"corpus {corpus.name!r}: partition weights must be >= 0 and not all 0")
            if corpus.use not in ("paired", "unpaired"):
                raise SemisepError(f"corpus {corpus.name!r}: use must be 'paired' or 'unpaired'")
        return self


def _build(cls, raw: Any, where: str):
    """Turn nested dicts into the dataclass ``cls``, refusing unknown keys by name."""
    if not isinstance(raw, dict):
        raise SemisepError(f"{where}: expected a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            raise SemisepError(f"{where}: unknown setting {key!r} (known: {', '.join(fields)})")
        ftype = fields[key].type
        sub = _dataclass_for(ftype)
        if sub is not None and isinstance(value, dict):
            value = _build(sub, value, f"{where}.{key}")
        elif key == "corpora":
            value = [_build(CorpusConfig, c, f"{where}.corpora[{i}]") for i, c in enumerate(value)]
        kwargs[key] = value
    return cls(**kwargs)


def _dataclass_for(type_name: Any):
    names = {c.__name__: c for c in (TransformConfig, DataConfig, ModelConfig, TrainConfig,
                                     EvalConfig, MlflowConfig, TuneConfig, PromoteConfig, RayConfig, DemoConfig,
                                     ExperimentConfig)}
    return names.get(type_name if isinstance(type_name, str) else getattr(type_name, "__name__", ""))


def load_config(path: str | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply ``a.b=value`` overrides.

    Relative corpus paths and the workdir are taken relative to the current directory.
    """
    import yaml  # here, not at the top: the training step must import with torch + numpy alone

    raw: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise SemisepError(f"{path}: config file not found")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SemisepError(f"{path}: not valid YAML ({exc})") from None
    for item in overrides or []:
        if "=" not in item:
            raise SemisepError(f"override {item!r}: write it as section.key=value")
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return Config.from_dict(raw, source=path or "config").validate()
