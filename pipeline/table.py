"""The shard store as versioned Delta Lake tables: commits, pinned versions, retention.

A store (``data.store``) is a Delta table whose data files are the Parquet shards (one per track,
written by ingestion under content-addressed names). Every ingest that changes the data is one
commit: it adds the new shards and removes the replaced ones in a single transaction, so the
dataset version *is* the table version, and a reader of version N sees exactly N's files, whatever
ran since. Removing a shard from the table does not delete its file: ``vacuum`` does, once no
version younger than ``data.retention_days`` needs it (Delta's tombstones). The per-source-file
bookkeeping (hashes, failures, skipped files: pipeline/manifest.py) is a Delta table of its own in
the store's ``_sources`` folder, one overwrite per ingest; the pseudo-label store is a Delta table
in the same way (pipeline/pseudo_store.py). Folders starting with ``_`` or ``.`` are not data to
Delta: they hold those tables, the log and the lock.

Any Delta reader opens a store: ``deltalake.DeltaTable("<store>").to_pandas()`` (docs/corpora.md).
"""

from __future__ import annotations

import json
import time
from urllib.parse import unquote

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from semisep.pipeline import storage
from semisep.pipeline.errors import SemisepError

LOG = "_delta_log"
OLD_MANIFEST = "manifest.parquet"  # the store's layout before versioned tables


def is_table(root: str) -> bool:
    return storage.exists(storage.join(root, LOG))


CONVERT = "convert it with `semisep convert-store` (same config), or ingest into a new data.store"


def refuse_old_layout(root: str, what: str = "a shard store", todo: str = CONVERT) -> None:
    """A store written before versioned tables holds ``manifest.parquet`` and no Delta log."""
    if not is_table(root) and storage.exists(storage.join(root, OLD_MANIFEST)):
        raise SemisepError(f"{root}: {what} in the layout before versioned tables ({OLD_MANIFEST}, no {LOG}); {todo}")


def _table(root: str, version: int | None = None):
    from deltalake import DeltaTable

    return DeltaTable(storage.normalize(root), version=version)


def latest_version(root: str) -> int | None:
    """The table's newest version that changed its data (a vacuum's own commits do not), None
    where there is no table yet."""
    if not is_table(root):
        return None
    data = [int(e["version"]) for e in _table(root).history() if not str(e.get("operation", "")).startswith("VACUUM")]
    return max(data) if data else _table(root).version()


def table_id(root: str) -> str:
    """The table's id (Delta's metadata id): a store deleted and ingested anew starts its versions at
    0 again under another id, so (id, version) names the data."""
    return _table(root).metadata().id if is_table(root) else ""


def _relative(root: str, path: str) -> str:
    root, path = storage.normalize(root).rstrip("/"), storage.normalize(path)
    assert path.startswith(root + "/"), (root, path)
    return path[len(root) + 1:]


