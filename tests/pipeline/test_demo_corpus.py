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


def _songs(root) -> dict[str, bytes]:
    """Relative song folder or file -> its mixture's (or its file's) audio bytes."""
    out = {}
    for path in sorted(root.rglob("*.wav")):
        if path.parent.parent.name in ("train", "valid", "gate", "test") and path.name != "mixture.wav":
            continue
        out[str(path.relative_to(root).parent if path.name == "mixture.wav" else path.relative_to(root))] = path.read_bytes()
    return out


def test_songs_keep_their_audio_when_other_counts_change(tmp_path):
    """More validation songs are new songs: not the audio of test songs (whose seeds came next in
    the job list), and no existing song changes."""
    from semisep.pipeline.demo_corpus import generate_demo_corpus

    sizes = dict(track_seconds=1.0, paired_train=1, unpaired_per_role=1, test=2, test_in_domain=0, progress=False)
    before = _songs(tmp_path / "a") if generate_demo_corpus(tmp_path / "a", valid=2, gate=1, **sizes) else {}
    generate_demo_corpus(tmp_path / "b", valid=4, gate=2, **sizes)
    after = _songs(tmp_path / "b")
    assert {k: v for k, v in after.items() if k in before} == before  # every earlier song as it was
    new = [k for k in after if k not in before]
    assert sorted(new) == ["target/gate/target_gate_001", "target/valid/target_valid_002", "target/valid/target_valid_003"]
    assert len(set(after.values())) == len(after)  # every song's audio its own
