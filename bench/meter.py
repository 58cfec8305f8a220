"""Wall time, CPU time and peak memory of this process and everything it starts (Ray workers too).

A background thread samples the process tree's resident memory every ``interval`` seconds;
CPU time is summed over the processes alive at the end plus those that exited (psutil reports
the children a process has waited for in its own ``children_*`` times).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psutil


@dataclass
class Measure:
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mib: float = 0.0


def _tree() -> list[psutil.Process]:
    me = psutil.Process()
    return [me, *me.children(recursive=True)]


def _cpu(procs: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return out


class meter:
    """``with meter() as m: ...`` then read m.wall_s, m.cpu_s, m.peak_rss_mib."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.result = Measure()
        self._stop = threading.Event()
        self._cpu_seen: dict[int, float] = {}

    def _sample(self) -> None:
        while not self._stop.is_set():
            procs = _tree()
            rss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
            self.result.peak_rss_mib = max(self.result.peak_rss_mib, rss / 2**20)
            self._cpu_seen.update(_cpu(procs))  # last value seen per pid, so short-lived ones count
            self._stop.wait(self.interval)

    def __enter__(self) -> Measure:
        self._cpu_start = _cpu(_tree())
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self.result

    def __exit__(self, *exc) -> None:
        self.result.wall_s = time.perf_counter() - self._t0
        self._stop.set()
        self._thread.join()
        self._cpu_seen.update(_cpu(_tree()))
        self.result.cpu_s = sum(v - self._cpu_start.get(pid, 0.0) for pid, v in self._cpu_seen.items())
