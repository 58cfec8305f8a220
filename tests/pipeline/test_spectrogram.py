import numpy as np
import pytest
import torch

from semisep.pipeline.config import TransformConfig
from semisep.pipeline.errors import SemisepError
from semisep.pipeline.spectrogram import features, istft, num_frames, stft


def sdr(ref, est):
    return 10 * np.log10(np.sum(ref**2) / np.sum((ref - est) ** 2))


def test_stft_istft_with_mixture_phase_reconstructs_signal():
    cfg = TransformConfig()
    rng = np.random.default_rng(0)
    t = np.arange(cfg.sample_rate * 3) / cfg.sample_rate
    x = (0.5 * np.sin(2 * np.pi * 220 * t) + 0.1 * rng.standard_normal(t.size)).astype(np.float32)
    spec = stft(torch.from_numpy(x), cfg)
    # rebuild from magnitude and the mixture's phase, as separation does
    rebuilt = istft(spec.abs() * torch.exp(1j * spec.angle()), cfg, len(x)).numpy()
    assert sdr(x, rebuilt) > 60


def test_features_shape_and_log1p():
    cfg = TransformConfig()
    x = torch.randn(2, 8192)
    f = features(x, cfg)
    assert f.shape == (2, cfg.freq_bins, num_frames(8192, cfg))
    assert torch.allclose(f, torch.log1p(stft(x, cfg)[..., : cfg.freq_bins, :].abs()))


def test_transform_mismatch_names_the_difference():
    with pytest.raises(SemisepError, match="hop_length: 128 there vs 256 here"):
        TransformConfig().check_same(TransformConfig(hop_length=128), "shards/x.parquet")
