"""REPET-SIM: the classical, non-learned reference every evaluation table carries.

Rafii & Pardo's similarity-based repetition model as in librosa's vocal separation example:
the accompaniment's magnitude at each frame is the median of its most similar frames (cosine
similarity, at least 2 s apart); soft masks (margins 2 and 10, power 2) split the mixture. The
mask is computed on the channel mean and applied to every channel; accompaniment = mixture -
vocals, as for the models, so the two add up to the input.

The pseudo-labeller (evaluation/pseudo_labels.py) can blend this mask with a teacher's: the two
err differently, and a weak teacher's labels gain from the average (``pseudo.repet_weights``).
"""

from __future__ import annotations

import numpy as np


def repet_mask(magnitude: np.ndarray, sr: int, hop_length: int) -> np.ndarray:
    """REPET-SIM's vocal soft mask (bins, frames) for a mono magnitude spectrogram (bins, frames)."""
    import librosa

    width = int(librosa.time_to_frames(2.0, sr=sr, hop_length=hop_length))
    width = max(1, min(width, (magnitude.shape[1] - 1) // 2 - 1))  # short clips: fewer candidate frames
    repeating = librosa.decompose.nn_filter(magnitude, aggregate=np.median, metric="cosine", width=width)
    repeating = np.minimum(magnitude, repeating)
    return librosa.util.softmask(magnitude - repeating, 10 * repeating, power=2)


def excerpt_masks(mixture: np.ndarray, starts, sr: int, hop_length: int) -> np.ndarray:
    """REPET-SIM's vocal mask for each excerpt of one song, computed on the whole song: mixture
    (n, 2, F, T) complex STFT planes of excerpts starting at frames ``starts`` -> (n, 1, F, T)."""
    n, _, bins, frames = mixture.shape
    starts = np.asarray(starts, dtype=np.int64)
    song = np.zeros((bins, int(starts.max()) + frames), dtype=np.float32)
    magnitude = np.sqrt((mixture.astype(np.float32) ** 2).sum(axis=1))  # (n, F, T)
    for k, s in enumerate(starts):  # overlapping excerpts hold the same frames
        song[:, s:s + frames] = magnitude[k]
    mask = repet_mask(song, sr, hop_length).astype(np.float32)
    return np.stack([mask[None, :, s:s + frames] for s in starts])


def repet_sim(mixture: np.ndarray, sr: int, n_fft: int, hop_length: int) -> dict[str, np.ndarray]:
    """mixture: float32 (channels, samples) -> {'vocals', 'accompaniment'} of the same shape."""
    import librosa

    mono = mixture.mean(axis=0)
    full = np.abs(librosa.stft(mono, n_fft=n_fft, hop_length=hop_length))
    vocal_mask = repet_mask(full, sr, hop_length)
    spec = librosa.stft(mixture, n_fft=n_fft, hop_length=hop_length)  # (channels, bins, frames)
    vocals = librosa.istft(spec * vocal_mask, hop_length=hop_length, n_fft=n_fft, length=mixture.shape[-1])
    vocals = vocals.astype(np.float32)
    return {"vocals": vocals, "accompaniment": mixture - vocals}
