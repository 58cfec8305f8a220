"""Training data from the shards: which files, checked against the config, read into memory.

Four training streams: ``paired`` (mixture, vocals, accompaniment) and the unpaired
``mixture``, ``vocals`` and ``accompaniment``; plus ``valid`` (paired, validation split).

Every worker reads the shard files itself (pyarrow, any path or URI every node reaches), in a
fixed order: files sorted by name, rows by start frame. A worker of rank r among w keeps the
rows r, r + w, r + 2w, ... of every training stream, so which rows a worker holds depends only
on the data and (r, w): two runs with the same seed see the same batches, and a resumed run
continues on the rows its checkpoint's positions refer to. The validation split is read whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from semisep.pipeline.config import Config
from semisep.pipeline.errors import SemisepError
from semisep.pipeline.manifest import read_manifest, shards_in_use
from semisep.pipeline.shards import SOURCE_COLUMNS, check_shard, read_excerpts

STREAMS = ("paired", "mixture", "vocals", "accompaniment")


def stream_paths(cfg: Config) -> dict[str, list[str]]:
    """Shard files per stream, from the manifest (so stale files on disk are never read)."""
    manifest, _ = read_manifest(cfg.data.shards_dir)
    ok = shards_in_use(manifest)
    paired = ok[ok.role == "paired"]
    out = {
        "paired": sorted(paired[paired.split == "train"].shard),
        "valid": sorted(paired[paired.split == "valid"].shard),
    }
    for role in SOURCE_COLUMNS:
        out[role] = sorted(ok[(ok.role == role) & (ok.split == "train")].shard)
    if not out["paired"]:
        raise SemisepError(f"{cfg.data.shards_dir}: no paired training shards; ingest a paired corpus with a train split")
    if not out["valid"]:
        raise SemisepError(f"{cfg.data.shards_dir}: no validation shards; give a paired corpus a 'valid' split")
    if cfg.train.semi_supervised:
        missing = [r for r in SOURCE_COLUMNS if not out[r]]
        if missing:
            raise SemisepError(
                f"{cfg.data.shards_dir}: semi-supervised training needs unpaired train shards for "
                f"{', '.join(missing)}; ingest an unpaired corpus or set train.alpha=0 train.beta=0"
            )
    for paths in out.values():
        for path in paths:
            check_shard(path, cfg.transform, cfg.data.excerpt_frames)
    return out


def stream_columns(stream: str) -> list[str]:
    return list(SOURCE_COLUMNS) if stream in ("paired", "valid") else [stream]


def needed_streams(cfg: Config, paths: dict[str, list[str]]) -> list[str]:
    """The training streams this run reads: unpaired ones only for semi-supervised or remix runs."""
    unpaired = cfg.train.semi_supervised or cfg.train.remix > 0
    return [s for s in STREAMS if paths.get(s) and (s == "paired" or unpaired)]


def read_stream(paths: list[str], columns: list[str], cfg: Config, rank: int = 0,
                world: int = 1) -> dict[str, torch.Tensor]:
    """Column -> planes (rows, 2, F, T) in the shards' storage type, rows ``rank::world``."""
    out = {}
    for column in columns:
        planes = read_excerpts(paths, column, cfg.transform, cfg.data.excerpt_frames)[rank::world]
        out[column] = torch.from_numpy(np.ascontiguousarray(planes))
    return out


@dataclass
class ValidationSet:
    """The validation split in memory: planes per source (rows, 2, F, T) and each row's track."""

    planes: dict[str, torch.Tensor]
    track: torch.Tensor  # (rows,) int64, index into ``tracks``
    tracks: list[str]
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # semisep.training.validation's inputs


def read_validation(paths: list[str], cfg: Config) -> ValidationSet:
    import pyarrow.parquet as pq

    from semisep.pipeline import storage

    planes = read_stream(paths, list(SOURCE_COLUMNS), cfg)
    names, index = [], []
    for path in paths:  # the same order read_excerpts uses
        fs, inner = storage.resolve(path)
        ids = pq.read_table(inner, columns=["track_id"], filesystem=fs).column("track_id").to_pylist()
        for track in ids:
            if not names or names[-1] != track:
                names.append(track)
            index.append(len(names) - 1)
    return ValidationSet(planes, torch.tensor(index, dtype=torch.long), names)


def load_training_data(cfg: Config, rank: int = 0, world: int = 1) -> tuple[dict[str, dict[str, torch.Tensor]], ValidationSet]:
    """(training streams of this worker, the whole validation split), checked against the config."""
    paths = stream_paths(cfg)
    streams = {}
    for stream in needed_streams(cfg, paths):
        streams[stream] = read_stream(paths[stream], stream_columns(stream), cfg, rank, world)
        rows = len(next(iter(streams[stream].values())))
        if rows == 0:
            raise SemisepError(f"training stream {stream!r} has no rows for worker {rank} of {world}: "
                               "add data or use fewer workers")
    return streams, read_validation(paths["valid"], cfg)
