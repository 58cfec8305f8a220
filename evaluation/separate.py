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
                chunk_frames: int = 1024, context: int = 128, device: str = "cpu",
                progress: bool = False) -> np.ndarray:
    """Vocal soft mask (freq_bins, frames) for mono audio at transform.sample_rate.

    The spectrogram is cut into chunks of ``chunk_frames`` with ``context`` frames more each side
    (4 s at the paper's hop, more than the U-Net's receptive field), so memory stays bounded on
    long songs and chunk edges see real context.
    """
    from tqdm import tqdm

    x = features(torch.from_numpy(np.ascontiguousarray(mono, np.float32)), transform)  # (F, T)
    total = x.shape[1]
    unit = 2 ** model.depth
    ctx = context
    masks = torch.empty(x.shape)
    model = model.to(device)
    starts = range(0, total, chunk_frames)
    for start in tqdm(starts, desc="separate", unit="chunk", leave=False, disable=not progress or len(starts) < 4):
        a, b = max(0, start - ctx), min(total, start + chunk_frames + ctx)
        seg = x[:, a:b]
        pad = (-seg.shape[1]) % unit
        seg = torch.nn.functional.pad(seg, (0, pad)).to(device)
        est = torch.expm1(model(seg.unsqueeze(0))[0, :, :, : b - a]).clamp_min(0).float().cpu() ** power  # (2, F, T)
        m = est[0] / (est[0] + est[1] + 1e-8)
        stop = min(start + chunk_frames, total)
        masks[:, start:stop] = m[:, start - a: stop - a]
    return masks.numpy()


def _fast_fft_size(n: int) -> int:
    """The smallest even n' >= n with no prime factor above 5 (2756 = 4 * 13 * 53 is 4x slower than 2880)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1 and n % 2 == 0:
            return n
        n += 1


def full_rate_stft_config(transform: TransformConfig, sr: int) -> TransformConfig:
    """An STFT at ``sr`` with (about) the frame duration and bin width of the model's STFT.

    The hop is the model's hop in seconds; the window is rounded up to a size the FFT is fast at
    (at most a few percent longer), the mask being interpolated onto its bins anyway.
    """
    scale = sr / transform.sample_rate
    n_fft = _fast_fft_size(int(round(transform.n_fft * scale / 2)) * 2)
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
    out = np.empty((len(f_full), frames), np.float32)
    inside = f_full <= top
    # linear interpolation along frequency, the same weights for every frame
    hi = np.clip(np.searchsorted(f_model, f_full[inside]), 1, len(f_model) - 1)
    lo = hi - 1
    wf = ((f_full[inside] - f_model[lo]) / (f_model[hi] - f_model[lo]))[:, None]
    out[inside] = in_time[lo] * (1 - wf) + in_time[hi] * wf
    out[~inside] = in_time[f_model >= top / 2].mean(axis=0)
    return out


def separate(model, transform: TransformConfig, audio: np.ndarray, sr: int, power: float = 1.0,
             device: str = "cpu", progress: bool = False) -> dict[str, np.ndarray]:
    """audio: float32 (channels, samples) at sr -> {'vocals', 'accompaniment'} of the same shape.

    Channels are masked and inverted one at a time, so peak memory grows with one channel's STFT.
    """
    min_seconds = transform.n_fft / transform.sample_rate
    if audio.shape[1] < min_seconds * sr:
        raise SemisepError(f"too short to separate: {audio.shape[1]} samples, at least {min_seconds:.3f} s needed")
    mono = resample(audio.mean(axis=0), sr, transform.sample_rate)
    mask = model_masks(model, mono, transform, power, device=device, progress=progress)
    full = full_rate_stft_config(transform, sr)
    vocals = np.empty(audio.shape, np.float32)
    m = None
    for c in range(audio.shape[0]):
        spec = stft(torch.from_numpy(np.ascontiguousarray(audio[c], np.float32)), full)  # (bins, frames)
        if m is None:
            m = torch.from_numpy(mask_to_rate(mask, transform, full, spec.shape[-1]))
        spec *= m
        vocals[c] = istft(spec, full, audio.shape[1]).numpy()
        del spec
    return {"vocals": vocals, "accompaniment": audio - vocals}
