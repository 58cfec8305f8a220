"""Streamed training data: each row once per epoch across workers, also when their number changes;
a resumed stream draws what a straight one draws; memory stays within the buffer."""

from __future__ import annotations

import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pytest
import torch

from semisep.pipeline.config import TransformConfig
from semisep.pipeline.errors import SemisepError
from semisep.pipeline.shards import write_shard
from semisep.training.stream import CHUNK_ROWS, ShardStream, StreamFiles, epoch_checksum, initial_state, resplit

F, T = 16, 8  # tiny planes
TRANSFORM = TransformConfig(sample_rate=8192, n_fft=32, hop_length=16, freq_bins=F)
ROWS = (3, 70, 130, 1, 64, 2 * CHUNK_ROWS + 5)  # across chunk boundaries, and tiny files


def write_store(root, rows=ROWS, freq_bins=F, frames=T, transform=TRANSFORM, column="vocals", seed=0) -> StreamFiles:
    """Shards whose every row is distinguishable: its value is its global row id."""
    rng = np.random.default_rng(seed)
    paths, at = [], 0
    for i, n in enumerate(rows):
        total = frames * n  # excerpts back to back: row k is frames [k*frames, (k+1)*frames)
        spec = np.zeros((freq_bins, total), np.complex64)
        spec.real = np.repeat(np.arange(at, at + n, dtype=np.float32), frames)[None, :] % 2048
        spec.imag = rng.standard_normal((freq_bins, total)).astype(np.float32)
        path = str(root / f"part-{i:03d}.parquet")
        write_shard(path, {"track_id": f"t{i}", "corpus": "c", "split": "train", "role": column},
                    {column: spec}, list(range(0, total, frames)), transform, frames)
        paths.append(path)
        at += n
    return StreamFiles(tuple(paths), tuple(rows), (column,))


def make(files, state, executor=None, seed=5):
    return ShardStream(files, TRANSFORM, T, seed, state, executor)


def draw(stream, n) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    planes = stream.take(n)["vocals"]
    return stream.last_ids.copy(), stream.last_epochs.copy(), planes


def draw_each_row_once(streams, files, ids: list, epochs: list, rounds: int) -> None:
    """Draw 5 rows from each stream ``rounds`` times after what ``ids`` / ``epochs`` hold already;
    every row must then have been drawn exactly once in each of epochs 0, 1 and 2."""
    for _ in range(rounds):
        for stream in streams:
            i, e, _ = draw(stream, 5)
            ids.append(i), epochs.append(e)
    every, at = np.concatenate(ids), np.concatenate(epochs)
    for epoch in (0, 1, 2):
        counts = counts_by_epoch(every, at, files.total, epoch)
        assert (counts == 1).all(), (epoch, np.flatnonzero(counts != 1)[:10], counts[counts != 1][:10])


