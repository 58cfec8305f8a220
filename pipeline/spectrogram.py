"""The one spectrogram transform used by ingestion, training and inference.

Features are ``log1p(|STFT|)`` of mono audio at ``sample_rate``, keeping the lowest
``freq_bins`` bins (the paper keeps 256 of the 257 bins of a 512-point FFT, dropping Nyquist).
The parameters travel with every shard set and every model; ``check_same`` turns a mismatch
into an error instead of a silent use of wrong features.
"""

from __future__ import annotations

import numpy as np
import torch

from semisep.pipeline.config import TransformConfig


def stft(audio: torch.Tensor, cfg: TransformConfig) -> torch.Tensor:
    """Complex STFT. audio: (..., samples) float -> (..., n_fft // 2 + 1, frames) complex."""
    window = torch.hann_window(cfg.n_fft, device=audio.device, dtype=audio.dtype)
    shape = audio.shape[:-1]
    flat = audio.reshape(-1, audio.shape[-1])
    spec = torch.stft(
        flat, cfg.n_fft, cfg.hop_length, window=window, center=True, return_complex=True
    )
    return spec.reshape(*shape, *spec.shape[-2:])


def istft(spec: torch.Tensor, cfg: TransformConfig, length: int) -> torch.Tensor:
    """Inverse of ``stft``. spec: (..., n_fft // 2 + 1, frames) complex -> (..., length)."""
    window = torch.hann_window(cfg.n_fft, device=spec.device, dtype=spec.real.dtype)
    shape = spec.shape[:-2]
    flat = spec.reshape(-1, *spec.shape[-2:])
    audio = torch.istft(flat, cfg.n_fft, cfg.hop_length, window=window, center=True, length=length)
    return audio.reshape(*shape, length)


def log_magnitude(spec: torch.Tensor, cfg: TransformConfig) -> torch.Tensor:
    """Model features. spec: (..., n_fft // 2 + 1, frames) complex -> (..., freq_bins, frames)."""
    return torch.log1p(spec[..., : cfg.freq_bins, :].abs())


def planes_log_magnitude(planes: torch.Tensor) -> torch.Tensor:
    """Model features from stored STFT planes. planes: (..., 2, F, T) real, imaginary -> (..., F, T)."""
    planes = planes.float()
    return torch.log1p(torch.sqrt(planes[..., 0, :, :] ** 2 + planes[..., 1, :, :] ** 2))


def features(audio: torch.Tensor, cfg: TransformConfig) -> torch.Tensor:
    """audio: (..., samples) at cfg.sample_rate -> log-magnitude (..., freq_bins, frames)."""
    return log_magnitude(stft(audio, cfg), cfg)


def num_frames(num_samples: int, cfg: TransformConfig) -> int:
    """Frames that ``stft`` returns for ``num_samples`` samples (center=True)."""
    return num_samples // cfg.hop_length + 1


def to_mono(audio: np.ndarray) -> np.ndarray:
    """(channels, samples) -> (samples,), the channel mean."""
    return audio.mean(axis=0)


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling along the last axis, to bring audio to the transform's rate.

    soxr's HQ preset (librosa's ``soxr_hq``), called directly: importing librosa costs each Ray
    worker ~2 s for nothing here. On a machine with torch and numpy only (a lent GPU box running
    bench/gpu.py) an FFT resampler stands in: exact for band-limited periodic signals, about 1%
    (RMS) from soxr on noisy audio, whose transition band it does not have.
    """
    if sr_in == sr_out:
        return audio
    x = np.asarray(audio, np.float32)
    try:
        import soxr
    except ImportError:
        n_out = int(round(x.shape[-1] * sr_out / sr_in))
        spec = np.fft.rfft(x, axis=-1)
        bins = n_out // 2 + 1
        spec = spec[..., :bins] if spec.shape[-1] >= bins else np.pad(spec, [(0, 0)] * (x.ndim - 1) + [(0, bins - spec.shape[-1])])
        return (np.fft.irfft(spec, n_out, axis=-1) * (n_out / x.shape[-1])).astype(np.float32)
    if x.ndim == 1:
        return soxr.resample(x, sr_in, sr_out, quality="HQ")
    return np.ascontiguousarray(soxr.resample(x.T, sr_in, sr_out, quality="HQ").T)
