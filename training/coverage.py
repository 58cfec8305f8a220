"""Every row once per epoch, checked while training runs.

Each streamed source counts, per epoch, the rows it drew and a checksum of which
(training/stream.py). At every validation the workers' counts are gathered and, for each stream's
finished epochs, compared with the stream: the count must equal its rows and the checksum the sum
over all of its rows. A row drawn twice, or one skipped, in an epoch (for instance across a change
of the number of workers) shows as ``data_coverage_errors`` above 0 in MLflow and a warning on the
console; ``data_epochs/<stream>`` counts the epochs checked.
"""

from __future__ import annotations

from semisep.training.stream import MASK64, epoch_checksum

CHECKED_EPOCHS = 8  # finished epochs looked at, back from the newest (older counts may be pruned)


class Coverage:
    """The check over one worker's sources (in-memory pools have no counts and are left out)."""

    def __init__(self, sources: dict):
        self.sources = {name: s for name, s in sources.items() if hasattr(s, "drawn")}
        self._expected: dict[str, int] = {}
        self._warned: set[tuple[str, int]] = set()

    def drawn(self) -> dict[str, dict[int, list[int]]]:
        """This worker's counts, per stream and epoch: [rows, checksum]."""
        return {name: dict(source.drawn) for name, source in self.sources.items()}

    def check(self, every: dict[str, dict]) -> dict[str, float]:
        """Metrics from every worker's ``drawn()`` (by rank): epochs checked per stream, errors."""
        if not self.sources:
            return {}
        out, errors = {}, 0
        for name, source in self.sources.items():
            total = source.files.total
            merged: dict[int, list[int]] = {}
            for drawn in every.values():
                for epoch, (count, checksum) in drawn.get(name, {}).items():
                    c, t = merged.get(int(epoch), [0, 0])
                    merged[int(epoch)] = [c + int(count), (t + int(checksum)) & MASK64]
            finished = [e for e, (count, _) in merged.items() if count >= total]
            if not finished:
                continue
            newest = max(finished)
            out[f"data_epochs/{name}"] = float(newest + 1)
            if name not in self._expected:
                self._expected[name] = epoch_checksum(total)
            for epoch in range(max(0, newest - CHECKED_EPOCHS), newest + 1):
                if epoch not in merged:
                    continue
                count, checksum = merged[epoch]
                if count == total and checksum == self._expected[name]:
                    continue
                errors += 1
                if (name, epoch) not in self._warned:
                    self._warned.add((name, epoch))
                    print(f"semisep: warning: training stream {name!r}, epoch {epoch}: {count} rows drawn of "
                          f"{total}{'' if count != total else ', but not each once (checksum differs)'}", flush=True)
        out["data_coverage_errors"] = float(errors)
        return out
