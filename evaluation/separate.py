"""Separating whole songs at their own sample rate and channel count.

The model sees mono at ``transform.sample_rate`` (8192 Hz in the paper). Its vocal and
accompaniment magnitudes give a soft mask ``M = V^p / (V^p + A^p)`` on the model's STFT grid.
The mask is carried to an STFT of each input channel at the input rate whose frames last as
long and whose bins are as wide as the model's (n_fft and hop scaled by rate), interpolated in
time and frequency. Above the model's band (4 kHz at 8192 Hz) there is no estimate, so each
frame uses the mean mask of the model's top octave there. Post-filters: ``softmask`` inverts
the masked STFT; ``wiener`` starts from the soft-mask estimates of every channel and runs
norbert's multichannel Wiener filter (EM over the sources' spatial covariances, as
Open-Unmix does). Either way accompaniment is the input minus vocals, so the two always add up
to the input.

The full-rate stage runs on segments of ``segment_seconds`` (30 s) that overlap by two FFT
windows and are cross-faded with complementary linear ramps, so memory does not grow with
the song beyond the decoded input, and finished blocks go to a sink (a file writer, or arrays).
Segments start on the STFT's hop grid, so the soft-mask result equals the unsegmented one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from semisep.pipeline.config import TransformConfig
from semisep.pipeline.errors import SemisepError
from semisep.pipeline.spectrogram import features, istft, resample, stft


def window_weights(frames: int) -> torch.Tensor:
    """sin^2 weights (frames,) whose copies shifted by frames // 2 add up to exactly 1."""
    return torch.sin(torch.pi * (torch.arange(frames) + 0.5) / frames) ** 2


