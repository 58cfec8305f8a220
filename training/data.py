"""Training data from the shards: which files, checked against the config, and the sources a
worker draws its batches from.

Training streams: ``paired`` (mixture, vocals, accompaniment), the unpaired ``mixture``, ``vocals``
and ``accompaniment`` (those of ``train.unpaired_roles``), for remixing ``remix_vocals`` /
``remix_accompaniment`` (every vocal and every accompaniment excerpt the data has: the paired
songs' stems and the unpaired solo recordings), and ``pseudo`` (a teacher's separations of the
unpaired mixtures: the pseudo-label store, with ``train.pseudo`` > 0). The validation split
(``valid``) is read into memory on the worker that validates.

``train.reader``:

- ``stream`` (default): every worker streams its share of each stream's shard files through a
  bounded window (training/stream.py): memory does not grow with the corpus, each row is drawn
  once per epoch across the workers, and the draws continue exactly after a resume, also when the
  number of workers changed (elastic training);
- ``memory``: every worker reads its rows ``rank::world`` of every stream into memory before the
  first step (the reader semisep had first; fast for small corpora, ~450 MiB per hour of each
  unpaired role at the paper's settings).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from semisep.pipeline.config import Config
from semisep.pipeline.errors import SemisepError
from semisep.pipeline.manifest import version_shards
from semisep.pipeline.pseudo_store import OLD_LAYOUT, pinned_label_set, pseudo_dir
from semisep.pipeline.shards import SOURCE_COLUMNS, check_shard, read_excerpts
from semisep.training.batches import SALTS, memory_pools
from semisep.training.stream import ShardStream, StreamFiles, initial_state, resplit

STREAMS = ("paired", "mixture", "vocals", "accompaniment")
REMIX = ("remix_vocals", "remix_accompaniment")


def _files(rows, columns) -> StreamFiles:
    rows = rows.sort_values("shard")
    return StreamFiles(tuple(rows.shard), tuple(int(n) for n in rows.excerpts), tuple(columns))


def _paired(ok, split: str) -> StreamFiles:
    return _files(ok[(ok.role == "paired") & (ok.split == split)], SOURCE_COLUMNS)


def pin_version(cfg: Config, checkpoint_config: dict | None = None) -> Config:
    """A copy of ``cfg`` whose ``data.version`` names one table version of the store: the
    checkpoint's when resuming (a resumed run reads the rows it planned on, whatever ingestion ran
    since), else ``data.version``, else the latest. Ray Train restarts and elastic re-splits get
    the shipped copy, so every worker start reads that version's files."""
    from semisep.pipeline import table

    pinned = int(((checkpoint_config or {}).get("data") or {}).get("version", -1))
    asked = cfg.data.version
    if pinned >= 0 and asked >= 0 and asked != pinned:
        raise SemisepError(f"--resume with data.version={asked}: the checkpoint trained on version {pinned}; resume "
                           f"without data.version, or start a new run on version {asked}")
    version = pinned if pinned >= 0 else asked
    if version < 0:
        version = table.latest_version(cfg.data.shards_dir)
        if version is None:
            table.refuse_old_layout(cfg.data.shards_dir)
            raise SemisepError(f"{cfg.data.shards_dir}: no shard store here; run `semisep ingest` first")
    table.files(cfg.data.shards_dir, version)  # a vacuumed or unknown version is refused now, by name
    out = Config.from_dict(cfg.to_dict())
    out.data.version = int(version)
    if cfg.train.pseudo > 0:  # the label set too: relabelling during the run changes nothing it reads
        labels = int(((checkpoint_config or {}).get("pseudo") or {}).get("version", -1))
        out.pseudo.version = pinned_label_set(pseudo_dir(out), labels if labels >= 0 else cfg.pseudo.version)[2]
    return out


def validation_files(cfg: Config) -> StreamFiles:
    """The validation split's shards (paired, split ``valid``) of version ``data.version``, as
    ``stream_files`` lists them."""
    return _paired(version_shards(cfg.data.shards_dir, cfg.data.version)[0], "valid")


