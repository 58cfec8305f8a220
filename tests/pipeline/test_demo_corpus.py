import numpy as np
import soundfile as sf

from semisep.pipeline.demo_corpus import render_song


def test_mixture_is_exact_sum_of_sources():
    for domain in ("studio", "acoustic"):
        song = render_song(3, domain, 3.0)
        assert song["mixture"].shape == (2, 3 * 44100)
        assert np.array_equal(song["mixture"], song["vocals"] + song["accompaniment"])
        assert np.abs(song["vocals"]).max() > 0.01 and np.abs(song["accompaniment"]).max() > 0.01


def test_generator_is_deterministic_by_seed():
    a, b, c = render_song(5, "studio", 2.0), render_song(5, "studio", 2.0), render_song(6, "studio", 2.0)
    assert np.array_equal(a["vocals"], b["vocals"])
    assert not np.array_equal(a["vocals"], c["vocals"])


def test_domains_differ_in_voice_register():
    """The studio voice sings below 280 Hz, the acoustic voice above it."""

    def low_share(x):
        spec = np.abs(np.fft.rfft(x[0])) ** 2
        freqs = np.fft.rfftfreq(x.shape[1], 1 / 44100)
        return spec[(freqs > 60) & (freqs < 280)].sum() / spec[(freqs > 60) & (freqs < 1000)].sum()

    studio = np.mean([low_share(render_song(s, "studio", 4.0)["vocals"]) for s in range(3)])
    acoustic = np.mean([low_share(render_song(s, "acoustic", 4.0)["vocals"]) for s in range(3)])
    assert studio > 3 * acoustic, (studio, acoustic)


def test_files_on_disk_sum_exactly(tiny_corpus):
    track = next((tiny_corpus / "paired" / "train").iterdir())
    mix, sr = sf.read(track / "mixture.wav", dtype="int16")
    voc, _ = sf.read(track / "vocals.wav", dtype="int16")
    acc, _ = sf.read(track / "accompaniment.wav", dtype="int16")
    assert sr == 44100 and mix.shape[1] == 2
    assert np.array_equal(mix.astype(np.int32), voc.astype(np.int32) + acc.astype(np.int32))
