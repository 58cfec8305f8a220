import numpy as np
import pyarrow.parquet as pq
import pytest

from semisep.pipeline.config import TransformConfig
from semisep.pipeline.errors import SemisepError
from semisep.pipeline.shards import check_shard, excerpt_starts, read_excerpts, write_shard


def _complex(rng, frames, cfg):
    """A complex STFT-like array whose parts are exactly representable in float16."""
    parts = [rng.standard_normal((cfg.freq_bins, frames)).astype(np.float16).astype(np.float32) for _ in range(2)]
    return parts[0] + 1j * parts[1]


def test_excerpts_read_back_equal_what_was_written(tmp_path):
    cfg = TransformConfig()
    rng = np.random.default_rng(0)
    sources = {k: _complex(rng, 100, cfg) for k in ("mixture", "vocals", "accompaniment")}
    starts = excerpt_starts(100, 32, 16)
    assert starts == [0, 16, 32, 48, 64, 68]
    path = tmp_path / "part-x.parquet"
    meta = {"track_id": "t", "corpus": "c", "split": "train", "role": "paired"}
    assert write_shard(path, meta, sources, starts, cfg, 32) == len(starts)
    for name, full in sources.items():
        got = read_excerpts([str(path)], name, cfg, 32)  # (rows, 2, F, T): real and imaginary planes
        assert got.dtype == np.float16 and got.shape == (len(starts), 2, cfg.freq_bins, 32)
        want = np.stack([full[:, s:s + 32] for s in starts])
        assert np.array_equal(got[:, 0] + 1j * got[:, 1].astype(np.float32), want)
    table = pq.read_table(path)
    assert table.column("start_frame").to_pylist() == starts
    assert not list(tmp_path.glob("*.tmp"))


def test_reader_refuses_other_transform_or_excerpt_size(tmp_path):
    cfg = TransformConfig()
    path = tmp_path / "p.parquet"
    write_shard(path, {"track_id": "t", "corpus": "c", "split": "train", "role": "vocals"},
                {"vocals": np.zeros((cfg.freq_bins, 40), np.complex64)}, [0], cfg, 32)
    with pytest.raises(SemisepError, match="n_fft: 512 there vs 1024 here"):
        check_shard(path, TransformConfig(n_fft=1024), 32)
    with pytest.raises(SemisepError, match="excerpts of 32 frames"):
        check_shard(path, cfg, 64)


def test_reader_refuses_another_schema_version(tmp_path):
    cfg = TransformConfig()
    path = tmp_path / "p.parquet"
    write_shard(path, {"track_id": "t", "corpus": "c", "split": "train", "role": "vocals"},
                {"vocals": np.zeros((cfg.freq_bins, 40), np.complex64)}, [0], cfg, 32)
    table = pq.read_table(path)
    meta = {**table.schema.metadata, b"semisep.schema_version": b"0"}
    pq.write_table(table.replace_schema_metadata(meta), path)
    with pytest.raises(SemisepError, match="shard schema version 0 differs from 2"):
        check_shard(path, cfg, 32)
