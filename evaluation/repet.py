"""REPET-SIM: the classical, non-learned reference every evaluation table carries.

Rafii & Pardo's similarity-based repetition model as in librosa's vocal separation example:
the accompaniment's magnitude at each frame is the median of its most similar frames (cosine
similarity, at least 2 s apart); soft masks (margins 2 and 10, power 2) split the mixture. The
mask is computed on the channel mean and applied to every channel; accompaniment = mixture -
vocals, as for the models, so the two add up to the input.
"""

from __future__ import annotations

import numpy as np


def repet_sim(mixture: np.ndarray, sr: int, n_fft: int, hop_length: int) -> dict[str, np.ndarray]:
    """mixture: float32 (channels, samples) -> {'vocals', 'accompaniment'} of the same shape."""
    import librosa

    mono = mixture.mean(axis=0)
    full = np.abs(librosa.stft(mono, n_fft=n_fft, hop_length=hop_length))
    width = int(librosa.time_to_frames(2.0, sr=sr, hop_length=hop_length))
    width = max(1, min(width, (full.shape[1] - 1) // 2 - 1))  # short clips: fewer candidate frames
    repeating = librosa.decompose.nn_filter(full, aggregate=np.median, metric="cosine", width=width)
    repeating = np.minimum(full, repeating)
    vocal_mask = librosa.util.softmask(full - repeating, 10 * repeating, power=2)
    spec = librosa.stft(mixture, n_fft=n_fft, hop_length=hop_length)  # (channels, bins, frames)
    vocals = librosa.istft(spec * vocal_mask, hop_length=hop_length, n_fft=n_fft, length=mixture.shape[-1])
    vocals = vocals.astype(np.float32)
    return {"vocals": vocals, "accompaniment": mixture - vocals}
