"""The pseudo-label store: a teacher's separations of the unpaired mixtures, as shards with lineage.

A pseudo-label shard holds, for one unpaired mixture shard, the excerpts the teacher was most
decided on: the mixture, and the teacher's vocals and accompaniment (complex STFT planes; they add
up to the mixture), role ``pseudo``, plus each excerpt's ``confidence``. The store (default
``<data.store>/_pseudo``) is a Delta table of those shards, like the shard store
(pipeline/table.py): every relabel is one commit that adds the new labels and removes the old, so a
training run pins a version (``pseudo.version``) and reads it whatever relabelling runs meanwhile.
Its manifest (the Delta table in its ``_labels`` folder, one overwrite per relabel) has one row
per source shard:

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

The commit's metadata holds the teacher, the REPET-SIM weight and vocal scale with the validation figures
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

from semisep.pipeline import storage, table
from semisep.pipeline.errors import SemisepError
from semisep.pipeline.shards import TABLE_SCHEMA

LABELS = "_labels"
OLD_LAYOUT = ("a pseudo-label store", "label the mixtures again (`semisep pseudo-label`) into a new folder")
COLUMNS = {"source_shard": "", "corpus": "", "track_id": "", "shard": "", "excerpts": 0, "source_excerpts": 0,
           "teacher": "", "teacher_run_id": "", "keep": 0.0,
           "repet": 0.0, "scale": 1.0}


def pseudo_dir(cfg) -> str:
    """``train.pseudo_labels``, or ``<data.store>/_pseudo`` (a folder Delta leaves out of the shard
    store's table): a path or URI."""
    return storage.normalize(cfg.train.pseudo_labels) if cfg.train.pseudo_labels else \
        storage.join(cfg.data.shards_dir, "_pseudo")


def pseudo_version(teacher: str, keep: float, sources: list[str], repet: float = 0.0, scale: float = 1.0) -> str:
    # the defaults leave the hash of a store made before they existed unchanged
    blob = json.dumps([teacher, keep, sorted(os.path.basename(s) for s in sources)] + ([repet] if repet else [])
                      + ([{"scale": scale}] if scale != 1 else []))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_pseudo_manifest(directory: str, missing_ok: bool = False) -> tuple[pd.DataFrame, dict]:
    """(rows, metadata: teacher, version, repet, scale, repet_sdr) of the latest label set in
    ``directory``; columns an older store lacks get their defaults."""
    table.refuse_old_layout(directory, *OLD_LAYOUT)
    found = table.read_frame(storage.join(directory, LABELS))
    if found is None:
        if missing_ok:
            return pd.DataFrame({k: pd.Series(dtype=type(v)) for k, v in COLUMNS.items()}), {}
        raise SemisepError(f"{directory}: no pseudo-labels; make them with `semisep pseudo-label` (or the nightly job, "
                           "which labels with the champion) before training with train.pseudo > 0")
    rows, meta = found
    for column, default in COLUMNS.items():
        if column not in rows:
            rows[column] = default
    return rows, meta


def write_pseudo_manifest(rows: pd.DataFrame, directory: str, teacher: str, version: str,
                          extra: dict[str, str] | None = None) -> int:
    """Commit the label set ``rows`` describes as one new version of the store's table (its shards
    added, the previous set's removed: their files stay until a vacuum), then its manifest.
    ``extra``: more metadata (strings). Returns the table version."""
    meta = {"teacher": teacher, "version": version} | (extra or {})
    used = rows[rows.excerpts > 0]
    current = set(table.files(directory)[0].shard) if table.is_table(directory) else set()
    added = {s: int(n) for s, n in zip(used.shard, used.excerpts) if s not in current}
    removed = sorted(current - set(used.shard))
    schema = TABLE_SCHEMA.append(pa.field("confidence", pa.float32()))
    number = table.commit(directory, added, removed, "relabel", meta, schema=schema)
    table.write_frame(storage.join(directory, LABELS), rows[list(COLUMNS)], "relabel", meta | {"table_version": number})
    for orphan in table.untracked(directory, lambda name: name.startswith("pseudo-") and name.endswith(".parquet")):
        storage.delete(orphan)  # labels of a run killed before its commit
    return number


def pinned_label_set(directory: str, version: int = -1) -> tuple[pd.DataFrame, dict, int]:
    """(shards of the label table's ``version`` (-1: the latest): shard, rows; the metadata of the
    commit that made it: teacher, version, ...; the version read)."""
    frame, read = table.files(directory, None if version < 0 else version, setting="pseudo.version")
    return frame, table.commit_metadata(directory, read), read
