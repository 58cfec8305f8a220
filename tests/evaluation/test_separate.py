import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from pipeline.config import load_config
from pipeline.spectrogram import TransformConfig
from evaluation.separate import separate
from training.checkpoint import save_model
from training.step import build_separator


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
    audio = (0.3 * rng.standard_normal((channels, int(sr * 1.3) + 7))).astype(np.float32)
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
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "separate", str(tmp_path / "in"), str(missing),
                           "-o", str(tmp_path / "out"), "--model", model_dir], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 4, errors
    assert any("empty.wav" in e and "empty" in e for e in errors)
    assert any("text.wav" in e and "cannot decode" in e for e in errors)
    assert any("corrupt.wav" in e for e in errors)
    assert any("nowhere.wav" in e and "not found" in e for e in errors)
    for target in ("vocals", "accompaniment"):
        data, sr = sf.read(tmp_path / "out" / "song" / f"{target}.wav")
        assert sr == 48000 and data.shape == (48000, 2)
