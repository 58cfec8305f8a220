"""Songs played by sampled instruments and voices (FluidSynth + a General MIDI soundfont)."""

import numpy as np
import pytest

from semisep.pipeline.errors import SemisepError
from semisep.pipeline.sampled_corpus import STYLES, compose, render_song, soundfont_path

FONT = "TimGM6mb"  # ships inside pretty_midi: no soundfont package needed for the tests


def test_mixture_is_the_exact_sum_and_the_voice_sits_at_the_styles_level():
    song = render_song(2, "rock", 6.0, FONT)
    assert all(a.shape == (2, 6 * 44100) and a.dtype == np.float32 for a in song.values())
    assert np.array_equal(song["mixture"], song["vocals"] + song["accompaniment"])
    assert np.array_equal(np.round(song["mixture"] * 32768), song["mixture"] * 32768)  # on the 16-bit grid
    rms = lambda x: np.sqrt(np.mean(x ** 2))  # noqa: E731
    level = 20 * np.log10(rms(song["vocals"]) / rms(song["accompaniment"]))
    lo, hi = STYLES["rock"].vocal_db
    assert lo - 0.2 <= level <= hi + 0.2
    # the sung line has rests: some of the song is without voice, most of it with
    frames = np.abs(song["vocals"]).max(0)[: 6 * 44100 // 441 * 441].reshape(-1, 441).max(1)
    assert 0.3 < np.mean(frames > 1e-3) < 0.98


def test_deterministic_by_seed_and_styles_differ():
    a, b = render_song(5, "pop", 3.0, FONT), render_song(5, "pop", 3.0, FONT)
    assert np.array_equal(a["mixture"], b["mixture"])
    assert not np.array_equal(a["mixture"], render_song(6, "pop", 3.0, FONT)["mixture"])
    # the voices keep to their styles' registers (MIDI notes of the sung line)
    for style in ("rock", "folk"):
        vocals, _, _ = compose(1, style, 8.0)
        notes = [n.pitch for n in vocals.instruments[0].notes]
        lo, hi = STYLES[style].voice_range
        assert notes and lo <= min(notes) and max(notes) <= hi
        assert vocals.instruments[0].program in STYLES[style].voices


def test_unknown_style_or_missing_soundfont_is_a_clear_error(tmp_path):
    with pytest.raises(SemisepError, match="style 'polka'"):
        compose(0, "polka", 2.0)
    with pytest.raises(SemisepError, match="no such file"):
        soundfont_path(str(tmp_path / "missing.sf2"))
