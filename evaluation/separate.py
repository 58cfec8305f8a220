"""Separating whole songs at their own sample rate and channel count.

The model sees mono at ``transform.sample_rate`` (8192 Hz in the paper). Its vocal and
accompaniment magnitudes give a soft mask ``M = V^p / (V^p + A^p)`` on the model's STFT grid.
The mask is carried to an STFT of each input channel at the input rate whose frames last as
long and whose bins are as wide as the model's (n_fft and hop scaled by rate), interpolated in
time and frequency. Above the model's band (4 kHz at 8192 Hz) there is no estimate, so each
frame uses the mean mask of the model's top octave there. Vocals are the masked STFT inverted;
accompaniment is the input minus vocals, so the two always add up to the input.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.audio import resample
from pipeline.errors import SemisepError
from pipeline.spectrogram import TransformConfig, features, istft, stft


@torch.no_grad()
def model_masks(model, mono: np.ndarray, transform: TransformConfig, power: float = 1.0,
                chunk_frames: int = 1024) -> np.ndarray:
    """Vocal soft mask (freq_bins, frames) for mono audio at transform.sample_rate.

    The spectrogram is cut into chunks of ``chunk_frames`` with half a chunk of context each
    side, so memory stays bounded on long songs and chunk edges see real context.
    """
    x = features(torch.from_numpy(np.ascontiguousarray(mono, np.float32)), transform)  # (F, T)
    total = x.shape[1]
    unit = 2 ** model.depth
    ctx = chunk_frames // 2
    masks = torch.empty(x.shape)
    for start in range(0, total, chunk_frames):
        a, b = max(0, start - ctx), min(total, start + chunk_frames + ctx)
        seg = x[:, a:b]
        pad = (-seg.shape[1]) % unit
        seg = torch.nn.functional.pad(seg, (0, pad))
        est = torch.expm1(model(seg.unsqueeze(0))[0, :, :, : b - a]).clamp_min(0) ** power  # (2, F, T)
        m = est[0] / (est[0] + est[1] + 1e-8)
        stop = min(start + chunk_frames, total)
        masks[:, start:stop] = m[:, start - a: stop - a]
    return masks.numpy()


def full_rate_stft_config(transform: TransformConfig, sr: int) -> TransformConfig:
    """An STFT at ``sr`` with the frame duration and bin width of the model's STFT."""
    scale = sr / transform.sample_rate
    n_fft = int(round(transform.n_fft * scale / 2)) * 2
    hop = max(1, int(round(transform.hop_length * scale)))
    return TransformConfig(sr, n_fft, hop, n_fft // 2 + 1)


def mask_to_rate(mask: np.ndarray, transform: TransformConfig, full: TransformConfig, frames: int) -> np.ndarray:
    """Model-grid mask (freq_bins, T) -> full-rate grid (full.n_fft // 2 + 1, frames)."""
    t_model = np.arange(mask.shape[1]) * transform.hop_length / transform.sample_rate
    t_full = np.arange(frames) * full.hop_length / full.sample_rate
    idx = np.clip(np.searchsorted(t_model, t_full), 0, mask.shape[1] - 1)
    prev = np.clip(idx - 1, 0, mask.shape[1] - 1)
    w = np.where(idx == prev, 1.0, (t_full - t_model[prev]) / np.maximum(t_model[idx] - t_model[prev], 1e-9))
    w = np.clip(w, 0, 1)
    in_time = mask[:, prev] * (1 - w) + mask[:, idx] * w  # (F_model, frames)
    f_model = np.arange(mask.shape[0]) * transform.sample_rate / transform.n_fft
    f_full = np.arange(full.n_fft // 2 + 1) * full.sample_rate / full.n_fft
    top = f_model[-1]
    top_octave = in_time[f_model >= top / 2].mean(axis=0)
    out = np.empty((len(f_full), frames), np.float32)
    inside = f_full <= top
    for j in range(frames):
        out[inside, j] = np.interp(f_full[inside], f_model, in_time[:, j])
    out[~inside] = top_octave
    return out


def separate(model, transform: TransformConfig, audio: np.ndarray, sr: int, power: float = 1.0) -> dict[str, np.ndarray]:
    """audio: float32 (channels, samples) at sr -> {'vocals', 'accompaniment'} of the same shape."""
    min_seconds = transform.n_fft / transform.sample_rate
    if audio.shape[1] < min_seconds * sr:
        raise SemisepError(f"too short to separate: {audio.shape[1]} samples, at least {min_seconds:.3f} s needed")
    mono = resample(audio.mean(axis=0), sr, transform.sample_rate)
    mask = model_masks(model, mono, transform, power)
    full = full_rate_stft_config(transform, sr)
    x = torch.from_numpy(np.ascontiguousarray(audio, np.float32))
    spec = stft(x, full)  # (channels, bins, frames)
    m = torch.from_numpy(mask_to_rate(mask, transform, full, spec.shape[-1]))
    vocals = istft(spec * m, full, audio.shape[1]).numpy()
    return {"vocals": vocals, "accompaniment": audio - vocals}
