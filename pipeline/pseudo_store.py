"""The pseudo-label store: a teacher's separations of the unpaired mixtures, as shards with lineage.

A pseudo-label shard holds, for one unpaired mixture shard, the excerpts the teacher was most
decided on: the mixture, and the teacher's vocals and accompaniment (complex STFT planes; they add
up to the mixture), role ``pseudo``, plus each excerpt's ``confidence``. The store's manifest
(``manifest.parquet`` in the store's folder, default ``<data.store>/pseudo``) has one row per
source shard:

================  =======  ==========================================================
source_shard      string   the unpaired mixture shard that was separated
corpus, track_id  string   its corpus and track
shard             string   the pseudo-label shard
excerpts          int64    rows kept in it
source_excerpts   int64    rows of the source shard
teacher           string   the teacher: ``models:/<name>/<version>``, ``runs:/...`` or a folder
teacher_run_id    string   the MLflow run that trained the teacher (empty if unknown)
keep              float64  pseudo.keep when it was made
repet             float64  the weight of REPET-SIM's mask in the labels (pseudo.repet_weights)
scale             float64  the scale of the labels' vocal mask (pseudo.vocal_scales)
================  =======  ==========================================================

Its metadata holds the teacher, the REPET-SIM weight and vocal scale with the validation figures
that chose them, and the store's version (a hash of the teacher, ``keep``, the weight, the scale
and the source shards): a student's MLflow run records it as a dataset input, so a model names the
teacher whose labels it learned from, and the nightly job relabels when the champion changes.
"""

from __future__ import annotations

import hashlib
import json
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from semisep.pipeline import storage
from semisep.pipeline.errors import SemisepError

MANIFEST = "manifest.parquet"
COLUMNS = {"source_shard": "", "corpus": "", "track_id": "", "shard": "", "excerpts": 0, "source_excerpts": 0,
           "teacher": "", "teacher_run_id": "", "keep": 0.0,
           "repet": 0.0, "scale": 1.0}


def pseudo_dir(cfg) -> str:
    """``train.pseudo_labels``, or ``<data.store>/pseudo``: a path or URI."""
    return storage.normalize(cfg.train.pseudo_labels) if cfg.train.pseudo_labels else \
        storage.join(cfg.data.shards_dir, "pseudo")


def pseudo_version(teacher: str, keep: float, sources: list[str], repet: float = 0.0, scale: float = 1.0) -> str:
    # the defaults leave the hash of a store made before they existed unchanged
    blob = json.dumps([teacher, keep, sorted(os.path.basename(s) for s in sources)] + ([repet] if repet else [])
                      + ([{"scale": scale}] if scale != 1 else []))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_pseudo_manifest(directory: str, missing_ok: bool = False) -> tuple[pd.DataFrame, dict]:
    """(rows, metadata: teacher, version, repet, scale, repet_sdr) of the store in ``directory``; columns an
    older store lacks get their defaults."""
    path = storage.join(directory, MANIFEST)
    if not storage.exists(path):
        if missing_ok:
            return pd.DataFrame({k: pd.Series(dtype=type(v)) for k, v in COLUMNS.items()}), {}
        raise SemisepError(f"{path}: no pseudo-labels; make them with `semisep pseudo-label` (or the nightly job, "
                           "which labels with the champion) before training with train.pseudo > 0")
    fs, inner = storage.resolve(path)
    table = pq.read_table(inner, filesystem=fs)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items() if k.startswith(b"semisep.")}
    rows = table.to_pandas()
    for column, default in COLUMNS.items():
        if column not in rows:
            rows[column] = default
    return rows, {k.removeprefix("semisep."): v for k, v in meta.items()}


def write_pseudo_manifest(rows: pd.DataFrame, directory: str, teacher: str, version: str,
                          extra: dict[str, str] | None = None) -> str:
    """Atomically: a reader sees the old store or the new one. ``extra``: more metadata (strings)."""
    path = storage.join(directory, MANIFEST)
    table = pa.Table.from_pandas(rows[list(COLUMNS)], preserve_index=False)
    meta = {"semisep.teacher": teacher, "semisep.version": version}
    meta |= {f"semisep.{k}": v for k, v in (extra or {}).items()}
    table = table.replace_schema_metadata(meta)
    storage.write_atomic(path, lambda fs, p: pq.write_table(table, p, filesystem=fs))
    return path
