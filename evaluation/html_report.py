"""``report.html``: one self-contained page to read, look at and listen to, as separation papers ship.

The page holds the results tables, the plots (PNG, embedded), and for each test set a few
excerpts with an audio player per signal: the mixture, the reference vocals and accompaniment,
every model's estimates of the same excerpt and the oracle mask's. Which excerpts, by a rule the
page states: the song with the median vocal SDR of the first model listed (``semisep experiment``:
the arm chosen on validation) and the song where it does worst, and in each song the
``EXCERPT_SECONDS`` window where the reference vocals are loudest (a window with a voice to hear).
Audio is Ogg Vorbis through soundfile (libsndfile), embedded as data URIs, so the one file can be
mailed or attached to an MLflow run, and nothing is fetched when it is opened. Plain HTML and CSS.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

EXCERPT_SECONDS = 10.0
RULE = (f"Excerpts: per test set, the song with the median vocal SDR of {{reference}} and the song where it does "
        f"worst; in each, the {EXCERPT_SECONDS:g} s where the reference vocals are loudest. Each model's estimates "
        "of the same excerpt follow the references; levels are as separated (no normalisation), clipped at full scale.")


@dataclass
class Excerpt:
    """One excerpt to listen to: where it is from, and its signals, name -> (channels, samples)."""

    test_set: str
    track: str
    why: str  # "median vocal SDR (3.1 dB)" / "worst vocal SDR (-1.2 dB)"
    start_s: float
    sr: int
    references: dict[str, np.ndarray] = field(default_factory=dict)  # mixture, vocals, accompaniment
    estimates: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # method -> vocals, accompaniment


def pick_tracks(per_track: pd.Series) -> list[tuple[str, str]]:
    """(track, why) for the median and the worst track of ``per_track`` (track -> vocal SDR, dB);
    one entry when they coincide. With an even count the median is the lower middle track."""
    ranked = per_track.dropna().sort_values()
    if ranked.empty:
        return []
    middle = ranked.index[(len(ranked) - 1) // 2]
    worst = ranked.index[0]
    picks = [(middle, f"median vocal SDR ({ranked[middle]:.1f} dB)")]
    if worst != middle:
        picks.append((worst, f"worst vocal SDR ({ranked[worst]:.1f} dB)"))
    return picks


def loudest_window(vocals: np.ndarray, sr: int, seconds: float = EXCERPT_SECONDS) -> tuple[int, int]:
    """(start, stop) samples of the ``seconds`` window, on a 0.5 s grid, where ``vocals``
    (channels, samples) has the most energy; the whole signal when it is shorter."""
    n = vocals.shape[-1]
    length = int(seconds * sr)
    if n <= length:
        return 0, n
    energy = np.concatenate([[0.0], np.cumsum((vocals.astype(np.float64) ** 2).sum(axis=0))])
    starts = np.arange(0, n - length + 1, max(1, sr // 2))
    best = int(starts[np.argmax(energy[starts + length] - energy[starts])])
    return best, best + length


def ogg_uri(audio: np.ndarray, sr: int) -> str:
    """(channels, samples) float audio -> a ``data:audio/ogg`` URI (Ogg Vorbis, libsndfile's default quality)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(audio.T, -1.0, 1.0).astype(np.float32), sr, format="OGG", subtype="VORBIS")
    return "data:audio/ogg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def png_uri(path: str | Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def cut(signals: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {k: v[..., start:stop] for k, v in signals.items()}


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#1d232b}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:1.8em}
h3{font-size:1.05em;margin:1.4em 0 .4em}p.note{color:#57606a;font-size:.9em;margin:.3em 0 .8em}
table{border-collapse:collapse;font-size:.85em;margin:.4em 0 1em}th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right}
th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #d0d7de;margin:.3em 0}
table.listen td{text-align:left;vertical-align:middle}table.listen audio{height:32px;width:250px}
"""


def table(df: pd.DataFrame, caption: str = "") -> str:
    """A DataFrame as an HTML table (pandas' to_html), numbers to two decimals."""
    body = df.to_html(index=False, border=0, float_format=lambda v: f"{v:.2f}", na_rep="-", escape=True)
    return (f"<p class='note'>{html.escape(caption)}</p>" if caption else "") + body


def figure(path: str | Path, caption: str) -> str:
    return f"<figure><img src='{png_uri(path)}' alt='{html.escape(caption)}'><figcaption class='note'>{html.escape(caption)}</figcaption></figure>"


def _player(audio: np.ndarray, sr: int) -> str:
    return f"<audio controls preload='metadata' src='{ogg_uri(audio, sr)}'></audio>"


def excerpt_html(ex: Excerpt) -> str:
    rows = [f"<h3>{html.escape(ex.test_set)}: {html.escape(ex.track)}, {html.escape(ex.why)}, "
            f"{ex.start_s:.1f}-{ex.start_s + ex.references['mixture'].shape[-1] / ex.sr:.1f} s</h3>",
            "<table class='listen'><tr><th>signal</th><th>vocals</th><th>accompaniment</th></tr>",
            f"<tr><td>mixture</td><td colspan='2'>{_player(ex.references['mixture'], ex.sr)}</td></tr>",
            f"<tr><td>reference</td><td>{_player(ex.references['vocals'], ex.sr)}</td>"
            f"<td>{_player(ex.references['accompaniment'], ex.sr)}</td></tr>"]
    for method, est in ex.estimates.items():
        rows.append(f"<tr><td>{html.escape(method)}</td><td>{_player(est['vocals'], ex.sr)}</td>"
                    f"<td>{_player(est['accompaniment'], ex.sr)}</td></tr>")
    return "\n".join(rows + ["</table>"])


def write(path: str | Path, title: str, intro: str, sections: list[tuple[str, list[str]]],
          excerpts: list[Excerpt], reference: str, after: list[tuple[str, list[str]]] = ()) -> Path:
    """Write the page: ``sections`` (heading, HTML blocks from ``table`` / ``figure``), the
    listening section (``reference``: the model whose scores chose the excerpts), then ``after``."""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>", f"<p class='note'>{html.escape(intro)}</p>"]
    for heading, blocks in sections:
        parts += [f"<h2>{html.escape(heading)}</h2>", *blocks]
    if excerpts:
        parts += ["<h2>Listen</h2>", f"<p class='note'>{html.escape(RULE.format(reference=reference))}</p>"]
        parts += [excerpt_html(ex) for ex in excerpts]
    for heading, blocks in after:
        parts += [f"<h2>{html.escape(heading)}</h2>", *blocks]
    parts.append("</body></html>")
    path = Path(path)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
