"""The manifest of a shard store: one row per source file, its status and the shard holding it.

Columns (``COLUMNS``, in order, with the value a row starts from):

============  =======  =====================================================================
corpus        string   corpus name from the config
split         string   train / valid / test
role          string   ``paired`` or mixture / vocals / accompaniment
track_id      string   track name inside its corpus
sources       string   which sources of the track this file feeds (comma separated)
path          string   the source file
size          int64    bytes, and ``mtime_ns``: a file whose size and mtime are unchanged is
mtime_ns      int64    not re-read on the next run
file_hash     string   sha256 of the file's bytes
duration      float64  seconds; ``sample_rate`` and ``channels`` as decoded
status        string   ``ok``, ``error`` (with ``error``: the reason) or ``skipped`` (a track
                       the adapter leaves out on purpose, e.g. an instrumental MedleyDB song)
track_hash    string   hash of the track's file hashes, its layout and the ingestion recipe
shard         string   the Parquet shard holding the track's excerpts (``ok`` rows)
excerpts      int64    rows in that shard
processed     bool     decoded by the run that wrote this manifest (false: reused)
============  =======  =====================================================================

The dataset version is a hash of the shards in use and the transform: two stores with the same
version hold the same training data. A lock file keeps two ingestions off one store.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from semisep.pipeline import storage
from semisep.pipeline.config import TransformConfig
from semisep.pipeline.errors import SemisepError

MANIFEST = "manifest.parquet"
LOCK = ".ingest.lock"
COLUMNS = {"corpus": "", "split": "", "role": "", "track_id": "", "sources": "", "path": "", "size": 0,
           "mtime_ns": 0, "file_hash": "", "duration": 0.0, "sample_rate": 0, "channels": 0, "status": "ok",
           "error": "", "track_hash": "", "shard": "", "excerpts": 0, "processed": False}


def empty_manifest() -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series(dtype=type(v)) for k, v in COLUMNS.items()})


def dataset_version(manifest: pd.DataFrame, transform: TransformConfig) -> str:
    """Hash of the shards in use and the transform: equal versions mean equal training data."""
    ok = manifest[manifest.status == "ok"]
    blob = json.dumps([transform.to_dict(), sorted(set(map(os.path.basename, ok.shard)))])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_manifest(manifest: pd.DataFrame, shards_dir: str, version: str) -> str:
    """Write atomically: a reader sees the old or the new manifest (``shards_dir``: path or URI)."""
    path = storage.join(shards_dir, MANIFEST)
    table = pa.Table.from_pandas(manifest[list(COLUMNS)], preserve_index=False)
    table = table.replace_schema_metadata({"semisep.dataset_version": version})
    storage.write_atomic(path, lambda fs, p: pq.write_table(table, p, filesystem=fs))
    return path


def read_manifest(shards_dir: str, missing_ok: bool = False) -> tuple[pd.DataFrame, str]:
    path = storage.join(shards_dir, MANIFEST)
    if not storage.exists(path):
        if missing_ok:
            return empty_manifest(), ""
        raise SemisepError(f"{path}: no manifest; run `semisep ingest` first")
    fs, inner = storage.resolve(path)
    table = pq.read_table(inner, filesystem=fs)
    version = (table.schema.metadata or {}).get(b"semisep.dataset_version", b"").decode()
    manifest = table.to_pandas()
    if list(manifest.columns) != list(COLUMNS):
        if not missing_ok:
            raise SemisepError(f"{path}: written by another semisep version; re-run `semisep ingest`")
        return empty_manifest(), ""
    return manifest, version


def shards_in_use(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per shard of the current version (a paired track has one shard for its files)."""
    ok = manifest[(manifest.status == "ok") & (manifest.excerpts > 0)]
    return ok.drop_duplicates("shard")


@contextmanager
def file_lock(path: str | os.PathLike, wait: bool = False):
    """An exclusive ``flock`` on ``path`` for the block, with the holder written into the file.

    ``wait``: block until it is free; otherwise raise ``BlockingIOError`` carrying the holder.
    ``flock`` is released by the kernel when the holder dies: a killed run never leaves a stale lock.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            fh.seek(0)
            raise BlockingIOError(fh.read().strip() or "another process") from None
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
            fh.flush()
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def lock_path(shards_dir: str, workdir: str) -> str:
    """The ingestion lock: in the store when it is a file system (local or a shared mount, where
    ``flock`` works), else (object stores) in ``<workdir>/locks``: then only ingestions started from
    machines sharing that workdir exclude each other; run nightly ingestion from one place (the head)."""
    if storage.is_local(shards_dir):
        return os.path.join(storage.local_path(shards_dir), LOCK)
    key = hashlib.sha256(shards_dir.encode()).hexdigest()[:16]
    return os.path.join(os.path.abspath(workdir), "locks", f"ingest-{key}.lock")


@contextmanager
def store_lock(shards_dir: str, workdir: str = "."):
    """Hold the store's lock for the block; a second ingestion of the same store is refused."""
    try:
        with file_lock(lock_path(shards_dir, workdir)):
            yield
    except BlockingIOError as busy:
        raise SemisepError(
            f"{shards_dir} is being ingested by {busy}; wait for that run to finish "
            "(two ingestions of one store at once are refused)"
        ) from None
