import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.errors import SemisepError
from pipeline.shards import check_shard, excerpt_starts, read_excerpts, write_shard
from pipeline.spectrogram import TransformConfig


def test_excerpts_read_back_equal_what_was_written(tmp_path):
    cfg = TransformConfig()
    rng = np.random.default_rng(0)
    sources = {k: rng.random((cfg.freq_bins, 100)).astype(np.float16).astype(np.float32) for k in ("mixture", "vocals", "accompaniment")}
    starts = excerpt_starts(100, 32, 16)
    assert starts == [0, 16, 32, 48, 64, 68]
    path = tmp_path / "part-x.parquet"
    meta = {"track_id": "t", "corpus": "c", "split": "train", "role": "paired"}
    assert write_shard(path, meta, sources, starts, cfg, 32) == len(starts)
    for name, full in sources.items():
        got = read_excerpts([str(path)], name, cfg, 32)
        want = np.stack([full[:, s:s + 32] for s in starts])
        assert np.array_equal(got, want)
    table = pq.read_table(path)
    assert table.column("start_frame").to_pylist() == starts
    assert not list(tmp_path.glob("*.tmp"))


def test_reader_refuses_other_transform_or_excerpt_size(tmp_path):
    cfg = TransformConfig()
    path = tmp_path / "p.parquet"
    write_shard(path, {"track_id": "t", "corpus": "c", "split": "train", "role": "vocals"},
                {"vocals": np.zeros((cfg.freq_bins, 40), np.float32)}, [0], cfg, 32)
    with pytest.raises(SemisepError, match="n_fft: 512 there vs 1024 here"):
        check_shard(path, TransformConfig(n_fft=1024), 32)
    with pytest.raises(SemisepError, match="excerpts of 32 frames"):
        check_shard(path, cfg, 64)


def test_reader_refuses_another_schema_version(tmp_path):
    cfg = TransformConfig()
    path = tmp_path / "p.parquet"
    write_shard(path, {"track_id": "t", "corpus": "c", "split": "train", "role": "vocals"},
                {"vocals": np.zeros((cfg.freq_bins, 40), np.float32)}, [0], cfg, 32)
    table = pq.read_table(path)
    meta = {**table.schema.metadata, b"semisep.schema_version": b"0"}
    pq.write_table(table.replace_schema_metadata(meta), path)
    with pytest.raises(SemisepError, match="shard schema version 0 differs from 1"):
        check_shard(path, cfg, 32)
