"""Plots of evaluation results: one boxplot per metric, tracks' frame medians per method."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from semisep.evaluation.bss_eval import METRICS, TARGETS, track_frame_medians


def boxplots(frames: pd.DataFrame, out_dir: str | Path, methods: list[str]) -> list[Path]:
    """Write ``<metric>.png``: per target, a box of per-track medians for each method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_track = track_frame_medians(frames)
    paths = []
    for metric in METRICS:
        fig, axes = plt.subplots(1, len(TARGETS), figsize=(5 * len(TARGETS), 4), sharey=True)
        for ax, target in zip(axes, TARGETS):
            sel = per_track[(per_track.metric == metric) & (per_track.target == target)]
            data = [sel[sel.method == m].score.dropna().values for m in methods]
            ax.boxplot(data, showmeans=True)
            ax.set_xticks(range(1, len(methods) + 1), methods, rotation=20)
            ax.set_title(f"{target} {metric}")
            ax.grid(axis="y", alpha=0.3)
        axes[0].set_ylabel(f"{metric} (dB), median over 1 s frames, per track")
        fig.tight_layout()
        path = Path(out_dir) / f"{metric}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