def stream_files(cfg: Config) -> dict[str, StreamFiles]:
    """Shard files per stream, with their rows, of the store's version ``data.version`` (-1: the
    latest; a run pins it before its workers start, so every restart reads the same files); the
    first shard of each is checked against the config now, the rest as they are read."""
    ok = version_shards(cfg.data.shards_dir, cfg.data.version)[0]
    out = {"paired": _paired(ok, "train"), "valid": _paired(ok, "valid")}
    for role in SOURCE_COLUMNS:
        used = ok[(ok.role == role) & (ok.split == "train")] if role in cfg.train.unpaired_roles else ok.iloc[:0]
        out[role] = _files(used, [role])
    if not out["paired"].paths:
        raise SemisepError(f"{cfg.data.shards_dir}: no paired training shards; ingest a paired corpus with a train split")
    if not out["valid"].paths:
        raise SemisepError(f"{cfg.data.shards_dir}: no validation shards; give a paired corpus a 'valid' split")
    if cfg.train.semi_supervised and not out["mixture"].paths:
        raise SemisepError(
            f"{cfg.data.shards_dir}: semi-supervised training needs unpaired mixtures (train.unpaired_roles="
            f"{cfg.train.unpaired_roles}); ingest an unpaired corpus or set train.alpha=0 train.beta=0")
    if cfg.train.pseudo > 0:
        out["pseudo"] = pseudo_files(cfg)
    for source in ("vocals", "accompaniment"):
        both = (out["paired"], out[source]) + ((out["pseudo"],) if cfg.train.pseudo > 0 and cfg.train.pseudo_remix else ())
        out[f"remix_{source}"] = StreamFiles(sum((f.paths for f in both), ()), sum((f.rows for f in both), ()),
                                             (source,))
    for stream in out.values():
        if stream.paths:
            check_shard(stream.paths[0], cfg.transform, cfg.data.excerpt_frames)
    return out


def pseudo_files(cfg: Config) -> StreamFiles:
    """The pseudo-label store's shards (mixture, the teacher's vocals and accompaniment) of version
    ``pseudo.version``."""
    from semisep.pipeline import table

    if not table.is_table(pseudo_dir(cfg)):
        table.refuse_old_layout(pseudo_dir(cfg), *OLD_LAYOUT)
        raise SemisepError(f"{pseudo_dir(cfg)}: no pseudo-labels; make them with `semisep pseudo-label` (or the nightly "
                           "job, which labels with the champion) before training with train.pseudo > 0")
    rows = pinned_label_set(pseudo_dir(cfg), cfg.pseudo.version)[0]
    rows = rows[rows.rows > 0].sort_values("shard")
    if not len(rows):
        raise SemisepError(f"{pseudo_dir(cfg)}: the pseudo-label store holds no excerpts")
    return StreamFiles(tuple(rows.shard), tuple(int(n) for n in rows.rows), tuple(SOURCE_COLUMNS))


def needed_streams(cfg: Config, files: dict[str, StreamFiles]) -> list[str]:
    """The training streams this run draws from: unpaired ones only for semi-supervised runs (the
    critics' real examples come from the paired stems where a role has no unpaired audio), the
    remix streams only for remix runs, pseudo-labels only with train.pseudo > 0."""
    t = cfg.train
    out = ["paired"]
    if t.semi_supervised:
        out += [s for s in SOURCE_COLUMNS if files[s].paths]
    if t.remix > 0:
        out += list(REMIX)
    if t.pseudo > 0:
        out.append("pseudo")
    return out


def read_stream(paths: list[str], columns: list[str], cfg: Config, rank: int = 0,
                world: int = 1) -> dict[str, torch.Tensor]:
    """Column -> planes (rows, 2, F, T) in the shards' storage type, rows ``rank::world``."""
    out = {}
    for column in columns:
        planes = read_excerpts(paths, column, cfg.transform, cfg.data.excerpt_frames)[rank::world]
        out[column] = torch.from_numpy(np.ascontiguousarray(planes))
    return out


def stream_seed(cfg: Config, name: str) -> int:
    """The same on every worker: all draw a stream's epochs in one order and split it."""
    return cfg.train.seed * 1000 + SALTS[name]


