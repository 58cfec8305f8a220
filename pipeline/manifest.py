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

The manifest is a Delta table in the store's ``_sources`` folder, rewritten by every ingest; the
shards themselves are the data files of the store's own Delta table (pipeline/table.py), whose
version is the dataset version. A lock file keeps two ingestions off one store.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from semisep.pipeline import storage, table
from semisep.pipeline.errors import SemisepError

SOURCES = "_sources"
LOCK = ".ingest.lock"
COLUMNS = {"corpus": "", "split": "", "role": "", "track_id": "", "sources": "", "path": "", "size": 0,
           "mtime_ns": 0, "file_hash": "", "duration": 0.0, "sample_rate": 0, "channels": 0, "status": "ok",
           "error": "", "track_hash": "", "shard": "", "excerpts": 0, "processed": False}


def empty_manifest() -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series(dtype=type(v)) for k, v in COLUMNS.items()})


def write_manifest(manifest: pd.DataFrame, shards_dir: str, version: int) -> str:
    """One commit to the ``_sources`` table, naming the store's table ``version`` it describes."""
    path = storage.join(shards_dir, SOURCES)
    table.write_frame(path, manifest[list(COLUMNS)], "ingest", {"dataset_version": version})
    return path


def read_manifest(shards_dir: str, missing_ok: bool = False) -> tuple[pd.DataFrame, str]:
    """(the latest manifest, the store's latest table version as a string; "" without a store)."""
    table.refuse_old_layout(shards_dir)
    found = table.read_frame(storage.join(shards_dir, SOURCES))
    if found is None:
        if missing_ok:
            return empty_manifest(), ""
        raise SemisepError(f"{shards_dir}: no shard store here; run `semisep ingest` first")
    manifest, _meta = found
    if list(manifest.columns) != list(COLUMNS):
        if not missing_ok:
            raise SemisepError(f"{shards_dir}: written by another semisep version; re-run `semisep ingest`")
        return empty_manifest(), ""
    latest = table.latest_version(shards_dir)
    return manifest, "" if latest is None else str(latest)


def shards_in_use(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per shard of the current version (a paired track has one shard for its files)."""
    ok = manifest[(manifest.status == "ok") & (manifest.excerpts > 0)]
    return ok.drop_duplicates("shard")


def version_shards(shards_dir: str, version: int = -1) -> tuple[pd.DataFrame, int]:
    """(one row per shard of the store's table ``version`` (-1: the latest): shard, corpus, split,
    role, excerpts; the version read). Read from the table, not the manifest, so a pinned version
    stays what it was whatever ingestion ran since."""
    frame, read = table.files(shards_dir, None if version < 0 else version)
    root = storage.normalize(shards_dir).rstrip("/")
    parts = [p[len(root) + 1:].split("/") for p in frame.shard]
    out = pd.DataFrame({"shard": frame.shard, "corpus": ["/".join(p[:-3]) for p in parts],
                        "split": [p[-3] for p in parts], "role": [p[-2] for p in parts], "excerpts": frame.rows})
    return out[out.excerpts > 0].reset_index(drop=True), read


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
