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

from semisep.pipeline.errors import SemisepError


@dataclass(frozen=True)
class TransformConfig:
    sample_rate: int = 8192
    n_fft: int = 512
    hop_length: int = 256
    freq_bins: int = 256

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def check_same(self, other: "TransformConfig", where: str) -> None:
        """Raise if ``other`` (read from ``where``) differs from this transform."""
        if self == other:
            return
        diffs = [
            f"{k}: {v} there vs {getattr(self, k)} here"
            for k, v in other.to_dict().items()
            if getattr(self, k) != v
        ]
        raise SemisepError(
            f"{where}: spectrogram transform differs from the config ({'; '.join(diffs)}); "
            "re-run `semisep ingest` with this config or use the config the data was built with"
        )


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
    dtype: how shards store the STFT planes, ``float16`` (half the disk and memory) or ``float32``.
    max_failed_share: ``semisep ingest`` exits with status 3 when more tracks than this share fail.
    version: the store's table version a training run reads (pipeline/table.py); -1: the latest at
    the run's start. A run records the version it planned on and every restart and resume reads it.
    retention_days: a version replaced longer ago than this may lose its files to the vacuum that
    the nightly job (and ``semisep vacuum``) runs; younger ones stay readable.
    Training workers stream their share of the excerpts (train.reader, training/data.py).
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
    max_failed_share: float = 0.25
    version: int = -1
    retention_days: float = 7.0

    @property
    def shards_dir(self) -> str:
        """``store`` or ``<workdir>/shards``: an absolute path or a URI."""
        from semisep.pipeline.storage import normalize

        return normalize(self.store or os.path.join(self.workdir, "shards"))

    @property
    def audio_cache_dir(self) -> str:
        return os.path.abspath(self.audio_cache or os.path.join(self.workdir, "audio_cache"))

    @property
    def results_dir(self) -> str:
        """``storage_path`` or ``<workdir>/ray_results``: an absolute path or a URI."""
        from semisep.pipeline.storage import normalize

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

    alpha = beta = 0: no critic is built or stepped; with remix = 0 too, the supervised baseline.
    The defaults are semisep's, chosen on validation (docs/results.md): supervised training with
    3/4 of every batch remixed (remix 0.75), no adversarial terms; the paper's method is alpha =
    beta = 0.001 with remix 0 (configs/paper.yaml).
    Validation and early stopping every ``val_every`` steps; a checkpoint at a validation when
    ``checkpoint_every_s`` seconds have passed since the last one, and always at the end (0: at
    every validation). Ray Train holds one report at a time and its controller collects it every
    2 s, so reporting every second or so stalls training; a worker that dies loses at most that
    interval.
    precision: ``auto`` (bf16 autocast on a CPU with native bf16, AVX512-BF16 or AMX; fp32
    elsewhere, the GPU included, where bf16 measured no faster), ``fp32`` or ``bf16`` (autocast on
    the CPU or GPU). compile: torch.compile the separator (the critics stay eager: the gradient
    penalty's double backward).
    Convergence (training/schedule.py, training/early_stopping.py): ``warmup_steps`` of linear
    warm-up, then ``lr_schedule``: ``constant``, ``cosine`` (down to ``lr_min_factor`` of the rate at
    ``max_steps``) or ``plateau`` (the rate times ``plateau_factor`` after ``plateau_patience``
    validations without a gain above ``min_delta``, not below ``lr_min_factor``). ``ema_decay`` > 0
    keeps an exponential moving average of the separator's weights (as Demucs does); each
    validation scores both, and the better of the two is what early stopping keeps and the run
    ships. Early stopping counts a validation as a gain only above ``min_delta`` (the score's units:
    dB for ``val_sdr``) and stops after ``patience`` validations without one: ``max_steps`` is a cap.
    worker_resources: extra Ray resources per training worker, e.g. ``{trainer: 1}`` so workers
    land only on nodes that advertise it (one per node when each node has one).
    num_workers: a number, or ``[min, max]`` for elastic training (Ray Train's elastic scaling):
    the run starts with as many workers as fit, up to max, goes on with fewer (at least min) when
    a node is lost, from the last checkpoint, and grows back when capacity returns (checked every
    ``resize_interval_s``); the data streams are re-split over the new number of workers, each row
    still drawn once per epoch. batch_size must divide by every number of workers in the range.

    Reading (training/data.py): ``reader: stream`` (default) streams each worker's share of the
    shards through a window of ``shuffle_buffer`` rows per stream at most (read-ahead included):
    memory stays flat however large the corpus. ``reader: memory`` reads every worker's rows
    before the first step (small corpora; no elastic training). The validation split is held in
    memory on the worker that validates, refused past ``valid_max_mib``.

    Data (training/batches.py): ``gain_db`` [low, high]: every source of every training excerpt
    gets a random gain, uniform in dB (``[0, 0]``: none); paired mixtures are the sums of their
    gained sources. ``remix``: share of each supervised batch made of remixed pairs (the vocals of
    one excerpt over the accompaniment of another, from unpaired solo recordings and paired stems
    alike): supervised training on unpaired audio, the baseline the adversarial method must beat.
    ``adversarial_paired``: share of the critics' real and separated examples, and of the L_u /
    L_add mixtures, drawn from the paired songs instead of the unpaired audio.
    ``critic_input``: ``raw`` log-magnitudes, or ``level``: each excerpt divided by its RMS first,
    so the critics judge spectra, not loudness.
    ``select_on``: what picks the best step and stops early: ``val_sdr`` (signal SDR of the
    estimates on the validation songs, higher is better) or ``val_loss`` (L_s on them).
    ``pseudo``: share of each supervised batch made of pseudo-labelled unpaired mixtures (a
    teacher's separations, evaluation/pseudo_labels.py), from the pseudo-label store
    ``pseudo_labels`` (default ``<data.store>/_pseudo``): noisy self-training. ``pseudo_remix``
    (with ``pseudo`` > 0): the teacher's stems also join the remix pools, so remixes pair them
    across songs and with the real stems.
    ``init_model``: a model (folder; ``semisep train`` also takes ``models:/...`` and ``runs:/...``)
    whose separator weights start the training instead of fresh ones: fine-tuning (same
    architecture; the optimiser starts fresh).
    ``unpaired_roles``: the unpaired roles training reads (``[mixture]``: mixtures only; the
    critics then take their real examples from the paired songs' stems).
    """

    alpha: float = 0.0
    beta: float = 0.0
    n_critic: int = 5
    gp_lambda: float = 10.0
    batch_size: int = 64
    lr: float = 5e-5
    critic_lr: float = 5e-5
    max_steps: int = 1000
    val_every: int = 100
    patience: int = 5
    min_delta: float = 0.0
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    lr_min_factor: float = 0.01
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    ema_decay: float = 0.0
    checkpoint_every_s: float = 30.0
    log_every: int = 10
    seed: int = 0
    num_workers: int | list = 1
    resize_interval_s: float = 60.0
    use_gpu: bool = False
    cpus_per_worker: int = 1
    worker_resources: dict[str, float] = field(default_factory=dict)
    precision: str = "auto"
    compile: bool = False
    gain_db: list = field(default_factory=lambda: [-6.0, 6.0])
    remix: float = 0.75
    adversarial_paired: float = 0.0
    critic_input: str = "raw"
    select_on: str = "val_sdr"
    reader: str = "stream"
    shuffle_buffer: int = 2048
    valid_max_mib: float = 4096.0
    pseudo: float = 0.0
    pseudo_labels: str = ""
    pseudo_remix: bool = False
    init_model: str = ""
    unpaired_roles: list = field(default_factory=lambda: ["mixture", "vocals", "accompaniment"])

    @property
    def semi_supervised(self) -> bool:
        return self.alpha > 0 or self.beta > 0

    @property
    def elastic(self) -> bool:
        return isinstance(self.num_workers, list)

    @property
    def min_workers(self) -> int:
        return self.num_workers[0] if self.elastic else self.num_workers

    @property
    def max_workers(self) -> int:
        return self.num_workers[1] if self.elastic else self.num_workers


@dataclass
class PseudoConfig:
    """Pseudo-labels for noisy self-training (evaluation/pseudo_labels.py): a teacher separates the
    unpaired mixtures; its estimates become training pairs of their own role, with lineage to it.

    ``teacher``: ``champion`` (the registry's champion; the nightly job relabels when it changes)
    or a model (folder, ``runs:/...``, ``models:/...``). ``keep``: the share of each song's excerpts
    kept, the ones the teacher's mask is most decided on (energy-weighted |2m - 1|); 1.0, chosen on
    the sampled corpus's validation songs (keep 1.0: 2.48 dB vocal SDR, 0.5: 2.20, docs/results.md),
    keeps every excerpt. ``rounds``
    (``semisep experiment``): teacher -> student rounds; each round's student teaches the next.
    ``student`` (``semisep experiment``): the student starts from fresh weights (``scratch``, as in
    Noisy Student) or from its teacher's (``teacher``: fine-tuning on the pseudo-labels, as
    Band-split RNN's semi-supervised stage). ``teacher`` beat ``scratch`` on validation, but so did
    the teacher fine-tuned without pseudo-labels, by more (the extra steps, not the mixtures;
    docs/results.md), so the default stays ``scratch``.
    ``repet_weights``: the labels' mask is ``(1 - w) x teacher + w x REPET-SIM`` (evaluation/repet.py,
    on the whole song), with the ``w`` of this list that separates the validation songs best, chosen
    by the pseudo-labeller for each teacher and recorded in the store. Default ``[0]``: the teacher
    alone; ``[0, 0.25, 0.5, 0.75, 1]`` helped a weak teacher (mixtures only, docs/results.md).
    ``vocal_scales``: scales of the labels' vocal mask tried with every weight, the same way (a
    teacher trained on other music can give the voice too much: ``s x ((1 - w) x teacher + w x
    REPET-SIM)``); default ``[1]``.
    ``student_channels`` and ``student_dropout`` (``semisep experiment``): Noisy Student's larger and
    noised student: the students' ``model.base_channels`` (0: the model section's) and
    ``model.dropout`` (0: the model section's); every other arm keeps the model section.
    ``version``: the pseudo-label table's version a training run with ``train.pseudo`` reads (-1:
    the latest at its start; pinned like ``data.version``).
    """

    teacher: str = "champion"
    keep: float = 1.0
    rounds: int = 1
    student: str = "scratch"
    repet_weights: list = field(default_factory=lambda: [0.0])
    vocal_scales: list = field(default_factory=lambda: [1.0])
    student_channels: int = 0
    student_dropout: float = 0.0
    version: int = -1


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
    """Tracking store; empty tracking_uri means $MLFLOW_TRACKING_URI or ``sqlite:///<workdir>/mlflow.db``.

    request_timeout (seconds) and request_retries bound each call to an MLflow server, so an
    unreachable server is reported within about a minute instead of MLflow's ~4 minutes per call.
    Credentials for a server behind authentication come from MLFLOW_TRACKING_USERNAME and
    MLFLOW_TRACKING_PASSWORD (cluster.yaml ships them like Ray's token).
    """

    tracking_uri: str = ""
    experiment: str = "semisep"
    registered_model: str = "semisep-separator"
    request_timeout: float = 10.0
    request_retries: int = 2


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
    vocal SDR reaches ``floor_db``. ``split``: the split of ``eval.corpus`` the gate measures on,
    ``gate`` by default: songs no training, validation, sweep or experiment reads. A candidate was
    chosen on the validation songs (early stopping, ``semisep tune``, ``semisep experiment``), so
    scoring it there again adds the luck that chose it (a winner's curse larger than ``margin_db``);
    the test split would become tuned on, night after night. Promotions are serialised by a lease
    held in the registry itself (evaluation/promote.py), which every node sees.
    ``lease_seconds``: how long a lease lasts before another promotion may break it (a holder
    that died); a live holder renews it while it measures.
    """

    margin_db: float = 0.1
    accompaniment_tolerance_db: float = 0.5
    floor_db: float = 0.0
    split: str = "gate"
    lease_seconds: float = 600.0


@dataclass
class RayConfig:
    """Empty address starts a local Ray; ``auto`` or ``ray://host:port`` joins a cluster.

    dashboard: a local Ray starts Ray's dashboard (jobs, actors, logs, the state API Ray Train's
    clean-up uses) on 127.0.0.1, at ``dashboard_port`` (0: a free port); its address is printed
    once. Off saves about a second of start-up and ~150 MB (docs/cluster.md, "Ray dashboard").
    """

    address: str = ""
    num_cpus: int = 0
    dashboard: bool = True
    dashboard_port: int = 0


@dataclass
class ExperimentConfig:
    """``semisep experiment``: does unpaired audio help? (semisep/experiment.py)

    ``arms``: any of supervised (the baseline, always), supervised+remix (``remix`` of each batch
    remixed from unpaired and paired stems), semi-supervised (the train section's alpha, beta,
    n_critic), semi-supervised+remix. For each seed in ``seeds`` every arm is trained with the train
    section's other settings, same architecture, initial weights, data order, step budget and early
    stopping, as Ray Tune trials of one device each (``gpus_per_trial`` GPUs, fractions share one;
    ``max_concurrent`` at once, 0: as many as fit). All are scored with museval on every entry of
    ``test_sets`` (``{name, corpus, split}``; the first is the headline). ``generate_demo``: write
    the corpus the demo section describes under <workdir>/demo_corpus and ingest it first.
    ``self-training+remix``: supervised+remix with ``pseudo`` of each batch pseudo-labelled by that
    seed's supervised+remix model (the teacher) in place of as many remixed rows (the paired share
    stays the teacher's), trained after it (pseudo section: keep, rounds).
    ``unpaired_roles``: the unpaired roles every arm reads (``[mixture]``: the mixtures-only
    scenario of a team with finished songs and no stems).
    """

    name: str = "experiment"
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    arms: list = field(default_factory=lambda: ["supervised", "supervised+remix", "semi-supervised",
                                                "semi-supervised+remix", "self-training+remix"])
    pseudo: float = 0.25
    unpaired_roles: list = field(default_factory=lambda: ["mixture", "vocals", "accompaniment"])
    remix: float = 0.75
    test_sets: list = field(default_factory=list)
    generate_demo: bool = False
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0


@dataclass
class DemoConfig:
    """The generated corpus: its sizes and how it is made.

    generator: ``synth`` (pipeline/demo_corpus.py: formula-made voice and instruments, studio vs
    acoustic domain) or ``sampled`` (pipeline/sampled_corpus.py: General MIDI songs played by
    FluidSynth from soundfonts of recorded instruments and voices; the paired domain in
    ``paired_style`` with ``paired_soundfont``, the target domain in ``target_style`` with
    ``target_soundfont``; styles: pop, rock, jazz, folk, electronic).
    """

    generator: str = "synth"
    paired_style: str = "pop"
    target_style: str = "rock"
    paired_soundfont: str = "FluidR3_GM"
    target_soundfont: str = "MuseScore_General"
    seed: int = 0
    track_seconds: float = 20.0
    paired_train: int = 6
    unpaired_per_role: int = 8
    unpaired_mixtures: int = 0  # 0: unpaired_per_role
    valid: int = 2
    gate: int = 2
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
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
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

    def shipped(self) -> "Config":
        """A copy for Ray workers, whose working directory is not the driver's: the workdir and
        stores made absolute (or left URIs), corpus paths absolute, the tracking URI resolved."""
        from semisep.pipeline.storage import has_scheme

        out = Config.from_dict(self.to_dict())
        out.data.workdir = os.path.abspath(self.data.workdir)
        out.data.store, out.data.storage_path = self.data.shards_dir, self.data.results_dir
        out.data.audio_cache = self.data.audio_cache_dir
        for corpus in out.data.corpora:
            corpus.path = corpus.path if has_scheme(corpus.path) else os.path.abspath(corpus.path)
        out.mlflow.tracking_uri = self.tracking_uri
        return out

    def hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> "Config":
        try:
            return _build(cls, raw or {}, "")
        except SemisepError as exc:
            raise SemisepError(f"{source}: {exc}" if source not in ("config", "") else str(exc)) from None

    def validate(self) -> "Config":
        """Ranges, choices and cross-field rules; every message names the setting."""
        for key, (low, high, low_open) in RANGES.items():
            value = self.get(key)
            if value < low or (low_open and value == low) or (high is not None and value > high):
                bound = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")
                raise SemisepError(f"{key}={value}: must be {bound}")
        for key, choices in CHOICES.items():
            if self.get(key) not in choices:
                raise SemisepError(f"{key}={self.get(key)!r}: use one of {', '.join(map(repr, choices))}")
        unit = 2**self.model.depth
        if self.data.excerpt_frames % unit:
            raise SemisepError(
                f"data.excerpt_frames={self.data.excerpt_frames} must be a multiple of "
                f"2**model.depth={unit}: set one of them so it divides"
            )
        if self.transform.freq_bins % unit or self.transform.freq_bins > self.transform.n_fft // 2 + 1:
            raise SemisepError(f"transform.freq_bins={self.transform.freq_bins} must be a multiple of {unit} "
                               f"and at most n_fft // 2 + 1 = {self.transform.n_fft // 2 + 1}")
        critic_unit = 2**self.model.critic_layers  # each critic layer halves both axes
        for key, size in (("data.excerpt_frames", self.data.excerpt_frames), ("transform.freq_bins", self.transform.freq_bins)):
            if size % critic_unit:
                raise SemisepError(
                    f"{key}={size} must be a multiple of 2**model.critic_layers={critic_unit} (the critics halve it "
                    f"{self.model.critic_layers} times); set model.critic_layers lower or {key} so it divides")
        t = self.train
        if len(t.gain_db) != 2 or t.gain_db[0] > t.gain_db[1]:
            raise SemisepError(f"train.gain_db={t.gain_db}: give [low, high] in dB, low <= high")
        sizes = range(t.min_workers, t.max_workers + 1)
        if any(t.batch_size % n for n in sizes):
            raise SemisepError(f"train.batch_size={t.batch_size} must divide by train.num_workers={t.num_workers}"
                               + (" (every number of workers in the range)" if t.elastic else ""))
        if t.remix + t.pseudo > 0.99:
            raise SemisepError(f"train.remix={t.remix:g} + train.pseudo={t.pseudo:g}: together at most 0.99 of a batch "
                               "(some paired songs stay in every batch)")
        for key, roles in (("train.unpaired_roles", t.unpaired_roles), ("experiment.unpaired_roles",
                                                                       self.experiment.unpaired_roles)):
            if not set(roles) <= {"mixture", "vocals", "accompaniment"}:
                raise SemisepError(f"{key}={roles}: roles are mixture, vocals, accompaniment")
        ps = self.pseudo
        if not _numbers(ps.repet_weights, lambda x: 0 <= x <= 1):
            raise SemisepError(f"pseudo.repet_weights={ps.repet_weights}: give a list of weights between 0 and 1, "
                               "e.g. [0, 0.5]")
        if not _numbers(ps.vocal_scales, lambda x: 0 < x <= 1):
            raise SemisepError(f"pseudo.vocal_scales={ps.vocal_scales}: give a list of scales above 0 and at most 1, "
                               "e.g. [1, 0.8]")
        if ps.student == "teacher" and ps.student_channels not in (0, self.model.base_channels):
            raise SemisepError(f"pseudo.student_channels={ps.student_channels} with pseudo.student=teacher: a student "
                               f"fine-tuned from its teacher keeps its size (model.base_channels="
                               f"{self.model.base_channels}); set 0, or pseudo.student=scratch")
        if t.elastic and t.reader != "stream":
            raise SemisepError(f"train.num_workers={t.num_workers} (elastic) needs train.reader=stream: the "
                               "in-memory reader cannot re-split its rows when the number of workers changes")
        names = [c.name for c in self.data.corpora]
        if len(set(names)) != len(names):
            raise SemisepError(f"data.corpora: corpus names must be distinct ({', '.join(names)})")
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

    def get(self, dotted: str) -> Any:
        section, key = dotted.split(".")
        return getattr(getattr(self, section), key)


def _numbers(values, ok) -> bool:
    """A non-empty list of numbers (not booleans), each passing ``ok``."""
    return isinstance(values, list) and bool(values) and all(
        not isinstance(x, bool) and isinstance(x, (int, float)) and ok(x) for x in values)


# setting -> (low, high or None, low excluded)
RANGES = {
    "transform.sample_rate": (1, None, False), "transform.n_fft": (2, None, False),
    "transform.hop_length": (1, None, False), "transform.freq_bins": (1, None, False),
    "data.excerpt_frames": (1, None, False), "data.excerpt_hop": (1, None, False),
    "data.max_failed_share": (0.0, 1.0, False), "data.version": (-1, None, False),
    "data.retention_days": (0.0, None, False),
    "model.depth": (1, 8, False), "model.base_channels": (1, None, False), "model.critic_channels": (1, None, False),
    "model.critic_layers": (1, None, False), "model.dropout": (0.0, 0.99, False),
    "train.alpha": (0.0, None, False), "train.beta": (0.0, None, False), "train.n_critic": (1, None, False),
    "train.gp_lambda": (0.0, None, False), "train.batch_size": (1, None, False), "train.lr": (0.0, None, False),
    "train.critic_lr": (0.0, None, True), "train.max_steps": (1, None, False), "train.val_every": (1, None, False),
    "train.checkpoint_every_s": (0.0, None, False),
    "train.patience": (1, None, False), "train.min_delta": (0.0, None, False), "train.warmup_steps": (0, None, False),
    "train.lr_min_factor": (0.0, 1.0, False), "train.plateau_factor": (0.0, 1.0, True),
    "train.plateau_patience": (1, None, False), "train.ema_decay": (0.0, 0.99999, False), "train.log_every": (1, None, False), "train.shuffle_buffer": (2, None, False), "train.valid_max_mib": (0.0, None, True),
    "train.resize_interval_s": (0.0, None, False),
    "train.cpus_per_worker": (0.0, None, True), "train.remix": (0.0, 0.99, False),
    "train.adversarial_paired": (0.0, 0.99, False), "train.pseudo": (0.0, 0.99, False),
    "pseudo.keep": (0.0, 1.0, True), "pseudo.version": (-1, None, False), "pseudo.rounds": (1, None, False),
    "pseudo.student_channels": (0, None, False), "pseudo.student_dropout": (0.0, 0.99, False),
    "experiment.pseudo": (0.0, 0.99, False),
    "eval.win_seconds": (0.0, None, True), "eval.max_tracks": (0, None, False),
    "promote.accompaniment_tolerance_db": (0.0, None, False), "promote.lease_seconds": (1.0, None, False),
    "tune.num_samples": (0, None, False), "tune.grace_steps": (0, None, False), "tune.reduction_factor": (2, None, False),
    "tune.max_concurrent": (0, None, False), "tune.gpus_per_worker": (0.0, None, False),
    "ray.num_cpus": (0, None, False), "ray.dashboard_port": (0, 65535, False),
    "experiment.gpus_per_trial": (0.0, None, False),
    "experiment.max_concurrent": (0, None, False), "experiment.remix": (0.0, 0.99, False),
    "demo.track_seconds": (1.0, None, False), "demo.paired_train": (0, None, False),
    "demo.unpaired_per_role": (0, None, False), "demo.unpaired_mixtures": (0, None, False), "demo.valid": (0, None, False), "demo.gate": (0, None, False), "demo.test": (0, None, False),
    "demo.test_in_domain": (0, None, False), "mlflow.request_timeout": (1.0, None, False),
    "mlflow.request_retries": (0, None, False),
}
CHOICES = {
    "data.dtype": ("float16", "float32"), "train.precision": ("auto", "fp32", "bf16"),
    "train.lr_schedule": ("constant", "cosine", "plateau"),
    "train.critic_input": ("raw", "level"), "train.select_on": ("val_sdr", "val_loss"),
    "train.reader": ("stream", "memory"),
    "eval.protocol": ("paper", "sigsep"), "demo.generator": ("synth", "sampled"), "tune.searcher": ("optuna", "random"),
    "promote.split": ("gate", "valid", "test"), "pseudo.student": ("scratch", "teacher"),
}


def _convert(value: Any, type_name: str, where: str) -> Any:
    """A YAML value as the field's type: "1e-4" (YAML 1.1 reads it as text) becomes 0.0001 for a
    float setting; anything that cannot be is refused with the setting's name."""
    def fail(expected: str):
        raise SemisepError(f"{where}={value!r}: expected {expected}")

    if type_name.replace(" ", "") == "int|list":  # a number of workers, or [min, max]
        if isinstance(value, list):
            if len(value) != 2:
                fail("a number, or [min, max]")
            low, high = (_convert(v, "int", where) for v in value)
            if not 1 <= low <= high:
                fail("[min, max] with 1 <= min <= max")
            return [low, high]
        number = _convert(value, "int", where)
        if number < 1:
            fail("a number >= 1, or [min, max]")
        return number
    base = type_name.split("[")[0].strip()
    if base == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
        fail("true or false")
    if base in ("int", "float"):
        if isinstance(value, bool):
            fail(f"a number ({base})")
        try:
            number = float(value) if isinstance(value, str) else value
        except ValueError:
            fail(f"a number ({base})")
        if not isinstance(number, (int, float)) or number != number:
            fail(f"a number ({base})")
        if base == "int":
            if float(number) != int(number):
                fail("a whole number")
            return int(number)
        return float(number)
    if base == "str":
        if isinstance(value, (dict, list)) or value is None:
            fail("a text value")
        return str(value)
    if base == "list":
        if not isinstance(value, list):
            fail("a list, e.g. [a, b]")
        return value
    if base == "dict":
        if not isinstance(value, dict):
            fail("a mapping, e.g. {key: value}")
        if type_name.replace(" ", "") == "dict[str,float]":
            return {str(k): _convert(v, "float", f"{where}.{k}") for k, v in value.items()}
        return {str(k): _convert(v, "str", f"{where}.{k}") for k, v in value.items()}
    return value


def _build(cls, raw: Any, where: str):
    """Turn nested dicts into the dataclass ``cls``, refusing unknown keys by name and converting
    every value to its field's type."""
    if not isinstance(raw, dict):
        raise SemisepError(f"{where or 'the config'}: expected a mapping of settings, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            raise SemisepError(f"{where or 'top level'}: unknown setting {key!r} (known: {', '.join(fields)})")
        ftype = fields[key].type
        sub = _dataclass_for(ftype)
        name = f"{where}.{key}" if where else str(key)
        if sub is not None:
            if not isinstance(value, dict):
                raise SemisepError(f"{name}: a section, not a value; set its keys, e.g. {name}.KEY=VALUE")
            value = _build(sub, value, name)
        elif key == "corpora":
            if not isinstance(value, list):
                raise SemisepError(f"{name}: expected a list of corpora ({{name, path, format, use}})")
            value = [_build(CorpusConfig, c, f"{name}[{i}]") for i, c in enumerate(value)]
        else:
            value = _convert(value, ftype if isinstance(ftype, str) else ftype.__name__, name)
        kwargs[key] = value
    return cls(**kwargs)


def _dataclass_for(type_name: Any):
    names = {c.__name__: c for c in (TransformConfig, DataConfig, ModelConfig, TrainConfig,
                                     EvalConfig, MlflowConfig, TuneConfig, PromoteConfig, RayConfig, DemoConfig,
                                     ExperimentConfig, PseudoConfig)}
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
    if not isinstance(raw, dict):
        raise SemisepError(f"{path}: expected a mapping of sections (transform, data, train, ...)")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise SemisepError(f"--set {item!r}: write it as section.key=value, e.g. train.lr=0.001")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise SemisepError(f"--set {item!r}: the value is not valid YAML ({' '.join(str(exc).split())[:120]})") from None
        node = raw
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SemisepError(f"--set {item!r}: {'.'.join(parts[:i + 1])} is a value, not a section")
        node[parts[-1]] = parsed
    return Config.from_dict(raw, source=path or "config").validate()
