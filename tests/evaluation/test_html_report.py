"""report.html's parts: which excerpts, where in the song, and audio a browser can play back."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pandas as pd
import soundfile as sf

from semisep.evaluation import html_report


def test_picks_the_median_and_the_worst_song():
    scores = pd.Series({"a": 3.0, "b": -1.0, "c": 5.0, "d": 2.0, "e": float("nan")})
    picks = html_report.pick_tracks(scores)
    assert [t for t, _ in picks] == ["d", "b"]  # sorted: b -1, d 2, a 3, c 5: lower middle d; worst b
    assert "median" in picks[0][1] and "2.0 dB" in picks[0][1] and "worst" in picks[1][1]
    assert html_report.pick_tracks(pd.Series({"only": 1.0})) == [("only", "median vocal SDR (1.0 dB)")]
    assert html_report.pick_tracks(pd.Series(dtype=float)) == []


def test_the_window_is_where_the_vocals_are_loudest():
    sr = 100
    vocals = np.zeros((1, 60 * sr), np.float32)
    vocals[0, 31 * sr:39 * sr] = 1.0  # a voice from 31 s to 39 s
    start, stop = html_report.loudest_window(vocals, sr, seconds=10)
    assert stop - start == 10 * sr and start <= 31 * sr and stop >= 39 * sr
    assert html_report.loudest_window(vocals[:, :5 * sr], sr, seconds=10) == (0, 5 * sr)  # shorter: all of it


def test_ogg_audio_decodes_back_to_the_signal():
    sr = 8192
    t = np.arange(2 * sr) / sr
    tone = (0.5 * np.sin(2 * np.pi * 440 * t))[None, :].astype(np.float32)
    uri = html_report.ogg_uri(tone, sr)
    assert uri.startswith("data:audio/ogg;base64,")
    audio, rate = sf.read(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])), dtype="float32")
    assert rate == sr and abs(len(audio) - 2 * sr) < sr // 10
    n = min(len(audio), tone.shape[1])
    corr = np.corrcoef(audio[:n], tone[0, :n])[0, 1]
    assert corr > 0.95 and len(uri) < 2 * sr  # compressed: far fewer bytes than 16-bit PCM


def test_the_page_holds_a_player_per_signal_and_every_plot(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    plt.plot([0, 1], [1, 0])
    fig.savefig(tmp_path / "p.png")
    plt.close(fig)
    sr, n = 8192, 8192
    sig = lambda k: np.sin(np.arange(n) * 0.01 * k)[None, :].astype(np.float32) * 0.1  # noqa: E731
    excerpt = html_report.Excerpt("out-of-domain", "rock/song-3", "median vocal SDR (2.0 dB)", 4.5, sr,
                                  {"mixture": sig(1), "vocals": sig(2), "accompaniment": sig(3)},
                                  {"remix": {"vocals": sig(4), "accompaniment": sig(5)},
                                   "oracle_irm": {"vocals": sig(6), "accompaniment": sig(7)}})
    page = html_report.write(tmp_path / "report.html", "title <x>", "intro",
                             [("Scores", [html_report.table(pd.DataFrame({"method": ["a"], "sdr": [1.234]})),
                                          html_report.figure(tmp_path / "p.png", "a plot")])],
                             [excerpt], "remix", after=[("More", [html_report.figure(tmp_path / "p.png", "again")])])
    text = page.read_text()
    assert text.count("<audio") == 3 + 2 * 2 and text.count("data:audio/ogg;base64,") == 7
    assert text.count("<img") == 2 and text.count("data:image/png;base64,") == 2
    assert "title &lt;x&gt;" in text and "1.23" in text and "rock/song-3" in text and "4.5-5.5 s" in text
    assert "the median vocal SDR of remix" in text
    assert not re.search(r"(src|href)=['\"]https?:", text)  # nothing fetched when the page is opened
