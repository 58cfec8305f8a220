"""Parquet shards of complex STFT excerpts: schema, atomic writing, reading back.

One shard holds the excerpts of one source track. Excerpts are the complex STFT (the shared
transform's bins), stored as real and imaginary planes, so training can mix sources exactly
(remixes, gain changes: the STFT is linear) and score estimates as signals; the model's
features are ``log1p`` of their magnitude (pipeline/spectrogram.py). Schema (version
``SCHEMA_VERSION``):

=============  ==========  ===============================================================
column         type        meaning
=============  ==========  ===============================================================
track_id       string      track name inside its corpus
corpus         string      corpus name from the config
split          string      train / valid / test
role           string      ``paired`` or mixture / vocals / accompaniment
start_frame    int32       first STFT frame of the excerpt in the track
mixture        binary      float16 [2, freq_bins, frames] (real, imaginary), C order
                           (paired rows and role=mixture)
vocals         binary      same, paired rows and role=vocals
accompaniment  binary      same, paired rows and role=accompaniment
=============  ==========  ===============================================================

Schema metadata: ``semisep.schema_version``, ``semisep.transform`` (JSON of TransformConfig),
``semisep.excerpt_frames``, ``semisep.dtype``. Readers refuse shards whose values differ.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from semisep.pipeline import storage
from semisep.pipeline.config import TransformConfig
from semisep.pipeline.errors import SemisepError

SCHEMA_VERSION = 2  # 1: log-magnitudes; 2: complex STFT planes
SOURCE_COLUMNS = ("mixture", "vocals", "accompaniment")
# rows per Parquet row group: a training stream reads a shard a row group at a time
# (training/stream.py), so a long track is not decompressed whole for one chunk of it
ROW_GROUP_ROWS = 64
# the store's table schema (pipeline/table.py): every column any shard may hold; a shard of one
# unpaired role leaves the other planes out, and readers of the table see them as null
TABLE_SCHEMA = pa.schema([("track_id", pa.string()), ("corpus", pa.string()), ("split", pa.string()),
                          ("role", pa.string()), ("start_frame", pa.int32())]
                         + [(c, pa.binary()) for c in SOURCE_COLUMNS])


def excerpt_starts(total_frames: int, excerpt_frames: int, hop: int) -> list[int]:
    """Start frames of the full-length excerpts of a track; the tail is covered by a last one."""
    if total_frames < excerpt_frames:
        return []
    starts = list(range(0, total_frames - excerpt_frames + 1, hop))
    if starts[-1] != total_frames - excerpt_frames:
        starts.append(total_frames - excerpt_frames)
    return starts


def write_shard(path: str | os.PathLike, meta: dict, sources: dict[str, np.ndarray],
                starts: list[int], transform: TransformConfig, excerpt_frames: int,
                dtype: str = "float16") -> int:
    """Write excerpts of ``sources`` (name -> complex STFT (freq_bins, total_frames)) as one shard, atomically.

    meta holds track_id, corpus, split, role. ``path`` is a local path or a URI (pipeline/storage.py).
    Returns the number of rows.
    """
    rows = {}
    for name, spec in sources.items():
        assert spec.shape[0] == transform.freq_bins and np.iscomplexobj(spec), (name, spec.shape, spec.dtype)
        planes = np.stack([spec.real, spec.imag]).astype(dtype)  # (2, F, total_frames)
        rows[name] = [planes[:, :, s:s + excerpt_frames] for s in starts]
    return write_rows(path, meta, rows, starts, transform, excerpt_frames, dtype)


def write_rows(path: str | os.PathLike, meta: dict, rows: dict, starts: list[int], transform: TransformConfig,
               excerpt_frames: int, dtype: str = "float16", extra: dict[str, pa.Array] | None = None) -> int:
    """Write excerpts already cut (column -> a sequence or array of (2, F, excerpt_frames) planes) as one
    shard, atomically; ``extra`` columns (e.g. a pseudo-label's confidence) go along. Returns the rows."""
    n = len(starts)
    columns: dict[str, pa.Array] = {
        "track_id": pa.array([meta["track_id"]] * n, pa.string()),
        "corpus": pa.array([meta["corpus"]] * n, pa.string()),
        "split": pa.array([meta["split"]] * n, pa.string()),
        "role": pa.array([meta["role"]] * n, pa.string()),
        "start_frame": pa.array(starts, pa.int32()),
    }
    for name, planes in rows.items():
        assert len(planes) == n, (name, len(planes), n)
        columns[name] = pa.array([np.ascontiguousarray(p, dtype=dtype).tobytes() for p in planes], pa.binary())
    columns |= extra or {}
    table = pa.table(columns).replace_schema_metadata(shard_metadata(transform, excerpt_frames, dtype))
    storage.write_atomic(str(path), lambda fs, p: pq.write_table(table, p, compression="zstd", filesystem=fs,
                                                                 row_group_size=ROW_GROUP_ROWS))
    return n


def shard_metadata(transform: TransformConfig, excerpt_frames: int, dtype: str) -> dict[str, str]:
    return {
        "semisep.schema_version": str(SCHEMA_VERSION),
        "semisep.transform": json.dumps(transform.to_dict(), sort_keys=True),
        "semisep.excerpt_frames": str(excerpt_frames),
        "semisep.dtype": dtype,
    }


def check_shard(path: str | os.PathLike, transform: TransformConfig, excerpt_frames: int) -> str:
    """Raise SemisepError if the shard was built with another schema, transform or excerpt size.

    Returns the stored dtype.
    """
    try:
        fs, inner = storage.resolve(str(path))
        meta = pq.read_schema(inner, filesystem=fs).metadata
    except (OSError, pa.ArrowInvalid) as exc:
        raise SemisepError(f"{path}: not a readable Parquet shard ({exc})") from None
    return check_metadata(meta, str(path), transform, excerpt_frames)


def check_metadata(meta: dict | None, path: str, transform: TransformConfig, excerpt_frames: int) -> str:
    """check_shard on a shard's schema metadata already read (bytes keys and values, as pyarrow
    gives them); returns the stored dtype."""
    meta = {k.decode(): v.decode() for k, v in (meta or {}).items()}
    version = meta.get("semisep.schema_version")
    if version != str(SCHEMA_VERSION):
        raise SemisepError(
            f"{path}: shard schema version {version} differs from {SCHEMA_VERSION} that this "
            "semisep reads; re-run `semisep ingest`"
        )
    stored = TransformConfig(**json.loads(meta["semisep.transform"]))
    transform.check_same(stored, str(path))
    if int(meta["semisep.excerpt_frames"]) != excerpt_frames:
        raise SemisepError(
            f"{path}: excerpts of {meta['semisep.excerpt_frames']} frames, the config asks for "
            f"{excerpt_frames} (data.excerpt_frames); re-run `semisep ingest` with this config"
        )
    return meta["semisep.dtype"]


def decode_column(column: pa.ChunkedArray | pa.Array, freq_bins: int, frames: int, dtype: str = "float16",
                  path: str = "shard", out: np.ndarray | None = None) -> np.ndarray:
    """Binary excerpt cells -> (rows, 2, freq_bins, frames) real and imaginary planes, in ``dtype``
    (the shard's storage type: float16 rows stay half the memory until a batch is made), or into
    ``out`` (converted to its type). Reads the cells' bytes straight from Arrow's buffers (one
    copy); a cell of another size is an error naming ``path``."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    rows = len(column)
    if out is not None and out.dtype != np.dtype(dtype):
        out[:] = decode_column(column, freq_bins, frames, dtype, path)
        return out
    out = np.empty((rows, 2, freq_bins, frames), dtype) if out is None else out
    assert out.shape == (rows, 2, freq_bins, frames) and out.flags.c_contiguous, out.shape
    if rows == 0:
        return out
    if column.null_count:
        raise SemisepError(f"{path}: {column.null_count} empty excerpt cells; re-run `semisep ingest`")
    offsets = np.frombuffer(column.buffers()[1], np.int32)[column.offset:column.offset + rows + 1]
    size = out[0].nbytes
    if np.any(np.diff(offsets) != size):
        raise SemisepError(f"{path}: excerpt cells of {sorted(set(np.diff(offsets).tolist()))[:3]} bytes, "
                           f"expected {size} ({dtype} [2, {freq_bins}, {frames}]); re-run `semisep ingest`")
    data = np.frombuffer(column.buffers()[2], np.uint8)[offsets[0]:offsets[-1]]
    out.reshape(-1).view(np.uint8)[:] = data
    return out


def read_excerpts(paths: list[str], column: str, transform: TransformConfig,
                  excerpt_frames: int) -> np.ndarray:
    """All excerpts of ``column`` in ``paths`` as (rows, 2, freq_bins, frames) planes in the shards'
    storage type, rows in the order of ``paths`` then ``start_frame``; no Ray needed."""
    arrays = []
    for path in paths:
        dtype = check_shard(path, transform, excerpt_frames)
        fs, inner = storage.resolve(path)
        cells = pq.read_table(inner, columns=[column], filesystem=fs).column(column)
        arrays.append(decode_column(cells, transform.freq_bins, excerpt_frames, dtype, path))
    if not arrays:
        return np.zeros((0, 2, transform.freq_bins, excerpt_frames), np.float16)
    return np.concatenate(arrays)