def _add(root: str, path: str, rows: int):
    from deltalake.transaction import AddAction

    fs, inner = storage.resolve(path)
    info = fs.get_file_info(inner)
    return AddAction(path=_relative(root, path), size=info.size, partition_values={},
                     modification_time=int((info.mtime_ns or time.time_ns()) // 1_000_000), data_change=True,
                     stats=json.dumps({"numRecords": int(rows)}))


def table_schema(paths: list[str]) -> pa.Schema:
    """The union of the files' columns (shards of one role lack the others' planes), metadata dropped."""
    fields: dict[str, pa.Field] = {}
    for path in paths:
        fs, inner = storage.resolve(path)
        for f in pq.read_schema(inner, filesystem=fs):
            fields.setdefault(f.name, f.with_nullable(True))
    return pa.schema(list(fields.values()))


def _properties(kind: str, metadata: dict | None):
    """The commit's record: ``semisep.kind`` and ``semisep.<key>`` for each metadata item (strings)."""
    from deltalake.transaction import CommitProperties

    return CommitProperties(custom_metadata={"semisep.kind": kind} | {f"semisep.{k}": str(v)
                                                                     for k, v in (metadata or {}).items()})


def commit(root: str, added: dict[str, int], removed: list[str], kind: str, metadata: dict | None = None,
           removed_at_ms: int | None = None, schema: pa.Schema | None = None) -> int:
    """One transaction: add ``added`` (file location -> rows), remove ``removed`` (locations); files
    stay on disk. Creates the table on first use. Returns the new version (the current one when
    there is nothing to change). ``kind`` and ``metadata`` go into the commit's record;
    ``removed_at_ms``: the removals' time (default now), from which their retention counts.
    ``schema``: the table's columns when it is created (default: those of the first files); a file
    with a column the table lacks adds it."""
    from deltalake import Field, Schema
    from deltalake.transaction import RemoveAction, create_table_with_add_actions

    props = _properties(kind, metadata)
    adds = [_add(root, p, n) for p, n in sorted(added.items())]
    if not is_table(root):
        columns = list(schema or []) + [f for f in (table_schema(sorted(added)) if added else [])
                                        if schema is None or f.name not in schema.names]
        create_table_with_add_actions(storage.normalize(root), Schema.from_arrow(pa.schema(columns)), adds, mode="error",
                                      commit_properties=props)
        return 0
    table = _table(root)
    if not adds and not removed:
        return latest_version(root)
    now = int(time.time() * 1000) if removed_at_ms is None else removed_at_ms
    removes = [RemoveAction(path=_relative(root, p), deletion_timestamp=now, data_change=True) for p in sorted(removed)]
    known = pa.schema(table.schema().to_arrow())
    new = [f for f in table_schema(sorted(added)) if f.name not in known.names] if adds else []
    if new:  # a column no file had before: the table's schema grows first (a commit of its own)
        table.alter.add_columns([Field.from_arrow(f) for f in new])
        table = _table(root)
    table.create_write_transaction(adds + removes, mode="append", schema=table.schema(), commit_properties=props)
    return latest_version(root)


def files(root: str, version: int | None = None, setting: str = "data.version",
          retention_setting: str = "data.retention_days") -> tuple[pd.DataFrame, int]:
    """(one row per data file of ``version`` (default: the latest): ``shard`` location and ``rows``;
    the version read). A version the table never had, or one whose files a vacuum removed, is an
    error naming ``setting``."""
    refuse_old_layout(root)
    if not is_table(root):
        raise SemisepError(f"{root}: no shard store here; run `semisep ingest` first")
    latest = latest_version(root)
    if version is None:
        version = latest
    if not 0 <= version <= _table(root).version():
        raise SemisepError(f"{setting}={version}: {root} has versions 0 to {latest}")
    try:
        table = _table(root, version)
    except Exception as exc:  # noqa: BLE001 - deltalake raises several types for a version it cannot load
        raise SemisepError(f"{setting}={version}: {root} cannot load this version ({' '.join(str(exc).split())[:160]}); "
                           f"its log entry is gone (older than Delta's log retention)") from None
    actions = pa.table(table.get_add_actions(flatten=True))
    paths = [storage.join(storage.normalize(root), unquote(p)) for p in actions.column("path").to_pylist()]
    rows = [int(n or 0) for n in actions.column("num_records").to_pylist()] if "num_records" in actions.column_names \
        else [0] * len(paths)
    frame = pd.DataFrame({"shard": paths, "rows": rows}).sort_values("shard").reset_index(drop=True)
    present = set(storage.list_files(storage.normalize(root), lambda name: name.endswith(".parquet")))
    missing = [p for p in frame.shard if p not in present]  # one listing, not a request per file
    if missing:
        raise SemisepError(
            f"{setting}={table.version()}: {len(missing)} of its {len(frame)} files are gone from {root} (first: "
            f"{missing[0]}): a vacuum removed them, as it does once a version has been replaced for longer than "
            f"{retention_setting}; train on a kept version (latest: {latest}) or keep versions longer")
    return frame, table.version()


def history(root: str) -> pd.DataFrame:
    """One row per commit that changed the data: version, time, kind (ingest, relabel, ...), with
    its semisep metadata (a vacuum's commits left out)."""
    rows = []
    for entry in _table(root).history():
        if str(entry.get("operation", "")).startswith("VACUUM"):
            continue
        rows.append({"version": int(entry["version"]), "time": pd.to_datetime(entry.get("timestamp", 0), unit="ms"),
                     "operation": entry.get("operation", "")}
                    | {k.removeprefix("semisep."): v for k, v in entry.items() if str(k).startswith("semisep.")})
    return pd.DataFrame(rows).sort_values("version").reset_index(drop=True)


def _logged_paths(root: str) -> set[str]:
    """Every data file the log still mentions: the current version's, and every file added by a
    commit whose entry is still in ``_delta_log`` (older versions' files are among them)."""
    import pyarrow.fs as pafs

    current = pa.table(_table(root).get_add_actions(flatten=True)).column("path").to_pylist()
    paths = {storage.join(storage.normalize(root), unquote(p)) for p in current}
    fs, log = storage.resolve(storage.join(root, LOG))

    for info in fs.get_file_info(pafs.FileSelector(log)):
        if not info.base_name.endswith(".json"):
            continue
        with fs.open_input_stream(info.path) as fh:
            for line in fh.read().decode().splitlines():
                add = json.loads(line).get("add") if line.strip() else None
                if add:
                    paths.add(storage.join(storage.normalize(root), unquote(add["path"])))
    return paths


def untracked(root: str, name_filter=lambda name: name.endswith(".parquet")) -> list[str]:
    """Data files under ``root`` that no commit ever added (a run killed between writing its files
    and committing them left them): outside the folders Delta ignores (``_*``, ``.*``)."""
    root = storage.normalize(root)
    logged = _logged_paths(root) if is_table(root) else set()
    found = storage.list_files(root, name_filter)
    visible = [p for p in found if not any(part.startswith(("_", ".")) for part in _relative(root, p).split("/"))]
    return [p for p in visible if p not in logged]


def vacuum(root: str, retention_days: float) -> list[str]:
    """Delete the files no version younger than ``retention_days`` needs (removed from the table
    more than that long ago). Returns the deleted locations."""
    if not is_table(root):
        return []
    hours = int(round(retention_days * 24))
    due = _table(root).vacuum(retention_hours=hours, dry_run=True, enforce_retention_duration=False)
    due = [storage.join(storage.normalize(root), unquote(p)) for p in due]
    due = [p for p in due if storage.exists(p)]  # a tombstone stays listed after its file is gone
    if due:  # a vacuum commits twice (start, end): only when there is something to delete
        _table(root).vacuum(retention_hours=hours, dry_run=False, enforce_retention_duration=False)
    return due


def write_frame(root: str, frame: pd.DataFrame, kind: str, metadata: dict | None = None) -> int:
    """Overwrite a small bookkeeping table (a manifest) with ``frame`` as one commit; returns its version."""
    from deltalake import write_deltalake

    props = _properties(kind, metadata)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    write_deltalake(storage.normalize(root), table, mode="overwrite", schema_mode="overwrite", commit_properties=props)
    return _table(root).version()


def read_frame(root: str, version: int | None = None) -> tuple[pd.DataFrame, dict] | None:
    """(the table as pandas, the semisep metadata of the commit that wrote it); None without a table."""
    if not is_table(root):
        return None
    table = _table(root, version)
    return table.to_pandas(), commit_metadata(root, table.version())


def commit_metadata(root: str, version: int) -> dict:
    """The semisep metadata of the commit that made ``version`` (read from the latest table's
    history: deltalake numbers the history of a time-travelled table wrongly)."""
    entry = next((e for e in _table(root).history() if int(e["version"]) == version), {})
    return {k.removeprefix("semisep."): v for k, v in entry.items() if str(k).startswith("semisep.")}