@torch.no_grad()  # not inference_mode: the model's weights are converted in place and must stay usable
def model_estimates(model, mono: np.ndarray, transform: TransformConfig, window_frames: int = 64,
                    chunk_frames: int = 2048, device: str = "cpu", progress: bool = False) -> np.ndarray:
    """Vocal and accompaniment magnitudes (2, freq_bins, frames) for mono audio at transform.sample_rate.

    The model sees what it was trained on: windows of ``window_frames`` (its training excerpt
    length) every ``window_frames // 2`` frames, on a grid fixed by the song (half a window of
    silence before the first frame), their magnitudes cross-faded with ``window_weights``. Every
    frame is covered by two windows whose weights add up to 1. The U-Net's GroupNorm statistics
    span one window, as in training, so the estimate does not depend on how the song is cut for
    memory: ``chunk_frames`` only groups windows into batches (tested to float rounding).
    """
    x = features(torch.from_numpy(np.ascontiguousarray(mono, np.float32)), transform)  # (F, T)
    total, window, hop = x.shape[1], window_frames, window_frames // 2
    assert window % 2 ** model.depth == 0 and hop > 0, window
    starts = list(range(-hop, total, hop))  # window k covers [starts[k], starts[k] + window)
    padded = torch.nn.functional.pad(x, (hop, starts[-1] + window - total))  # frame f sits at f + hop
    weights = window_weights(window)
    out = torch.zeros((2, x.shape[0], total + hop + window))
    # channels-last convolutions are ~10% faster on CPU (oneDNN) and no slower on GPU
    model = model.to(device, memory_format=torch.channels_last)
    per_batch = max(1, chunk_frames // hop)
    batches = range(0, len(starts), per_batch)
    if progress and len(batches) >= 4:
        from tqdm import tqdm  # here: inference needs torch and numpy only

        batches = tqdm(batches, desc="separate", unit="chunk", leave=False, disable=None)  # None: terminals only
    for b in batches:
        group = starts[b:b + per_batch]
        seg = torch.stack([padded[:, s + hop: s + hop + window] for s in group]).to(device)  # (n, F, W)
        est = torch.expm1(model(seg).float()).clamp_min(0).cpu() * weights  # (n, 2, F, W)
        for k, s in enumerate(group):
            out[:, :, s + hop: s + hop + window] += est[k]
    return out[:, :, hop: hop + total].numpy()


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


def mask_to_rate(mask: np.ndarray, transform: TransformConfig, full: TransformConfig, frames: int,
                 start: int = 0) -> np.ndarray:
    """Model-grid mask (freq_bins, T) -> full-rate grid (full.n_fft // 2 + 1, frames).

    ``start``: the sample (at full.sample_rate) where the full-rate STFT's first frame is centred.
    """
    t_model = np.arange(mask.shape[1]) * transform.hop_length / transform.sample_rate
    t_full = (start + np.arange(frames) * full.hop_length) / full.sample_rate
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




POST_FILTERS = ("softmask", "wiener")


def mono_mix(audio: np.ndarray) -> np.ndarray:
    """(channels, samples) -> (samples,) channel mean (a BLAS product: fast on interleaved data)."""
    return np.full(audio.shape[0], 1.0 / audio.shape[0], np.float32) @ audio


def separate(model, transform: TransformConfig, audio: np.ndarray, sr: int, power: float = 1.0,
             device: str = "cpu", progress: bool = False, post_filter: str = "softmask",
             wiener_iterations: int = 1, sink=None, segment_seconds: float = 30.0,
             window_frames: int = 64) -> dict[str, np.ndarray] | None:
    """audio: float32 (channels, samples) at sr -> {'vocals', 'accompaniment'} of the same shape.

    ``window_frames``: the excerpt length the model was trained on (its model.json says).

    With ``sink``, nothing is returned: ``sink(start, vocals)`` receives consecutive finished
    blocks of vocals, (channels, m) from sample ``start`` (accompaniment is the input there minus them).
    """
    if post_filter not in POST_FILTERS:
        raise SemisepError(f"unknown post-filter {post_filter!r} (use one of {', '.join(POST_FILTERS)})")
    min_seconds = transform.n_fft / transform.sample_rate
    n = audio.shape[1]
    if n < min_seconds * sr:
        raise SemisepError(f"too short to separate: {n} samples (audio is (channels, samples) here; got shape "
                           f"{tuple(audio.shape)}), at least {min_seconds:.3f} s at {sr} Hz needed")
    est = model_estimates(model, resample(mono_mix(audio), sr, transform.sample_rate), transform,
                          window_frames=window_frames, device=device, progress=progress)
    if post_filter == "softmask":
        est = est ** power
    mask = est[0] / (est[0] + est[1] + 1e-8)
    full = full_rate_stft_config(transform, sr)
    result = None
    if sink is None:
        result = np.empty(audio.shape, np.float32)

        def sink(start, block):
            result[:, start:start + block.shape[1]] = block

    overlap = full.n_fft  # half-width of the cross-fade ramp
    pad = full.n_fft      # extra samples each side, computed and dropped (STFT edge effects)
    seg = max(int(segment_seconds * sr), 4 * overlap)
    bounds = list(range(0, n, seg)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < 2 * overlap:
        del bounds[-2]  # a short tail joins the previous segment
    ramp = (np.arange(2 * overlap, dtype=np.float32) + 0.5) / (2 * overlap)
    carry = None  # vocals over [b_k - overlap, b_k + overlap) from the previous segment
    for k in range(len(bounds) - 1):
        first, last = k == 0, k == len(bounds) - 2
        lo = bounds[k] if first else bounds[k] - overlap
        hi = bounds[k + 1] if last else bounds[k + 1] + overlap
        # segments start on the full-rate hop grid, so their frames are the song's frames and,
        # away from the dropped edges, the result is the unsegmented one (to float rounding)
        a, b = max(0, (lo - pad) // full.hop_length * full.hop_length), min(n, hi + pad)
        vocals = _separate_segment(np.ascontiguousarray(audio[:, a:b], np.float32), a, mask, transform, full,
                                   post_filter, wiener_iterations)[:, lo - a: hi - a]
        if not first:
            vocals[:, : 2 * overlap] *= ramp
            vocals[:, : 2 * overlap] += carry
        if not last:
            vocals[:, -2 * overlap:] *= ramp[::-1]
            carry = vocals[:, -2 * overlap:].copy()
            vocals = vocals[:, : -2 * overlap]
        sink(lo, vocals)
    if result is not None:
        return {"vocals": result, "accompaniment": audio - result}
    return None


def _separate_segment(x: np.ndarray, start: int, mask: np.ndarray, transform: TransformConfig,
                      full: TransformConfig, post_filter: str, iterations: int) -> np.ndarray:
    """Vocals (channels, samples) of the segment x (channels, samples) that begins at sample ``start``."""
    spec = stft(torch.from_numpy(x), full)  # (channels, bins, frames)
    m = torch.from_numpy(mask_to_rate(mask, transform, full, spec.shape[-1], start))
    if post_filter == "wiener":
        import norbert

        mix = spec.permute(2, 1, 0).numpy()  # (frames, bins, channels)
        mag = np.abs(mix)
        mt = m.numpy().T[:, :, None]
        v = np.stack([mag * mt, mag * (1 - mt)], axis=-1)  # soft-mask estimates, (frames, bins, channels, 2)
        voc = norbert.wiener(v, mix.astype(np.complex128), iterations)[..., 0]
        spec = torch.from_numpy(np.ascontiguousarray(voc.transpose(2, 1, 0)).astype(np.complex64))
    else:
        spec *= m
    return istft(spec, full, x.shape[1]).numpy()


class EstimateWriter:
    """Writes ``<folder>/vocals.wav`` and ``accompaniment.wav`` (32-bit float) block by block.

    A sink for ``separate``: blocks are written by one background thread while the next segment is
    computed, into temp names renamed only when every block is in (``close``); ``abort`` removes them.
    """

    def __init__(self, folder, audio: np.ndarray, sr: int):
        import soundfile as sf
        from concurrent.futures import ThreadPoolExecutor
        from pathlib import Path

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.audio = audio
        self.names = ("vocals", "accompaniment")
        self.tmp = [self.folder / f".{name}.wav.tmp" for name in self.names]
        self.files = [sf.SoundFile(str(t), "w", sr, audio.shape[0], subtype="FLOAT", format="WAV") for t in self.tmp]
        self.pool = ThreadPoolExecutor(1)
        self.pending = []

    def __call__(self, start: int, vocals: np.ndarray) -> None:
        self.pending.append(self.pool.submit(self._write, start, vocals))

    def _write(self, start: int, vocals: np.ndarray) -> None:
        rest = self.audio[:, start:start + vocals.shape[1]] - vocals
        self.files[0].write(vocals.T)
        self.files[1].write(rest.T)

    def close(self) -> None:
        import os

        for job in self.pending:
            job.result()  # re-raises a write error here
        self.pool.shutdown()
        for f, tmp, name in zip(self.files, self.tmp, self.names):
            f.close()
            os.replace(tmp, self.folder / f"{name}.wav")

    def abort(self, root=None) -> None:
        """Remove what this song wrote, and its folders up to ``root`` when they are left empty."""
        self.pool.shutdown(cancel_futures=True)
        for f, tmp in zip(self.files, self.tmp):
            f.close()
            tmp.unlink(missing_ok=True)
        folder = self.folder
        while folder != root and folder.exists() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent


def collect_inputs(items: list[str]) -> list[tuple[Path, str]]:
    """Audio files to separate and the output folder name of each, unique per input.

    Files found in a folder are named by their path inside it, without extension; a file called
    ``mixture`` (MUSDB18-HQ, DSD100 layouts) takes its folder's name, so ``test/Song/mixture.wav``
    becomes ``test/Song`` and estimates land where sigsep tools look for them. Files given by
    themselves are named by their stem, a ``mixture`` file by its folder (``musdb/test/Song/mixture.wav``
    is ``Song``); clashes (two ``song.wav``) get their parent folders' names prefixed until they
    differ. A folder without audio is an error.
    """
    from semisep.pipeline.audio import AUDIO_EXTENSIONS

    found: list[tuple[Path, Path]] = []  # (file, name relative to where it was found)
    for item in items:
        root = Path(item)
        if root.is_dir():
            files = sorted(f for f in root.rglob("*") if f.is_file() and not f.name.startswith(".")
                           and (f.suffix.lower() in AUDIO_EXTENSIONS or f.name.endswith(".stem.mp4")))
            if not files:
                raise SemisepError(f"{root}: no audio files in this folder ({', '.join(sorted(AUDIO_EXTENSIONS))})")
            found += [(f, _song_name(f.relative_to(root))) for f in files]
        else:
            found.append((root, _song_name(Path(root.absolute().parent.name) / root.name)
                          if Path(root.name).stem == "mixture" else _song_name(Path(root.name))))
    names = [name for _, name in found]
    depth = {i: 0 for i in range(len(found))}
    while len(set(names)) < len(names):
        clashing = {i for i, n in enumerate(names) if names.count(n) > 1}
        grown = False
        for i in clashing:
            parents = found[i][0].absolute().parent.parts
            if depth[i] < len(parents) - 1:
                depth[i] += 1
                names[i] = Path(*parents[len(parents) - depth[i]:], found[i][1])
                grown = True
        if not grown:
            for k, i in enumerate(sorted(clashing)):
                names[i] = Path(f"{names[i]}-{k + 1}")
    return [(path, str(name)) for (path, _), name in zip(found, names)]


def _song_name(relative: Path) -> Path:
    if relative.name.endswith(".stem.mp4"):
        return relative.with_name(relative.name[: -len(".stem.mp4")])
    if relative.stem == "mixture" and relative.parent != Path("."):
        return relative.parent
    return relative.with_suffix("")
