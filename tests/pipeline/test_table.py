"""The versioned shard store (pipeline/table.py): commits, pinned versions, retention, other readers."""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from semisep.pipeline import table
from semisep.pipeline.config import load_config
from semisep.pipeline.errors import SemisepError
from semisep.pipeline.shards import TABLE_SCHEMA, write_shard

FRAMES = 16
DAY_MS = 86_400_000


def _config(tmp_path):
    return load_config(None, [f"data.workdir={tmp_path}", f"data.excerpt_frames={FRAMES}", "data.excerpt_hop=16",
                              "model.depth=2", "transform.freq_bins=16", "transform.n_fft=32", "transform.hop_length=16"])


def _shard(cfg, name: str, role: str, rows: int, seed: int) -> str:
    """A shard of ``rows`` random excerpts at the store's layout (corpus/split/role/part-*.parquet)."""
    folder = os.path.join(cfg.data.shards_dir, "c", "train", role)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"part-{name}.parquet")
    rng = np.random.default_rng(seed)
    columns = ["mixture", "vocals", "accompaniment"] if role == "paired" else [role]
    spec = {c: (rng.standard_normal((16, FRAMES * rows)) + 1j * rng.standard_normal((16, FRAMES * rows))).astype(np.complex64)
            for c in columns}
    write_shard(path, {"track_id": name, "corpus": "c", "split": "train", "role": role}, spec,
                list(range(0, FRAMES * rows, FRAMES)), cfg.transform, FRAMES)
    return path


def test_each_version_reads_its_own_files_and_any_delta_reader_opens_the_store(tmp_path):
    from deltalake import DeltaTable

    cfg = _config(tmp_path)
    root = cfg.data.shards_dir
    a, b = _shard(cfg, "a", "paired", 3, 0), _shard(cfg, "b", "vocals", 4, 1)
    assert table.commit(root, {a: 3, b: 4}, [], "ingest", schema=TABLE_SCHEMA) == 0
    c = _shard(cfg, "c", "vocals", 2, 2)
    assert table.commit(root, {c: 2}, [b], "ingest", {"note": "b replaced"}) == 1
    assert table.commit(root, {}, [], "ingest") == 1  # nothing changed: no new version

    v0, read0 = table.files(root, 0)
    v1, read1 = table.files(root)
    assert (read0, read1) == (0, 1)
    assert dict(zip(v0.shard, v0.rows)) == {a: 3, b: 4} and dict(zip(v1.shard, v1.rows)) == {a: 3, c: 2}
    assert os.path.exists(b)  # out of version 1, still read by version 0
    assert table.history(root).kind.tolist() == ["ingest", "ingest"]
    assert table.commit_metadata(root, 1)["note"] == "b replaced"

    # outside semisep: deltalake reads the rows of each version (the planes as binary cells)
    latest = DeltaTable(root).to_pandas()
    assert len(latest) == 5 and sorted(set(latest.track_id)) == ["a", "c"]
    assert latest.vocals.notna().all() and latest.mixture.isna().sum() == 2  # role=vocals rows hold vocals only
    assert len(DeltaTable(root, version=0).to_pandas()) == 7
    assert DeltaTable(root).schema().to_arrow().names == TABLE_SCHEMA.names
    assert pq.read_table(c).column("vocals").to_pylist() == \
        DeltaTable(root).to_pandas().query("track_id == 'c'").sort_values("start_frame").vocals.tolist()


def test_vacuum_keeps_what_versions_inside_the_retention_window_need(tmp_path):
    cfg = _config(tmp_path)
    root = cfg.data.shards_dir
    a, b, c = (_shard(cfg, n, "vocals", 2, i) for i, n in enumerate("abc"))
    now = int(time.time() * 1000)
    table.commit(root, {a: 2, b: 2}, [], "ingest")
    table.commit(root, {c: 2}, [a], "ingest", removed_at_ms=now - 10 * DAY_MS)  # version 0 replaced 10 days ago
    table.commit(root, {}, [b], "ingest", removed_at_ms=now - 2 * DAY_MS)  # version 1 replaced 2 days ago

    assert table.vacuum(root, retention_days=7) == [a]
    assert not os.path.exists(a) and os.path.exists(b) and os.path.exists(c)
    assert set(table.files(root, 1)[0].shard) == {b, c}  # inside the window: readable
    with pytest.raises(SemisepError, match=r"data\.version=0: 1 of its 2 files are gone .*data\.retention_days"):
        table.files(root, 0)
    with pytest.raises(SemisepError, match=r"data\.version=7: .* has versions 0 to 2"):
        table.files(root, 7)
    assert table.vacuum(root, retention_days=1) == [b]
    assert set(table.files(root)[0].shard) == {c}


def test_files_no_commit_added_are_found_and_the_old_layout_is_refused(tmp_path):
    cfg = _config(tmp_path)
    root = cfg.data.shards_dir
    a = _shard(cfg, "a", "vocals", 2, 0)
    table.commit(root, {a: 2}, [], "ingest")
    orphan = _shard(cfg, "orphan", "vocals", 2, 1)  # a run killed between its writes and its commit
    table.write_frame(os.path.join(root, "_sources"), __import__("pandas").DataFrame({"x": [1]}), "ingest")
    assert table.untracked(root) == [orphan]

    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.parquet").write_bytes(b"")
    with pytest.raises(SemisepError, match=r"old: a shard store in the layout before versioned tables .*semisep convert-store"):
        table.refuse_old_layout(str(old))


def test_a_store_in_the_old_layout_is_converted_without_decoding(tmp_path):
    import pandas as pd
    import pyarrow as pa

    from semisep.pipeline.ingest import convert_store
    from semisep.pipeline.manifest import COLUMNS, read_manifest, version_shards

    cfg = _config(tmp_path)
    root = cfg.data.shards_dir
    shards = {"paired": _shard(cfg, "p", "paired", 3, 0), "vocals": _shard(cfg, "v", "vocals", 2, 1)}
    rows = [dict(COLUMNS) | {"corpus": "c", "split": "train", "role": role, "track_id": role, "path": f"/a/{role}.wav",
                             "shard": path, "excerpts": 3 if role == "paired" else 2} for role, path in shards.items()]
    rows.append(dict(COLUMNS) | {"corpus": "c", "split": "train", "role": "vocals", "track_id": "bad", "path": "/a/bad.wav",
                                 "status": "error", "error": "silent"})
    pq.write_table(pa.Table.from_pandas(pd.DataFrame(rows)[list(COLUMNS)], preserve_index=False),
                   os.path.join(root, "manifest.parquet"))
    with pytest.raises(SemisepError, match="semisep convert-store"):
        read_manifest(root)

    assert "converted to a versioned store, version 0: 2 shards, 3 source files" in convert_store(cfg)
    assert not os.path.exists(os.path.join(root, "manifest.parquet"))
    assert dict(zip(*table.files(root)[0].T.values)) == {shards["paired"]: 3, shards["vocals"]: 2}
    manifest, version = read_manifest(root)
    assert version == "0" and len(manifest) == 3 and manifest.error.tolist()[-1] == "silent"
    assert version_shards(root)[0].role.tolist() == ["paired", "vocals"]
    assert "already a versioned store (version 0)" in convert_store(cfg)
