"""BSS Eval v4 through museval, and aggregation as in SiSEC 2018.

SiSEC 2018 reports the median over one-second frames per track, then the median over tracks;
we report the mean over tracks beside it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TARGETS = ("vocals", "accompaniment")
METRICS = ("SDR", "SIR", "SAR", "ISR")


def score_track(track: str, references: dict[str, np.ndarray], estimates: dict[str, np.ndarray],
                sr: int, win_seconds: float = 1.0):
    """museval scores of one track. Arrays are (channels, samples). Returns a museval.TrackStore."""
    import museval

    refs = np.stack([references[t].T for t in TARGETS])  # (sources, samples, channels)
    ests = np.stack([estimates[t].T for t in TARGETS])
    win = int(win_seconds * sr)
    sdr, isr, sir, sar = museval.evaluate(refs, ests, win=win, hop=win)
    store = museval.TrackStore(track_name=track, win=win_seconds, hop=win_seconds)
    for i, target in enumerate(TARGETS):
        store.add_target(target, {"SDR": sdr[i].tolist(), "SIR": sir[i].tolist(),
                                  "SAR": sar[i].tolist(), "ISR": isr[i].tolist()})
    return store


def track_frame_medians(frames: pd.DataFrame) -> pd.DataFrame:
    """Frame scores (method, track, target, metric, score) -> median over frames per track."""
    return frames.groupby(["method", "track", "target", "metric"], as_index=False)["score"].median()


def aggregate(frames: pd.DataFrame) -> pd.DataFrame:
    """Per method, target and metric: median and mean over tracks of per-track frame medians."""
    per_track = track_frame_medians(frames)
    g = per_track.groupby(["method", "target", "metric"])["score"]
    return pd.DataFrame({"median": g.median(), "mean": g.mean(), "tracks": g.count()}).reset_index()


def sdr_table(summary: pd.DataFrame, order: list[str]) -> str:
    """Markdown table of vocal and accompaniment SDR (median / mean over tracks) per method."""
    sdr = summary[summary.metric == "SDR"]
    lines = ["| method | vocals SDR median | vocals SDR mean | accompaniment SDR median | accompaniment SDR mean | tracks |",
             "|---|---:|---:|---:|---:|---:|"]
    for method in order:
        rows = sdr[sdr.method == method].set_index("target")
        if rows.empty:
            continue
        v, a = rows.loc["vocals"], rows.loc["accompaniment"]
        lines.append(f"| {method} | {v['median']:.2f} | {v['mean']:.2f} | {a['median']:.2f} | {a['mean']:.2f} | {int(v['tracks'])} |")
    return "\n".join(lines)
