"""Audio files: a failed write leaves nothing behind; truncated files are recognised."""

import numpy as np
import pytest
import soundfile as sf

from semisep.pipeline.audio import save_audio, truncation


def test_a_failed_write_leaves_no_temp_file(tmp_path):
    target = tmp_path / "vocals.wav"
    target.mkdir()  # the rename onto it fails
    with pytest.raises(OSError):
        save_audio(target, np.zeros((2, 100), np.float32), 44100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocals.wav"]


def test_truncation_is_reported_and_a_whole_file_is_not(tmp_path):
    whole = tmp_path / "whole.wav"
    sf.write(whole, np.zeros((44100, 2), np.float32), 44100, subtype="PCM_16")
    assert truncation(whole) == ""
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:10000])
    assert truncation(cut).startswith("truncated: the header promises 176400 bytes")
