"""Learning curves: validation vocal SDR against step, and whether a curve was still rising.

A curve is a list of ``(step, value)`` pairs, the ``val_sdr`` a run logged at each validation
(``history`` reads it back from MLflow). ``last_quarter_gain`` says what the last quarter of a
run's steps bought: the best value of the whole run minus the best reached by 3/4 of its last
step (0 when the last quarter never beat the earlier best). A comparison between methods is only
made at convergence, so semisep reports this figure per arm (docs/results.md: under 0.1 dB counts
as flat).
"""

from __future__ import annotations

import math
import textwrap

import numpy as np

Curve = list[tuple[int, float]]
FLAT_DB = 0.1  # a last-quarter gain below this counts as a flat curve


def history(client, run_id: str, key: str = "val_sdr") -> Curve:
    """The (step, value) pairs a run logged for ``key``, by step (the last value of a step that
    was logged twice, as a resumed run may)."""
    points = {m.step: m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))}
    return sorted(points.items())


def last_quarter_gain(curve: Curve) -> float:
    """Best value over the run minus the best value by 3/4 of its last step (dB); NaN when empty."""
    finite = [(s, v) for s, v in curve if math.isfinite(v)]
    if not finite:
        return float("nan")
    cut = 0.75 * finite[-1][0]
    earlier = [v for s, v in finite if s <= cut]
    overall = max(v for _, v in finite)
    return overall - max(earlier) if earlier else 0.0


def figure(groups: dict[str, list[Curve]], title: str):
    """A matplotlib figure, one line per group (an arm: the mean over its seeds' curves at each
    step, with a band from the lowest to the highest seed); a seed that stopped early holds its
    last value no longer: the mean at a step is over the seeds that reached it."""
    from matplotlib.figure import Figure  # no pyplot: no global state

    fig = Figure(figsize=(7.5, 4.2), dpi=110)
    ax = fig.add_subplot()
    for label, curves in groups.items():
        steps = sorted({s for c in curves for s, _ in c})
        if not steps:
            continue
        table = np.full((len(curves), len(steps)), np.nan)
        index = {s: i for i, s in enumerate(steps)}
        for row, curve in enumerate(curves):
            for s, v in curve:
                table[row, index[s]] = v
        with np.errstate(all="ignore"):
            mean = np.nanmean(table, axis=0)
        line, = ax.plot(steps, mean, label=f"{label} ({len(curves)} seed{'s' if len(curves) > 1 else ''})")
        if len(curves) > 1:
            ax.fill_between(steps, np.nanmin(table, axis=0), np.nanmax(table, axis=0), color=line.get_color(), alpha=0.18)
    ax.set_xlabel("step")
    ax.set_ylabel("validation vocal SDR (dB)")
    ax.set_title(textwrap.fill(title, 80), fontsize=10)  # an experiment's name makes it long: keep it on the page
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save(groups: dict[str, list[Curve]], path, title: str) -> str:
    """Draw ``figure`` into a PNG at ``path``; returns the path."""
    figure(groups, title).savefig(path)
    return str(path)
