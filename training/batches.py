"""Training batches: excerpt pools, random draws, augmentation and remixing, in plain torch.

Rows are complex STFT excerpts stored as planes ``(rows, 2, F, T)`` (real, imaginary; see
pipeline/shards.py). Batches are made in the STFT domain, where sources add exactly (the STFT is
linear), and only then turned into the model's log-magnitude features ``(batch, F, T)``:

- augmentation, every arm: each source gets a random gain, uniform in dB over ``train.gain_db``,
  and a paired excerpt's mixture is the sum of its gained sources (as Open-Unmix makes its
  training mixtures);
- ``train.remix``: that share of every supervised batch is remixed, the vocals of one excerpt over
  the accompaniment of another, drawn from all vocals and all accompaniment the data has (unpaired
  solo recordings and the paired songs' stems), independently, with their own gains: synthetic
  pairs from unpaired audio, and paired stems across songs;
- semi-supervised batches: mixtures for the separator's L_u / L_add and the critics' fakes, real
  vocals and accompaniment for the critics, from the unpaired pools; ``train.adversarial_paired``
  is the share of each of them drawn from the paired songs instead (every real source is real,
  and the critics then judge outputs on the paired domain too).

Batches draw from sources with ``take(n)`` and ``state()``: streamed shards (training/stream.py,
what training uses by default) or in-memory ``Pool``s (``train.reader: memory``, and the tests).
Draws are reproducible: a source's draws follow from its seed and state, and the random gains of
the k-th batch come from a generator seeded by (seed, k); the sources' states and the batch count
are all a checkpoint needs to continue the same sequence.
"""

from __future__ import annotations

import torch

from semisep.pipeline.spectrogram import planes_log_magnitude

Batch = dict[str, torch.Tensor]
SOURCES = ("vocals", "accompaniment")


class Pool:
    """Rows of one or more aligned columns, drawn without replacement, epoch after epoch.

    arrays: column -> (rows, 2, F, T) planes (any float dtype; kept as given, e.g. float16).
    """

    def __init__(self, arrays: dict[str, torch.Tensor], seed: int, position: int = 0):
        self.arrays, self.seed, self.position = arrays, seed, position
        self.rows = int(next(iter(arrays.values())).shape[0])
        assert self.rows > 0, "an empty pool"
        self._perm: tuple[int, torch.Tensor] | None = None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(self.rows, generator=gen))
        return self._perm[1]

    def take(self, n: int) -> Batch:
        """The next ``n`` rows of every column (float32 planes)."""
        parts = []
        while n > 0:
            epoch, offset = divmod(self.position, self.rows)
            m = min(n, self.rows - offset)
            parts.append(self._permutation(epoch)[offset:offset + m])
            self.position += m
            n -= m
        idx = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
        return {k: v[idx].float() for k, v in self.arrays.items()}

    def state(self) -> dict:
        return {"position": self.position}


SALTS = {"paired": 0, "mixture": 7, "vocals": 14, "accompaniment": 21, "remix_vocals": 28, "remix_accompaniment": 35,
         "pseudo": 42}


def memory_pools(streams: dict[str, dict[str, torch.Tensor]], remix: bool, seed: int,
                 state: dict | None = None, pseudo_remix: bool = False) -> dict[str, Pool]:
    """In-memory pools from streams (``paired`` and any unpaired role: column -> planes), plus the
    remix pools (every vocal and every accompaniment row: paired stems and unpaired solo
    recordings, and with ``pseudo_remix`` the teacher's stems of the ``pseudo`` stream) when
    ``remix``; ``state``: a ``Batches.state()``'s ``streams``."""
    arrays = dict(streams)
    if remix:
        for source in SOURCES:
            parts = [streams["paired"][source]] + ([streams[source][source]] if source in streams else [])
            parts += [streams["pseudo"][source]] if pseudo_remix and "pseudo" in streams else []
            arrays[f"remix_{source}"] = {source: torch.cat(parts) if len(parts) > 1 else parts[0]}
    state = state or {}
    return {name: Pool(cols, seed * 1000 + SALTS[name], int(state.get(name, {}).get("position", 0)))
            for name, cols in arrays.items()}


def _gains(gen: torch.Generator, n: int, gain_db: tuple[float, float], device) -> torch.Tensor:
    """(n, 1, 1, 1) linear gains, uniform in dB."""
    lo, hi = gain_db
    db = lo + (hi - lo) * torch.rand(n, 1, 1, 1, generator=gen)
    return (10 ** (db / 20)).to(device)


