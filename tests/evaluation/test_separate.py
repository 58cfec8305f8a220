import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from semisep.pipeline.config import TransformConfig, load_config
from semisep.evaluation.separate import separate
from semisep.training.checkpoint import save_model
from semisep.training.step import build_separator


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    cfg = load_config(None, ["model.base_channels=4"])
    torch.manual_seed(0)
    return str(save_model(tmp_path_factory.mktemp("model"), build_separator(cfg).state_dict(), cfg, {"name": "untrained"}))


@pytest.mark.parametrize("sr", [22050, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_separate_keeps_rate_channels_length_and_sums_to_input(sr, channels):
    cfg = load_config(None, ["model.base_channels=4"])
    model = build_separator(cfg).eval()
    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal((channels, sr + 7))).astype(np.float32)  # about 1 second
    out = separate(model, TransformConfig(), audio, sr)
    for est in out.values():
        assert est.shape == audio.shape
    assert np.abs(out["vocals"] + out["accompaniment"] - audio).max() < 1e-5
    assert 0.01 < np.abs(out["vocals"]).mean() / np.abs(audio).mean() < 0.99


def test_cli_separate_writes_musdb_layout_and_reports_bad_files(tmp_path, model_dir):
    good = tmp_path / "in" / "song.wav"
    good.parent.mkdir()
    sf.write(good, (0.2 * np.random.default_rng(1).standard_normal((48000, 2))).astype(np.float32), 48000)
    (tmp_path / "in" / "empty.wav").write_bytes(b"")
    (tmp_path / "in" / "text.wav").write_text("hello")
    (tmp_path / "in" / "corrupt.wav").write_bytes(good.read_bytes()[:60] + b"\x00garbage" * 10)
    missing = tmp_path / "nowhere.wav"
    proc = subprocess.run([sys.executable, "-m", "semisep.cli", "separate", str(tmp_path / "in"), str(missing),
                           "-o", str(tmp_path / "out"), "--model", model_dir, "--post-filter", "wiener"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("semisep: error")]
    assert len(errors) == 4, proc.stderr
    assert any("empty.wav" in e and "empty" in e for e in errors)
    assert any("text.wav" in e and "cannot decode" in e for e in errors)
    assert any("corrupt.wav" in e for e in errors)
    assert any("nowhere.wav" in e and "not found" in e for e in errors)
    out = {}
    for target in ("vocals", "accompaniment"):
        out[target], sr = sf.read(tmp_path / "out" / "song" / f"{target}.wav", dtype="float32")
        assert sr == 48000 and out[target].shape == (48000, 2)
    assert np.abs(out["vocals"] + out["accompaniment"] - sf.read(good, dtype="float32")[0]).max() < 1e-5
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == ["accompaniment.wav", "song", "vocals.wav"]


def test_segments_join_without_seams_and_wiener_uses_the_stereo_image():
    from semisep.pipeline.demo_corpus import render_song

    cfg = load_config(None, ["model.base_channels=4"])
    torch.manual_seed(0)
    model = build_separator(cfg).eval()
    audio = render_song(3, "acoustic", 9.0)["mixture"].astype(np.float32)  # stereo, 44.1 kHz
    whole = separate(model, TransformConfig(), audio, 44100, segment_seconds=1000)["vocals"]
    # 2-second segments: four cross-faded joins; the soft mask gives the same signal to rounding
    segmented = separate(model, TransformConfig(), audio, 44100, segment_seconds=2.0)["vocals"]
    assert np.abs(segmented - whole).max() < 1e-6
    wiener = separate(model, TransformConfig(), audio, 44100, post_filter="wiener", segment_seconds=2.0)
    assert np.abs(wiener["vocals"] + wiener["accompaniment"] - audio).max() < 1e-5
    change = np.sqrt(((wiener["vocals"] - whole) ** 2).sum() / (whole**2).sum())
    assert 0.01 < change < 1.0, change  # a different estimate, not a different song


def test_estimates_do_not_depend_on_how_the_song_is_chunked():
    """Windows of the training length on a grid fixed by the song: chunks only batch them.
    Tolerance: 1e-5 of the largest magnitude (float32 convolutions batched differently)."""
    from semisep.evaluation.separate import model_estimates, window_weights
    from semisep.pipeline.demo_corpus import render_song
    from semisep.pipeline.spectrogram import features, resample

    cfg = load_config(None, ["model.base_channels=4"])
    torch.manual_seed(0)
    model = build_separator(cfg).eval()
    mono = resample(render_song(4, "acoustic", 30.0)["mixture"].mean(0), 44100, 8192)
    whole = model_estimates(model, mono, TransformConfig(), window_frames=32, chunk_frames=10**6)
    assert whole.shape == (2, 256, len(mono) // 256 + 1)
    for chunk in (16, 100, 257, 1000):
        chunked = model_estimates(model, mono, TransformConfig(), window_frames=32, chunk_frames=chunk)
        assert np.abs(chunked - whole).max() <= 1e-5 * np.abs(whole).max(), chunk
    # the model saw its training length: an estimate in the middle of the song is the cross-fade
    # of the two windows over it, each computed alone
    x = features(torch.from_numpy(mono.astype(np.float32)), TransformConfig())
    f = 400  # frame 400 lies in the windows starting at 384 and 400 (hop 16)
    alone = [torch.expm1(model(x[None, :, s:s + 32]))[0, :, :, f - s] * window_weights(32)[f - s] for s in (384, 400)]
    assert np.allclose(whole[:, :, f], (alone[0] + alone[1]).detach().numpy(), rtol=1e-4, atol=1e-6)


def _encode(src, dest, *args):
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), *args, str(dest)], check=True)