def counts_by_epoch(ids, epochs, total, epoch) -> np.ndarray:
    return np.bincount(ids[epochs == epoch], minlength=total)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_each_row_is_drawn_once_per_epoch_across_the_workers(tmp_path, world):
    files = write_store(tmp_path)
    streams = [make(files, initial_state(r, world, 16)) for r in range(world)]
    ids, epochs = [], []
    for _ in range(2 * files.total // world // 7 + 3):  # a little over two epochs
        for stream in streams:
            i, e, planes = draw(stream, 7)
            ids.append(i), epochs.append(e)
            assert torch.equal(planes[:, 0, 0, 0], torch.from_numpy((i % 2048).astype(np.float32)))  # the rows named
    ids, epochs = np.concatenate(ids), np.concatenate(epochs)
    for epoch in (0, 1):
        assert (counts_by_epoch(ids, epochs, files.total, epoch) == 1).all()
    first = ids[epochs == 0][:40]
    assert len(np.unique(first // 64)) > 1 or world > 1, "a window draws from several chunks"


def test_the_order_changes_with_the_epoch_and_the_seed(tmp_path):
    files = write_store(tmp_path)
    one = make(files, initial_state(0, 1, 32))
    epoch0, _, _ = draw(one, files.total)
    epoch1, _, _ = draw(one, files.total)
    other, _, _ = draw(make(files, initial_state(0, 1, 32), seed=6), files.total)
    assert not np.array_equal(epoch0, epoch1) and not np.array_equal(epoch0, other)
    assert sorted(epoch0) == sorted(epoch1) == list(range(files.total))


@pytest.mark.parametrize("before,after", [(2, 1), (2, 3), (3, 2), (1, 2)])
def test_a_change_of_world_size_draws_the_rest_of_every_begun_epoch_once(tmp_path, before, after):
    files = write_store(tmp_path)
    old = [make(files, initial_state(r, before, 16)) for r in range(before)]
    ids, epochs = [], []
    share = files.total // before
    for _ in range(share // 5 + 1):  # into epoch 1 on some workers: shares differ by a row
        for stream in old:
            i, e, _ = draw(stream, 5)
            ids.append(i), epochs.append(e)
    assert len(set(np.concatenate(epochs))) == 2, "the split happens with epochs 0 and 1 both begun"
    # a checkpoint's states, through torch.save's types, then re-split
    new_states = resplit([s.state() for s in old], after, files, 5, 24)
    new = [make(files, state) for state in new_states]
    draw_each_row_once(new, files, ids, epochs, files.total * 2 // after // 5 + 2)
    # the draw counts travel with the states: summed over the new workers, whole epochs
    for epoch in (0, 1):
        assert sum(s.drawn.get(epoch, [0, 0])[0] for s in new) == files.total
        assert sum(s.drawn.get(epoch, [0, 0])[1] for s in new) % 2**64 == epoch_checksum(files.total)


def test_a_resumed_stream_draws_what_a_straight_one_draws(tmp_path):
    files = write_store(tmp_path)
    with ThreadPoolExecutor(2) as pool:
        straight = make(files, initial_state(1, 2, 16), pool)
        want = [draw(straight, 9) for _ in range(40)]  # several windows and epochs
        halves = make(files, initial_state(1, 2, 16), pool)
        for _ in range(17):
            draw(halves, 9)
        state = halves.state()
        halves.close()
        resumed = make(files, state, pool)
        for ids, epochs, planes in want[17:]:
            got_ids, got_epochs, got = draw(resumed, 9)
            assert np.array_equal(got_ids, ids) and np.array_equal(got_epochs, epochs) and torch.equal(got, planes)


def test_a_store_larger_than_the_buffer_streams_within_it(tmp_path):
    """The stream's own count of rows held (current window + read-ahead) never passes the buffer,
    and what Python and Arrow allocate stays far below the store's size."""
    freq, frames = 64, 32  # 8 KiB a row in float16
    transform = TransformConfig(sample_rate=8192, n_fft=128, hop_length=64, freq_bins=freq)
    files = write_store(tmp_path, rows=(300,) * 8, freq_bins=freq, frames=frames, transform=transform)
    row_bytes = 2 * freq * frames * 2
    buffer = 64
    store_bytes = files.total * row_bytes
    assert files.total > 30 * buffer
    pool = pa.default_memory_pool()
    tracemalloc.start()
    try:
        with ThreadPoolExecutor(2) as executor:
            stream = ShardStream(files, transform, frames, 1, initial_state(0, 1, buffer // 2), executor)
            seen = 0
            while seen < 2 * files.total:
                seen += len(stream.take(16)["vocals"])
                assert stream.resident_rows <= buffer
            stream.close()
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 0 < stream.peak_rows <= buffer
    assert traced_peak < 4 * buffer * row_bytes + 2**20, (traced_peak, store_bytes)
    assert pool.max_memory() < store_bytes / 4, (pool.max_memory(), store_bytes)


def test_a_shard_of_another_transform_is_refused_when_read_naming_it(tmp_path):
    files = write_store(tmp_path, rows=(5, 5))
    other = TransformConfig(sample_rate=8192, n_fft=32, hop_length=8, freq_bins=F)
    (tmp_path / "other").mkdir()
    write_store(tmp_path / "other", rows=(5,), transform=other)
    bad = StreamFiles((files.paths[0], str(tmp_path / "other" / "part-000.parquet")), (5, 5), ("vocals",))
    stream = make(bad, initial_state(0, 1, 4))
    with pytest.raises(SemisepError, match=r"other/part-000\.parquet: spectrogram transform differs.*hop_length"):
        for _ in range(5):
            stream.take(4)


def test_taking_no_rows_gives_empty_planes_and_draws_nothing(tmp_path):
    """A worker's paired share can round to 0 rows (batch 8, 4 workers, remix 0.75): not an IndexError."""
    stream = make(write_store(tmp_path), initial_state(0, 1, 64))
    planes = stream.take(0)["vocals"]
    assert planes.shape == (0, 2, F, T) and planes.dtype == torch.float32 and len(stream.last_ids) == 0
    ids, _, _ = draw(stream, 5)
    assert len(ids) == 5 and stream.drawn == {0: [5, stream.drawn[0][1]]}


def test_a_stream_with_fewer_rows_than_workers_is_refused_not_spun(tmp_path):
    """A rank whose share of every epoch is empty used to skip epochs forever, busy and silent."""
    files = write_store(tmp_path, rows=(1, 1))
    with pytest.raises(SemisepError, match=r"2 rows \(2 shards in .*\) cannot be shared by 3 workers: add data"):
        make(files, initial_state(2, 3, 64))
    assert len(draw(make(files, initial_state(1, 2, 64)), 3)[0]) == 3  # 2 workers: one row each per epoch


@pytest.mark.parametrize("after", [1, 2, 3])
def test_a_worker_that_has_not_begun_an_epoch_hands_over_its_whole_part(tmp_path, after):
    """Worker 0 is into epoch 1, worker 1 still early in epoch 0: the re-split must deal worker 1's
    whole part of epoch 1 (it had not begun it) as well as the rest of its epoch 0."""
    files = write_store(tmp_path)
    old = [make(files, initial_state(r, 2, 16)) for r in range(2)]
    ids, epochs = [], []
    for stream, n in ((old[0], files.total // 2 + 7), (old[1], 5)):
        i, e, _ = draw(stream, n)
        ids.append(i), epochs.append(e)
    assert old[0].next_epoch == 2 and old[1].next_epoch == 1, "worker 1 has not begun epoch 1"
    new = [make(files, state) for state in resplit([s.state() for s in old], after, files, 5, 24)]
    draw_each_row_once(new, files, ids, epochs, files.total * 3 // after // 5 + 2)