class Batches:
    """The batches one training run consumes, from its sources (on one worker: its share of rows).

    pools: sources by name, each with ``take(n)`` and ``state()``: ``paired`` (mixture, vocals,
    accompaniment), ``mixture``, ``vocals``, ``accompaniment`` (unpaired; absent when the run does
    not draw them), ``remix_vocals``, ``remix_accompaniment`` (the remix draws).
    batch_size: rows per batch on this worker.
    """

    def __init__(self, pools: dict, batch_size: int, seed: int, gain_db=(0.0, 0.0),
                 remix: float = 0.0, adversarial_paired: float = 0.0, device="cpu", count: int = 0,
                 pseudo: float = 0.0):
        self.pools, self.batch_size, self.seed = pools, batch_size, seed
        self.gain_db, self.remix, self.adversarial_paired = tuple(gain_db), remix, adversarial_paired
        self.pseudo = pseudo
        self.device, self.count = device, count

    @classmethod
    def from_sources(cls, pools: dict, cfg, batch_size: int, seed: int, count: int = 0, device="cpu") -> "Batches":
        t = cfg.train
        return cls(pools, batch_size, seed, t.gain_db, t.remix, t.adversarial_paired, device, count, t.pseudo)

    @classmethod
    def from_arrays(cls, streams: dict[str, dict[str, torch.Tensor]], cfg, batch_size: int, seed: int,
                    state: dict | None = None, device="cpu") -> "Batches":
        """Batches over in-memory pools (``paired`` and any unpaired role: column -> planes)."""
        state = state or {}
        pools = memory_pools(streams, cfg.train.remix > 0, seed, state.get("streams"), cfg.train.pseudo_remix)
        return cls.from_sources(pools, cfg, batch_size, seed, state.get("batches", 0), device)

    def state(self) -> dict:
        """What a checkpoint keeps to continue the same batches: every source's state, the count."""
        return {"streams": {name: pool.state() for name, pool in self.pools.items()}, "batches": self.count}

    def close(self) -> None:
        for pool in self.pools.values():
            getattr(pool, "close", lambda: None)()

    def _generator(self) -> torch.Generator:
        self.count += 1
        return torch.Generator().manual_seed((self.seed * 1_000_003 + self.count) * 31 + 17)

    def supervised(self) -> Batch:
        """mixture, vocals, accompaniment log-magnitudes (batch, F, T): paired rows, a ``remix``
        share of remixed rows, a ``pseudo`` share of pseudo-labelled mixtures (the teacher's stems
        as targets), every source gained."""
        gen, n = self._generator(), self.batch_size
        n_remix = int(round(self.remix * n)) if self.remix > 0 else 0
        n_pseudo = int(round(self.pseudo * n)) if self.pseudo > 0 else 0
        paired = self._to_device(self.pools["paired"].take(n - n_remix - n_pseudo))
        vocals, acc = paired["vocals"], paired["accompaniment"]
        if n_remix:
            vocals = torch.cat([vocals, self._to_device(self.pools["remix_vocals"].take(n_remix))["vocals"]])
            acc = torch.cat([acc, self._to_device(self.pools["remix_accompaniment"].take(n_remix))["accompaniment"]])
        if n_pseudo:
            labelled = self._to_device(self.pools["pseudo"].take(n_pseudo))
            vocals, acc = torch.cat([vocals, labelled["vocals"]]), torch.cat([acc, labelled["accompaniment"]])
        if self.gain_db != (0.0, 0.0) or n_remix or n_pseudo:
            vocals = vocals * _gains(gen, n, self.gain_db, self.device)
            acc = acc * _gains(gen, n, self.gain_db, self.device)
            mixture = vocals + acc
        else:
            mixture = paired["mixture"]
        return {"mixture": planes_log_magnitude(mixture), "vocals": planes_log_magnitude(vocals),
                "accompaniment": planes_log_magnitude(acc)}

    def _to_device(self, batch: Batch) -> Batch:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def unsupervised(self) -> Batch:
        """mixture (for L_u, L_add and the critics' fakes), vocals and accompaniment (the critics'
        real examples), log-magnitudes (batch, F, T), each from its own draw, gained."""
        gen, n = self._generator(), self.batch_size
        n_paired = int(round(self.adversarial_paired * n))
        out = {}
        for role in ("mixture", *SOURCES):
            parts = []
            if n - n_paired:  # a role without unpaired audio (mixtures only): its real examples are paired stems
                parts.append((self.pools[role] if role in self.pools else self.pools["paired"]).take(n - n_paired)[role])
            if n_paired:
                parts.append(self.pools["paired"].take(n_paired)[role])
            planes = (torch.cat(parts) if len(parts) > 1 else parts[0]).to(self.device, non_blocking=True)
            if self.gain_db != (0.0, 0.0):
                planes = planes * _gains(gen, n, self.gain_db, self.device)
            out[role] = planes_log_magnitude(planes)
        return out

