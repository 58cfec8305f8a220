"""The one spectrogram transform used by ingestion, training and inference.

Features are ``log1p(|STFT|)`` of mono audio at ``sample_rate``, keeping the lowest
``freq_bins`` bins (the paper keeps 256 of the 257 bins of a 512-point FFT, dropping Nyquist).
The parameters travel with every shard set and every model; ``check_same`` turns a mismatch
into an error instead of a silent use of wrong features.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TransformConfig:
    sample_rate: int = 8192
    n_fft: int = 512
    hop_length: int = 256
    freq_bins: int = 256

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def check_same(self, other: "TransformConfig", where: str) -> None:
        """Raise if ``other`` (read from ``where``) differs from this transform."""
        if self == other:
            return
        from pipeline.errors import SemisepError

        diffs = [
            f"{k}: {v} there vs {getattr(self, k)} here"
            for k, v in other.to_dict().items()
            if getattr(self, k) != v
        ]
        raise SemisepError(
            f"{where}: spectrogram transform differs from the config ({'; '.join(diffs)}); "
            "re-run `semisep ingest` with this config or use the config the data was built with"
        )


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


def features(audio: torch.Tensor, cfg: TransformConfig) -> torch.Tensor:
    """audio: (..., samples) at cfg.sample_rate -> log-magnitude (..., freq_bins, frames)."""
    return log_magnitude(stft(audio, cfg), cfg)


def num_frames(num_samples: int, cfg: TransformConfig) -> int:
    """Frames that ``stft`` returns for ``num_samples`` samples (center=True)."""
    return num_samples // cfg.hop_length + 1
