"""Streamed training data: a worker's share of the shard files through a bounded shuffle window.

An epoch of a stream (say, the unpaired vocals) is every row of its shard files once. The rows are
cut into chunks of ``CHUNK_ROWS`` (a shard's row groups), the chunks are put in an order drawn from
(seed, epoch), and that sequence is dealt to the workers as contiguous parts of near-equal row
counts: for a given file list (the shards' sorted paths and row counts), which chunks a worker
reads in a fresh epoch is a function of (seed, epoch, rank, world), and together the parts are the
epoch, each row once. After a change of world size (``resplit``), the rest of every begun epoch is
dealt from what the old workers had left, so the order then also depends on that history; a run
whose file list changes under it reads other rows (what a training plans on must stay fixed). A worker draws its part window by window: a window is the
next ``window_rows`` rows of its part (chunks of as many songs), read in a background thread while
the previous window is drawn, its rows drawn in a permutation seeded by the window's place. A
stream therefore holds at most two windows of rows, however large the corpus.

The state a checkpoint keeps (``ShardStream.state``): the pieces still to draw (an epoch's part
named by (epoch, rank, world), or, after the world size changed, an explicit list of chunks), how
many rows of the first piece are drawn, the next epoch, and per epoch how many rows were drawn and
a checksum of which. A stream rebuilt from it draws what an uninterrupted one would have drawn.
``resplit`` turns the states of w workers into states of w' workers that draw exactly the rows the
old ones had left in every epoch they had begun: none twice, none skipped (elastic training).

Rows come back as float32 planes ``(rows, 2, F, T)`` (real, imaginary), like the in-memory pools
of training/batches.py. Only pyarrow, numpy and torch: no Ray.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from semisep.pipeline import storage
from semisep.pipeline.config import TransformConfig
from semisep.pipeline.errors import SemisepError
from semisep.pipeline.shards import ROW_GROUP_ROWS, check_metadata, decode_column

CHUNK_ROWS = ROW_GROUP_ROWS
MASK64 = (1 << 64) - 1
KEEP_EPOCHS = 16  # per-epoch draw counts kept for the coverage check (a tiny stream turns epochs fast)


@dataclass(frozen=True)
class StreamFiles:
    """The shard files of one stream, in a fixed order (sorted paths), with their row counts.

    columns: the columns a row of this stream holds (``paired``: mixture, vocals, accompaniment;
    an unpaired role or a remix stream: that one source).
    """

    paths: tuple[str, ...]
    rows: tuple[int, ...]
    columns: tuple[str, ...]

    @property
    def total(self) -> int:
        return int(sum(self.rows))

    def offsets(self) -> np.ndarray:
        """Global id of each file's first row (ids number the stream's rows 0..total-1)."""
        return np.concatenate([[0], np.cumsum(self.rows, dtype=np.int64)[:-1]]).astype(np.int64)


def epoch_chunks(files: StreamFiles, seed: int, epoch: int) -> np.ndarray:
    """(chunks, 3) int64 rows (file, start, stop): every row of the stream once, chunks in an order
    drawn from (seed, epoch)."""
    rows = np.asarray(files.rows, np.int64)
    per_file = (rows + CHUNK_ROWS - 1) // CHUNK_ROWS
    file = np.repeat(np.arange(len(rows)), per_file)
    start = (np.arange(len(file)) - np.repeat(np.cumsum(per_file) - per_file, per_file)) * CHUNK_ROWS
    chunks = np.stack([file, start, np.minimum(start + CHUNK_ROWS, rows[file])], 1).astype(np.int64)
    order = np.random.default_rng([seed, epoch, 0x5EED]).permutation(len(chunks))
    return chunks[order]


def split_rows(chunks: np.ndarray, world: int) -> list[np.ndarray]:
    """Cut a chunk sequence into ``world`` contiguous parts whose row counts differ by at most one
    (a chunk on a boundary is cut in two)."""
    lengths = chunks[:, 2] - chunks[:, 1]
    ends = np.cumsum(lengths)
    starts = ends - lengths
    total = int(ends[-1]) if len(ends) else 0
    bounds = [total * k // world for k in range(world + 1)]
    parts = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        keep = (ends > lo) & (starts < hi)
        part = chunks[keep].copy()
        if len(part):
            part[0, 1] += lo - starts[keep][0]
            part[-1, 2] -= ends[keep][-1] - hi
        parts.append(part)
    return parts


def fresh_piece(epoch: int, rank: int, world: int) -> dict:
    """Worker ``rank``'s part of ``epoch`` when ``world`` workers share it (its chunks are computed
    when needed, so a checkpoint stays small)."""
    return {"epoch": epoch, "salt": [0, rank, world], "chunks": None}


def initial_state(rank: int, world: int, window_rows: int) -> dict:
    return {"pieces": [fresh_piece(0, rank, world)], "offset": 0, "next_epoch": 1, "rank": rank,
            "world": world, "gen": 0, "window_rows": window_rows, "drawn": {}}


def _mix64(ids: np.ndarray) -> np.ndarray:
    """splitmix64 of row ids: a sum of these identifies a set of rows (a checksum, not a proof)."""
    z = ids.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def checksum(ids: np.ndarray) -> int:
    with np.errstate(over="ignore"):
        return int(_mix64(ids).sum(dtype=np.uint64))


def epoch_checksum(total: int) -> int:
    """The checksum of every row of a stream of ``total`` rows: what one epoch must add up to."""
    out = 0
    for start in range(0, total, 1 << 22):
        out = (out + checksum(np.arange(start, min(total, start + (1 << 22)), dtype=np.int64))) & MASK64
    return out


class ShardStream:
    """One training stream of one worker: ``take(n)`` rows at a time, epoch after epoch.

    files: the stream's shards; seed: the run's stream seed (the same on every worker);
    state: from ``initial_state`` or a checkpoint (it holds the window size: rows per window; the
    stream holds two window buffers); executor: where windows are read ahead (None: read when
    needed, in the caller's thread); dtype: the buffers' type (the store's, data.dtype).
    """

    def __init__(self, files: StreamFiles, transform: TransformConfig, excerpt_frames: int, seed: int,
                 state: dict, executor: ThreadPoolExecutor | None = None, dtype: str = "float16"):
        assert files.total > 0
        self.files, self.transform, self.frames, self.dtype = files, transform, excerpt_frames, dtype
        self.seed, self.executor = seed, executor
        self._offsets = files.offsets()
        self._set(state)
        self._slots: list[dict[str, np.ndarray] | None] = [None, None]  # the two window buffers
        self._current: tuple | None = None  # (key, slot, ids, permutation)
        self._ahead: tuple | None = None  # (key, future of the ids)
        self.resident_rows = self.peak_rows = 0  # rows the window buffers hold
        self.last_ids = np.zeros(0, np.int64)  # global ids of the rows the last take() returned,
        self.last_epochs = np.zeros(0, np.int64)  # and the epoch each was drawn in

    def _set(self, state: dict) -> None:
        self.pieces = [dict(p) for p in state["pieces"]]
        self.offset, self.next_epoch = int(state["offset"]), int(state["next_epoch"])
        self.rank, self.world, self.gen = int(state["rank"]), int(state["world"]), int(state["gen"])
        self.window_rows = int(state["window_rows"])
        assert self.window_rows > 0
        if self.files.total < self.world:  # a worker's share of every epoch would be empty: take() would spin
            folder = self.files.paths[0].rsplit("/", 1)[0]
            raise SemisepError(f"training stream of {self.files.total} rows ({len(self.files.paths)} shards in {folder}) "
                               f"cannot be shared by {self.world} workers: add data or use fewer workers "
                               "(train.num_workers)")
        self.drawn = {int(e): [int(c), int(s)] for e, (c, s) in state["drawn"].items()}

    def state(self) -> dict:
        """Everything a checkpoint needs to continue this stream exactly (plain ints, lists and
        int64 tensors: loadable with ``torch.load(weights_only=True)``)."""
        pieces = [{"epoch": p["epoch"], "salt": list(p["salt"]),
                   "chunks": None if p["chunks"] is None else torch.from_numpy(np.asarray(p["chunks"], np.int64))}
                  for p in self.pieces]
        return {"pieces": pieces, "offset": self.offset, "next_epoch": self.next_epoch, "rank": self.rank,
                "world": self.world, "gen": self.gen, "window_rows": self.window_rows, "drawn": {str(e): list(v) for e, v in self.drawn.items()}}

    # ----------------------------------------------------------------- plan
    def _chunks(self, piece: dict) -> np.ndarray:
        if piece["chunks"] is None:
            _, rank, world = piece["salt"]
            piece["chunks"] = split_rows(epoch_chunks(self.files, self.seed, piece["epoch"]), world)[rank]
        elif isinstance(piece["chunks"], torch.Tensor):
            piece["chunks"] = piece["chunks"].numpy()
        return piece["chunks"]

    def _piece_rows(self, piece: dict) -> int:
        chunks = self._chunks(piece)
        return int((chunks[:, 2] - chunks[:, 1]).sum()) if len(chunks) else 0

    def _next_piece(self) -> None:
        self.pieces.pop(0)
        self.offset = 0
        if not self.pieces:
            self.pieces.append(fresh_piece(self.next_epoch, self.rank, self.world))
            self.next_epoch += 1

    def _window_segments(self, piece: dict, index: int) -> np.ndarray:
        """(segments, 3) (file, start, stop) of rows [index * window_rows, ...) of the piece."""
        chunks = self._chunks(piece)
        lengths = chunks[:, 2] - chunks[:, 1]
        ends = np.cumsum(lengths)
        starts = ends - lengths
        lo, hi = index * self.window_rows, (index + 1) * self.window_rows
        keep = (ends > lo) & (starts < hi)
        seg = chunks[keep].copy()
        if len(seg):
            seg[0, 1] += max(0, lo - starts[keep][0])
            seg[-1, 2] -= max(0, ends[keep][-1] - hi)
        return seg

    @staticmethod
    def _key(piece: dict, index: int) -> tuple:
        return (piece["epoch"], *piece["salt"], index)

    def _permutation(self, key: tuple, rows: int) -> np.ndarray:
        return np.random.default_rng([self.seed, *key, 0xD1CE]).permutation(rows)

    # ----------------------------------------------------------------- reading
    def _slot(self, slot: int) -> dict[str, np.ndarray]:
        """One of the stream's two window buffers (allocated once: no page faults per window)."""
        if self._slots[slot] is None:
            rows = min(self.window_rows, self.files.total)
            shape = (rows, 2, self.transform.freq_bins, self.frames)
            self._slots[slot] = {c: np.empty(shape, self.dtype) for c in self.files.columns}
            self.resident_rows += rows
            self.peak_rows = max(self.peak_rows, self.resident_rows)
        return self._slots[slot]

    def _read(self, segments: np.ndarray, slot: int, cache: tuple | None) -> np.ndarray:
        """Read the rows of ``segments`` into buffer ``slot``; returns their global ids. Rows the
        window in ``cache`` (slot, ids) holds are copied from it (a stream smaller than a window
        is read from the shards once, not every epoch)."""
        out = self._slot(slot)
        ids = np.concatenate([self._offsets[f] + np.arange(s, e) for f, s, e in segments.tolist()]
                             ) if len(segments) else np.zeros(0, np.int64)
        lookup = None
        if cache is not None:
            order = np.argsort(cache[1], kind="stable")
            lookup = (cache[1][order], order, self._slots[cache[0]])
        at = 0
        for f, start, stop in segments.tolist():
            n = stop - start
            rows = {c: a[at:at + n] for c, a in out.items()}
            hit = None
            if lookup is not None:
                pos = np.minimum(np.searchsorted(lookup[0], ids[at:at + n]), len(lookup[0]) - 1)
                if np.array_equal(lookup[0][pos], ids[at:at + n]):
                    hit = lookup[1][pos]
            if hit is not None:
                for column, target in rows.items():
                    np.take(lookup[2][column], hit, axis=0, out=target)
            else:
                read_rows(self.files.paths[f], self.files.columns, start, stop, self.transform, self.frames, rows)
            at += n
        return ids

    def _following(self) -> tuple[dict, int] | None:
        """The (piece, window index) drawn after the current window, without changing the plan."""
        piece = self.pieces[0]
        index = self.offset // self.window_rows
        if (index + 1) * self.window_rows < self._piece_rows(piece):
            return piece, index + 1
        if len(self.pieces) > 1:
            return self.pieces[1], 0
        return fresh_piece(self.next_epoch, self.rank, self.world), 0

    def _window(self) -> tuple:
        """The current window (key, buffer slot, ids, draw order), loaded from the read-ahead when
        it holds it, and the next one submitted for reading into the other buffer."""
        piece = self.pieces[0]
        index = self.offset // self.window_rows
        key = self._key(piece, index)
        if self._current is not None and self._current[0] == key:
            return self._current
        slot = 0 if self._current is None else 1 - self._current[1]
        if self._ahead is not None:
            ahead_key, future = self._ahead
            self._ahead = None
            ids = future.result()  # a read-ahead of another window (after a jump) is dropped
            if ahead_key != key:
                ids = self._read(self._window_segments(piece, index), slot, None)
        else:
            cache = None if self._current is None else (self._current[1], self._current[2])
            ids = self._read(self._window_segments(piece, index), slot, cache)
        self._current = (key, slot, ids, self._permutation(key, len(ids)))
        self._read_ahead()
        return self._current

    def _read_ahead(self) -> None:
        if self.executor is None:
            return
        piece, index = self._following()
        segments = self._window_segments(piece, index)
        cache = (self._current[1], self._current[2])
        self._ahead = (self._key(piece, index), self.executor.submit(self._read, segments, 1 - cache[0], cache))

    # ----------------------------------------------------------------- drawing
    def take(self, n: int) -> dict[str, torch.Tensor]:
        """The next ``n`` rows of every column, float32 planes (n, 2, F, T); n may be 0 (a batch
        with no row of this stream, e.g. a paired share that rounds to nothing on a worker)."""
        if n <= 0:
            self.last_ids = self.last_epochs = np.zeros(0, np.int64)
            empty = (0, 2, self.transform.freq_bins, self.frames)
            return {c: torch.zeros(empty) for c in self.files.columns}
        parts: dict[str, list[np.ndarray]] = {c: [] for c in self.files.columns}
        id_parts, epoch_parts = [], []
        while n > 0:
            piece_rows = self._piece_rows(self.pieces[0])
            if self.offset >= piece_rows:
                self._next_piece()
                continue
            key, slot, ids, perm = self._window()
            within = self.offset - key[-1] * self.window_rows
            m = min(n, len(ids) - within)
            pick = perm[within:within + m]
            for column in parts:
                parts[column].append(self._slots[slot][column][pick])
            id_parts.append(ids[pick])
            epoch_parts.append(np.full(m, self.pieces[0]["epoch"], np.int64))
            self._count(self.pieces[0]["epoch"], ids[pick])
            self.offset += m
            n -= m
        self.last_ids = np.concatenate(id_parts) if id_parts else np.zeros(0, np.int64)
        self.last_epochs = np.concatenate(epoch_parts) if epoch_parts else np.zeros(0, np.int64)
        return {c: torch.from_numpy(np.concatenate(p) if len(p) > 1 else p[0]).float() for c, p in parts.items()}

    def _count(self, epoch: int, ids: np.ndarray) -> None:
        count, total = self.drawn.get(epoch, [0, 0])
        self.drawn[epoch] = [count + len(ids), (total + checksum(ids)) & MASK64]
        for old in [e for e in self.drawn if e < epoch - KEEP_EPOCHS]:
            del self.drawn[old]

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead[1].result()
        self._ahead = self._current = None
        self._slots = [None, None]
        self.resident_rows = 0


def read_rows(path: str, columns, start: int, stop: int, transform: TransformConfig,
              excerpt_frames: int, out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Rows [start, stop) of a shard's ``columns`` as (rows, 2, F, T) planes in its storage type
    (or written into ``out``'s arrays), reading only the row groups that hold them; the shard's
    settings are checked first."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        fs, inner = storage.resolve(path)
        with fs.open_input_file(inner) as fh:
            pf = pq.ParquetFile(fh)
            dtype = check_metadata(pf.schema_arrow.metadata, path, transform, excerpt_frames)
            md = pf.metadata
            groups, first, at = [], None, 0
            for g in range(md.num_row_groups):
                n = md.row_group(g).num_rows
                if at < stop and at + n > start:
                    groups.append(g)
                    first = at if first is None else first
                at += n
            if stop > at:
                raise SemisepError(f"{path}: {at} rows, the manifest says at least {stop}; re-run `semisep ingest`")
            table = pf.read_row_groups(groups, columns=list(columns)).slice(start - first, stop - start)
    except (OSError, pa.ArrowException) as exc:
        raise SemisepError(f"{path}: cannot read the shard ({' '.join(str(exc).split())[:200]})") from None
    return {c: decode_column(table.column(c), transform.freq_bins, excerpt_frames, dtype, path,
                             None if out is None else out[c]) for c in columns}


def resplit(states: list[dict], world: int, files: StreamFiles, seed: int, window_rows: int) -> list[dict]:
    """States of ``len(states)`` workers -> states of ``world`` workers (windows of ``window_rows``)
    that draw exactly the rows the old ones had left of every epoch any of them had begun, then go
    on epoch by epoch.

    For each such epoch the remainder is, in old rank order: the undrawn rows of a worker's current
    window, the rest of its pieces of that epoch, or its whole part if it had not begun the epoch;
    the remainder is dealt to the new workers as contiguous near-equal parts."""
    lo = min(s["pieces"][0]["epoch"] for s in states)
    next_epoch = max(int(s["next_epoch"]) for s in states)
    remainder: dict[int, list[np.ndarray]] = {e: [] for e in range(lo, next_epoch)}
    for old in states:
        stream = ShardStream.__new__(ShardStream)  # the plan only: no reading
        stream.files, stream.seed = files, seed
        stream._set(old)
        own = {}
        for i, piece in enumerate(stream.pieces):
            chunks = stream._chunks(piece)
            if i == 0 and stream.offset:
                chunks = _undrawn(stream, piece, chunks)
            own.setdefault(piece["epoch"], []).append(chunks)
        for epoch in remainder:
            if epoch in own:
                remainder[epoch].extend(own[epoch])
            elif epoch >= stream.next_epoch:  # not begun: its whole part of the epoch
                remainder[epoch].append(stream._chunks(fresh_piece(epoch, stream.rank, stream.world)))
    gen = max(int(s["gen"]) for s in states) + 1
    drawn: dict[str, list[int]] = {}
    for old in states:
        for epoch, (count, total) in old["drawn"].items():
            c, t = drawn.get(str(epoch), [0, 0])
            drawn[str(epoch)] = [c + int(count), (t + int(total)) & MASK64]
    out = []
    for rank in range(world):
        pieces = []
        for epoch, parts in sorted(remainder.items()):
            chunks = np.concatenate(parts) if parts else np.zeros((0, 3), np.int64)
            mine = split_rows(chunks, world)[rank] if len(chunks) else chunks
            pieces.append({"epoch": epoch, "salt": [gen, rank, world], "chunks": torch.from_numpy(mine)})
        out.append({"pieces": pieces, "offset": 0, "next_epoch": next_epoch, "rank": rank, "world": world,
                    "gen": gen, "window_rows": window_rows, "drawn": drawn if rank == 0 else {}})
    return out


def _undrawn(stream: ShardStream, piece: dict, chunks: np.ndarray) -> np.ndarray:
    """The rows of the first piece a stream has not drawn: the rest of its current window (one
    segment per row, in the window's draw order) and the windows after it."""
    index, within = divmod(stream.offset, stream.window_rows)
    segments = stream._window_segments(piece, index)
    rows = np.concatenate([np.stack([np.full(e - s, f), np.arange(s, e), np.arange(s + 1, e + 1)], 1)
                           for f, s, e in segments.tolist()]) if len(segments) else np.zeros((0, 3), np.int64)
    rest = rows[stream._permutation(stream._key(piece, index), len(rows))[within:]]
    lengths = chunks[:, 2] - chunks[:, 1]
    ends = np.cumsum(lengths)
    starts = ends - lengths
    after = (index + 1) * stream.window_rows
    keep = ends > after
    later = chunks[keep].copy()
    if len(later):
        later[0, 1] += max(0, after - starts[keep][0])
    return np.concatenate([rest.astype(np.int64), later]).reshape(-1, 3)
