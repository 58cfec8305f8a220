"""Training data from the shards: which files, checked against the config, read by Ray Data.

Four training streams: ``paired`` (mixture, vocals, accompaniment) and the unpaired
``mixture``, ``vocals`` and ``accompaniment``; plus ``valid`` (paired, validation split).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from pipeline.config import Config
from pipeline.errors import SemisepError
from pipeline.manifest import read_manifest, shards_in_use
from pipeline.shards import SOURCE_COLUMNS, check_shard, decode

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


def ray_datasets(cfg: Config, paths: dict[str, list[str]]) -> dict:
    """Ray Data datasets per stream, decoded to float32 tensors (rows, F, T) per column."""
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    out = {}
    f, t, dtype = cfg.transform.freq_bins, cfg.data.excerpt_frames, cfg.data.dtype
    for stream, files in paths.items():
        if not files or (stream in SOURCE_COLUMNS and not cfg.train.semi_supervised):
            continue
        cols = stream_columns(stream)
        ds = ray.data.read_parquet(files, columns=cols + ["track_id", "start_frame"])
        out[stream] = ds.map_batches(_decode_batch, fn_kwargs={"cols": cols, "f": f, "t": t, "dtype": dtype},
                                     batch_format="numpy")
    return out


def _decode_batch(batch: dict[str, np.ndarray], cols: list[str], f: int, t: int, dtype: str) -> dict[str, np.ndarray]:
    """Binary cells -> float32 (rows, F, T) per column, plus ``key`` (track#start) to sort rows by."""
    out = {c: decode(list(batch[c]), f, t, dtype) for c in cols}
    out["key"] = np.array([f"{tr}#{st:09d}" for tr, st in zip(batch["track_id"], batch["start_frame"])])
    return out


def endless(iterable_factory, stream: str) -> Iterator[dict[str, torch.Tensor]]:
    """Repeat a finite batch iterator forever (each pass reshuffles)."""
    while True:
        empty = True
        for batch in iterable_factory():
            empty = False
            yield batch
        if empty:
            raise SemisepError(f"training stream {stream!r} yields no full batch: lower train.batch_size or add data")