def window_rows(cfg: Config) -> int:
    """Rows per window of a streamed source: it holds at most two (train.shuffle_buffer)."""
    return max(1, cfg.train.shuffle_buffer // 2)


def training_sources(cfg: Config, rank: int = 0, world: int = 1, saved: dict | None = None,
                     files: dict[str, StreamFiles] | None = None) -> dict:
    """This worker's sources, by stream name (``ShardStream`` or, with ``train.reader: memory``,
    ``Pool``), continuing from ``saved`` (a checkpoint's ``{rank: {stream: state}}`` of every
    worker of the run that wrote it; its world size may differ from ``world``)."""
    files = files or stream_files(cfg)
    saved = saved or {}
    names = needed_streams(cfg, files)
    if cfg.train.reader == "memory":
        roles = [s for s in SOURCE_COLUMNS if files[s].paths] if cfg.train.semi_supervised or cfg.train.remix > 0 else []
        arrays = {}
        for name in ["paired", *roles, *(["pseudo"] if "pseudo" in names else [])]:
            arrays[name] = read_stream(list(files[name].paths), list(files[name].columns), cfg, rank, world)
            if not len(next(iter(arrays[name].values()))):
                raise SemisepError(f"training stream {name!r} has no rows for worker {rank} of {world}: "
                                   "add data or use fewer workers")
        pools = memory_pools(arrays, cfg.train.remix > 0, cfg.train.seed * 1000 + rank, saved.get(str(rank)),
                             pseudo_remix=cfg.train.pseudo_remix)
        return {name: pools[name] for name in names}
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="semisep-read")
    out = {}
    for name in names:
        state = restored_state(cfg, name, files[name], rank, world, saved)
        out[name] = ShardStream(files[name], cfg.transform, cfg.data.excerpt_frames, stream_seed(cfg, name),
                                state, executor, cfg.data.dtype)
    return out


def restored_state(cfg: Config, name: str, files: StreamFiles, rank: int, world: int, saved: dict) -> dict:
    """Worker ``rank``'s state of stream ``name``: new, the saved one, or the saved states of every
    worker re-split over ``world`` workers (when the world size or the window changed)."""
    window = window_rows(cfg)
    old = [saved[r][name] for r in sorted(saved, key=int) if "pieces" in saved[r].get(name, {})]
    if not old:  # a new run, or a checkpoint from before streamed data
        return initial_state(rank, world, window)
    if len(old) == world and all(int(s["window_rows"]) == window and int(s["world"]) == world for s in old):
        return old[rank]
    return resplit(old, world, files, stream_seed(cfg, name), window)[rank]


@dataclass
class ValidationSet:
    """The validation split in memory: planes per source (rows, 2, F, T) and each row's track."""

    planes: dict[str, torch.Tensor]
    track: torch.Tensor  # (rows,) int64, index into ``tracks``
    tracks: list[str]
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # semisep.training.validation's inputs


def read_validation(files: StreamFiles, cfg: Config) -> ValidationSet:
    """The whole validation split; refused past ``train.valid_max_mib`` before anything is read.
    Rows of one shard file are one track (a shard holds one track of one corpus)."""
    dtype_bytes = 2 if cfg.data.dtype == "float16" else 4
    row_bytes = 3 * 2 * cfg.transform.freq_bins * cfg.data.excerpt_frames * dtype_bytes
    mib = files.total * row_bytes / 2**20
    if mib > cfg.train.valid_max_mib:
        raise SemisepError(
            f"the validation split has {files.total} excerpts in {len(files.paths)} shards, {mib:.0f} MiB in memory, "
            f"more than train.valid_max_mib={cfg.train.valid_max_mib:g}; validate on fewer songs (a smaller "
            f"'valid' partition weight) or raise train.valid_max_mib")
    planes = read_stream(list(files.paths), list(SOURCE_COLUMNS), cfg)
    index = np.repeat(np.arange(len(files.paths)), files.rows)
    return ValidationSet(planes, torch.from_numpy(index.astype(np.int64)), list(files.paths))


def load_training_data(cfg: Config, rank: int = 0, world: int = 1, saved: dict | None = None,
                       validation: bool = True) -> tuple[dict, ValidationSet | None]:
    """(this worker's sources, the validation split or None when ``validation`` is false)."""
    files = stream_files(cfg)
    sources = training_sources(cfg, rank, world, saved, files)
    return sources, read_validation(files["valid"], cfg) if validation else None
