"""Decoding, checking, resampling and writing audio.

Arrays are float32 ``(channels, samples)``. Every problem with a file is raised as
``AudioError(path, reason)`` so callers can report it and move on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from semisep.pipeline.errors import AudioError

SOUNDFILE_EXTENSIONS = {".wav", ".flac", ".ogg", ".aiff", ".aif"}
FFMPEG_EXTENSIONS = {".mp3", ".m4a", ".mp4", ".aac"}
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS | FFMPEG_EXTENSIONS


def load_audio(path: str | os.PathLike, stream: int | None = None) -> tuple[np.ndarray, int]:
    """Decode a file to float32 (channels, samples) and its sample rate.

    ``stream`` picks an audio stream of a multi-stream container (MUSDB18 ``.stem.mp4``).
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "file not found")
    if not path.is_file():
        raise AudioError(path, "not a file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    ext = path.suffix.lower()
    if ext not in AUDIO_EXTENSIONS:
        raise AudioError(path, f"unsupported extension {ext!r} (use one of {sorted(AUDIO_EXTENSIONS)})")
    if ext in SOUNDFILE_EXTENSIONS and stream is None:
        audio, sr = _load_soundfile(path)
    else:
        audio, sr = _load_ffmpeg(path, stream)
    check_audio(audio, path)
    return audio, sr


def truncation(path: str | os.PathLike) -> str:
    """'' for a whole file; else what its header promised and what it holds (a copy cut short)."""
    path = Path(path)
    if path.suffix.lower() not in SOUNDFILE_EXTENSIONS:
        return ""
    try:
        extra = sf.info(str(path)).extra_info
    except (sf.LibsndfileError, RuntimeError, OSError):
        return ""
    for line in extra.splitlines():
        if line.startswith("data") and "(should be" in line:
            promised, holds = (int(x) for x in re.findall(r"\d+", line)[:2])
            return f"truncated: the header promises {promised} bytes of audio, the file holds {holds}"
    return ""


def _load_soundfile(path: Path) -> tuple[np.ndarray, int]:
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(path, f"cannot decode: {_short(exc)}") from None
    return data.T, int(sr)  # a (channels, samples) view: no copy of a long file


def _load_ffmpeg(path: Path, stream: int | None) -> tuple[np.ndarray, int]:
    if shutil.which("ffmpeg") is None:
        raise AudioError(path, "decoding this format needs ffmpeg, which is not installed")
    sr, channels = _probe(path, stream)
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path)]
    if stream is not None:
        cmd += ["-map", f"0:a:{stream}"]
    cmd += ["-f", "f32le", "-acodec", "pcm_f32le", "-"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        raise AudioError(path, f"cannot decode: {_short(proc.stderr.decode(errors='replace'))}")
    data = np.frombuffer(proc.stdout, dtype="<f4")
    if data.size == 0:
        raise AudioError(path, "no audio samples")
    return np.ascontiguousarray(data.reshape(-1, channels).T), sr


def _probe(path: Path, stream: int | None) -> tuple[int, int]:
    cmd = ["ffprobe", "-v", "error", "-select_streams", f"a:{stream or 0}",
           "-show_entries", "stream=sample_rate,channels", "-of", "csv=p=0", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    fields = proc.stdout.strip().split(",")
    if proc.returncode != 0 or len(fields) < 2:
        raise AudioError(path, f"cannot decode: {_short(proc.stderr) or 'no audio stream'}")
    return int(fields[0]), int(fields[1])


def audio_info(path: str | os.PathLike, stream: int | None = None) -> tuple[float, int, int]:
    """(duration in seconds, sample rate, channels) from the file's header, without decoding it."""
    path = Path(path)
    try:
        if path.suffix.lower() in SOUNDFILE_EXTENSIONS and stream is None:
            info = sf.info(str(path))
            return info.frames / info.samplerate, int(info.samplerate), int(info.channels)
        sr, channels = _probe(path, stream)
        proc = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                              capture_output=True, text=True)
        return float(proc.stdout.strip() or 0), sr, channels
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError, AudioError):
        return 0.0, 0, 0


def _short(message: object) -> str:
    text = " ".join(str(message).split())
    return text[:200] or "unknown decoder error"


def check_audio(audio: np.ndarray, path: str | os.PathLike) -> None:
    """Refuse audio that would poison features: no samples, NaN or infinite values."""
    if audio.ndim != 2 or audio.shape[0] == 0 or audio.shape[1] == 0:
        raise AudioError(path, "no audio samples")
    if not np.isfinite(audio).all():
        raise AudioError(path, "contains NaN or infinite samples")


def save_audio(path: str | os.PathLike, audio: np.ndarray, sr: int) -> None:
    """Write (channels, samples) as 32-bit float WAV, atomically (temp name, then rename; a failed
    write leaves nothing behind)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        sf.write(str(tmp), np.ascontiguousarray(audio.T), sr, subtype="FLOAT", format="WAV")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