def test_every_input_format_keeps_rate_channels_and_length(tmp_path, model_dir):
    from semisep.pipeline.audio import load_audio

    rng = np.random.default_rng(2)
    src = tmp_path / "src"
    src.mkdir()
    inputs = tmp_path / "in"
    inputs.mkdir()
    mono = src / "mono.wav"
    sf.write(mono, (0.2 * rng.standard_normal(22050 * 2)).astype(np.float32), 22050)
    stereo = src / "stereo.wav"
    sf.write(stereo, (0.2 * rng.standard_normal((44100 * 2, 2))).astype(np.float32), 44100)
    sf.write(inputs / "a.wav", sf.read(stereo)[0], 44100, subtype="PCM_16")
    sf.write(inputs / "b.flac", sf.read(mono)[0], 22050)
    sf.write(inputs / "c.ogg", sf.read(stereo)[0], 44100)
    _encode(stereo, inputs / "d.mp3", "-ar", "48000", "-b:a", "192k")
    _encode(mono, inputs / "e.m4a", "-c:a", "aac")
    stem = [arg for k in range(5) for arg in ("-i", str(stereo))][2:]
    _encode(stereo, inputs / "f.stem.mp4", *stem, *[a for k in range(5) for a in ("-map", f"{k}:a")], "-c:a", "aac")
    proc = subprocess.run([sys.executable, "-m", "semisep.cli", "separate", str(inputs), "-o", str(tmp_path / "out"),
                           "--model", model_dir, "--device", "cpu"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = {"a": (44100, 2), "b": (22050, 1), "c": (44100, 2), "d": (48000, 2), "e": (22050, 1), "f": (44100, 2)}
    for name, (rate, channels) in expected.items():
        path = next(inputs.glob(f"{name}.*"))
        decoded, decoded_sr = load_audio(path, stream=0 if name == "f" else None)
        assert decoded_sr == rate and decoded.shape[0] == channels
        out = {t: sf.read(tmp_path / "out" / name / f"{t}.wav", always_2d=True) for t in ("vocals", "accompaniment")}
        for data, sr in out.values():
            assert sr == rate and data.shape == (decoded.shape[1], channels), (name, data.shape)
        # the ratio mask splits the decoded input exactly (float32 WAVs)
        total = out["vocals"][0] + out["accompaniment"][0]
        assert np.abs(total - decoded.T).max() < 1e-5, name


def test_ten_minute_stereo_song_stays_under_2_gb(tmp_path, model_dir):
    rng = np.random.default_rng(3)
    song = tmp_path / "long.wav"
    with sf.SoundFile(song, "w", 44100, 2, subtype="PCM_16") as fh:
        for _ in range(10):  # written a minute at a time
            fh.write((0.1 * rng.standard_normal((44100 * 60, 2))).astype(np.float32))
    code = ("import resource, sys; from semisep.cli import main; rc = main(sys.argv[1:]); "
            "print('peak_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "separate", str(song), "-o", str(tmp_path / "out"),
                           "--model", model_dir, "--device", "cpu"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak_mib = int(proc.stdout.split("peak_kib")[-1]) / 1024
    assert peak_mib < 2048, peak_mib
    assert sf.info(tmp_path / "out" / "long" / "vocals.wav").frames == 44100 * 600
    # around the first 30-second segment join, the two stems still add up to the input
    window = dict(start=44100 * 30 - 5000, frames=10000, dtype="float32")
    total = sum(sf.read(tmp_path / "out" / "long" / f"{t}.wav", **window)[0] for t in ("vocals", "accompaniment"))
    assert np.abs(total - sf.read(song, **window)[0]).max() < 1e-4


def test_output_names_are_unique_per_input_and_musdb_folders_keep_their_track_names(tmp_path):
    from semisep.evaluation.separate import collect_inputs

    songs = ["in/test/Song A/mixture.wav", "in/test/Song B/mixture.wav", "in/extra/take.flac", "x/song.wav", "y/song.wav"]
    for rel in songs:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "in" / "notes.txt").write_text("not audio")
    got = collect_inputs([str(tmp_path / "in"), str(tmp_path / "x" / "song.wav"), str(tmp_path / "y" / "song.wav")])
    assert [name for _, name in got] == ["extra/take", "test/Song A", "test/Song B", "x/song", "y/song"]
    (tmp_path / "empty").mkdir()
    from semisep.pipeline.errors import SemisepError

    with pytest.raises(SemisepError, match="no audio files in this folder"):
        collect_inputs([str(tmp_path / "empty")])


def test_musdb_mixture_files_given_by_path_are_named_by_their_track(tmp_path, model_dir):
    """`semisep separate musdb/test/SONG/mixture.wav -o est` writes est/SONG/ (not est/mixture/),
    two such files two folders; piped, the per-song lines stay whole lines (no progress bar)."""
    from semisep.evaluation.separate import collect_inputs

    songs = [tmp_path / "musdb" / "test" / name / "mixture.wav" for name in ("Song A", "Song B")]
    rng = np.random.default_rng(3)
    for song in songs:
        song.parent.mkdir(parents=True)
        sf.write(song, (0.1 * rng.standard_normal((30000, 2))).astype(np.float32), 22050)
    assert [name for _, name in collect_inputs([str(s) for s in songs])] == ["Song A", "Song B"]
    proc = subprocess.run([sys.executable, "-m", "semisep.cli", "separate", *map(str, songs), "-o", str(tmp_path / "est"),
                           "--model", model_dir], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.relative_to(tmp_path / "est").as_posix() for p in (tmp_path / "est").rglob("*.wav")) == [
        "Song A/accompaniment.wav", "Song A/vocals.wav", "Song B/accompaniment.wav", "Song B/vocals.wav"]
    assert "\r" not in proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[1:] == [f"{songs[0]} -> {tmp_path / 'est' / 'Song A'}/{{vocals,accompaniment}}.wav",
                                            f"{songs[1]} -> {tmp_path / 'est' / 'Song B'}/{{vocals,accompaniment}}.wav",
                                            f"separated 2 of 2 songs into {tmp_path / 'est'}"]


def test_cli_separate_reports_every_failure_in_one_line_and_counts(tmp_path, model_dir):
    rng = np.random.default_rng(4)
    inputs = tmp_path / "in"
    for track in ("Song A", "Song B"):
        (inputs / "test" / track).mkdir(parents=True)
        sf.write(inputs / "test" / track / "mixture.wav", (0.2 * rng.standard_normal((22050, 2))).astype(np.float32), 22050)
    whole = inputs / "cut.wav"
    sf.write(whole, (0.2 * rng.standard_normal((44100, 2))).astype(np.float32), 22050, subtype="PCM_16")
    whole.write_bytes(whole.read_bytes()[: 44 + 22050 * 4 // 2])  # header promises 2 s, the file holds 0.5 s
    (inputs / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    separate = [sys.executable, "-m", "semisep.cli", "separate", "--model", model_dir, "--device", "cpu"]
    proc = subprocess.run(separate + [str(inputs), "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"model: {model_dir} (given with --model)" in proc.stdout
    assert "separated 3 of 4 songs" in proc.stdout and "1 failed" in proc.stdout
    assert any("broken.wav" in line and line.startswith("semisep: error") for line in proc.stderr.splitlines())
    assert any("cut.wav: truncated" in line and "warning" in line for line in proc.stderr.splitlines())
    assert "Traceback" not in proc.stderr
    for track in ("test/Song A", "test/Song B", "cut"):
        assert (tmp_path / "out" / track / "vocals.wav").is_file(), track
    assert not (tmp_path / "out" / "broken").exists()  # a failed song leaves nothing behind
    (tmp_path / "a-file").write_text("x")
    proc = subprocess.run(separate + [str(inputs / "cut.wav"), "-o", str(tmp_path / "a-file")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("semisep: error: -o")
    (tmp_path / "no-audio").mkdir()
    proc = subprocess.run(separate + [str(tmp_path / "no-audio"), "-o", str(tmp_path / "o2")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1 and "no audio files" in proc.stderr and "Traceback" not in proc.stderr


def test_a_damaged_model_is_one_clear_line(tmp_path, model_dir):
    import shutil

    from semisep.pipeline.errors import SemisepError
    from semisep.training.checkpoint import load_model

    corrupt = tmp_path / "corrupt"
    shutil.copytree(model_dir, corrupt)
    (corrupt / "separator.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(SemisepError, match="separator.pt") as info:
        load_model(corrupt)
    assert "weights_only=False" not in str(info.value)
    wrong = tmp_path / "wrong"
    shutil.copytree(model_dir, wrong)
    meta = (wrong / "model.json").read_text().replace('"base_channels": 4', '"base_channels": 8')
    (wrong / "model.json").write_text(meta)
    with pytest.raises(SemisepError, match="weights do not fit the model"):
        load_model(wrong)
    (wrong / "model.json").write_text("{not json")
    with pytest.raises(SemisepError, match="not a valid semisep model description"):
        load_model(wrong)
