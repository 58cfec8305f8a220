"""A deterministic demo corpus: synthetic songs from two musical domains, no downloads.

Vocals are a sung-like voice: a melody in phrases with rests, glides between notes, vibrato that
grows through long notes, a glottal-like harmonic source shaped by moving vowel formants, breath
noise and consonant bursts. Accompaniment has chords, bass and drums. The two domains differ in
what the paper's setting cares about, so a separator trained on one meets new music on the other:

- ``studio``: low male-register voice, bright sustained saw pads, sine/saw bass, four-on-the-floor
  kit with closed hats, major keys, 96-124 BPM.
- ``acoustic``: high female-register breathy voice with faster vibrato, plucked guitar-like and
  FM electric-piano arpeggios, plucked bass, brushed shuffle kit, minor keys, 68-92 or 132-150 BPM.

Every stem is rounded to the 16-bit grid before mixing, so ``mixture = vocals + accompaniment``
holds exactly in memory and in the 16-bit WAV files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 44100
DOMAINS = ("studio", "acoustic")

# Vowel formants (F1, F2, F3) in Hz, for the low and the high voice.
VOWELS = {
    "studio": [(730, 1090, 2440), (530, 1840, 2480), (570, 840, 2410), (300, 870, 2240), (270, 2290, 3010)],
    "acoustic": [(850, 1220, 2810), (610, 2330, 2990), (590, 920, 2710), (430, 1020, 2470), (310, 2790, 3310)],
}


@dataclass(frozen=True)
class Style:
    tempo: tuple[float, float]
    voice_midi: tuple[int, int]
    vibrato_hz: tuple[float, float]
    vibrato_semitones: float
    breath: float
    major: bool


STYLES = {
    "studio": Style((96, 124), (45, 60), (4.8, 5.6), 0.35, 0.02, True),
    "acoustic": Style((68, 92), (62, 77), (5.8, 6.8), 0.55, 0.08, False),
}


def midi_hz(m: np.ndarray | float) -> np.ndarray | float:
    return 440.0 * 2.0 ** ((np.asarray(m) - 69) / 12)


def _scale(rng: np.random.Generator, major: bool) -> np.ndarray:
    steps = [0, 2, 4, 5, 7, 9, 11] if major else [0, 2, 3, 5, 7, 8, 10]
    return np.array(steps) + int(rng.integers(0, 12))


def _smooth(x: np.ndarray, seconds: float) -> np.ndarray:
    """One-pole low-pass, forwards: glides and envelopes without clicks."""
    a = np.exp(-1.0 / max(seconds * SR, 1.0))
    from scipy.signal import lfilter

    return lfilter([1 - a], [1, -a], x).astype(np.float32)


def _melody(rng, style: Style, scale: np.ndarray, n: int, beat: float):
    """Per-sample target pitch (MIDI), loudness gate and vowel index for phrases with rests."""
    pitch = np.zeros(n, np.float32)
    gate = np.zeros(n, np.float32)
    vowel = np.zeros(n, np.int64)
    onsets = []
    lo, hi = style.voice_midi
    degrees = np.concatenate([scale + 12 * o for o in range(0, 10)])
    degrees = degrees[(degrees >= lo) & (degrees <= hi)]
    t = int(rng.uniform(0.2, 1.0) * beat * SR)
    idx = int(rng.integers(0, len(degrees)))
    while t < n:
        for _ in range(int(rng.integers(3, 9))):  # one phrase
            dur = int(beat * SR * rng.choice([0.5, 1, 1, 1.5, 2, 3]))
            idx = int(np.clip(idx + rng.choice([-2, -1, -1, 0, 1, 1, 2, 3]), 0, len(degrees) - 1))
            end = min(t + dur, n)
            pitch[t:end] = degrees[idx]
            gate[t:max(end - int(0.04 * SR), t)] = 1.0
            vowel[t:end] = rng.integers(0, 5)
            onsets.append(t)
            t = end
            if t >= n:
                break
        t += int(beat * SR * rng.uniform(1.0, 4.0))  # rest between phrases
    last = np.maximum.accumulate(np.where(pitch > 0, np.arange(n), 0))
    pitch = pitch[last]  # hold the last pitch through rests so glides start from it
    pitch[pitch == 0] = degrees[len(degrees) // 2]
    return pitch, gate, vowel, onsets


def _formant_gain(freqs: np.ndarray, formants: np.ndarray) -> np.ndarray:
    """Spectral envelope of three resonances at ``freqs``. formants: (..., 3) Hz."""
    gain = np.zeros_like(freqs)
    for i, (bw, amp) in enumerate([(90, 1.0), (120, 0.7), (180, 0.35)]):
        f = formants[..., i]
        gain += amp / (1.0 + ((freqs - f) / bw) ** 2)
    return gain + 0.02


def render_vocals(rng: np.random.Generator, domain: str, n: int, beat: float, scale) -> np.ndarray:
    """A sung-like voice, mono (samples,)."""
    style = STYLES[domain]
    pitch, gate, vowel, onsets = _melody(rng, style, scale, n, beat)
    midi = _smooth(pitch, 0.03)
    t = np.arange(n) / SR
    vib_rate = rng.uniform(*style.vibrato_hz)
    # vibrato grows over the first 300 ms of a note
    since_onset = np.zeros(n, np.float32)
    for a, b in zip(onsets, onsets[1:] + [n]):
        since_onset[a:b] = np.arange(b - a) / SR
    vib_depth = style.vibrato_semitones * np.clip(since_onset / 0.3, 0, 1)
    midi = midi + vib_depth * np.sin(2 * np.pi * vib_rate * t) + 0.05 * _smooth(rng.standard_normal(n), 0.05) * 10
    f0 = midi_hz(midi).astype(np.float64)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    env = _smooth(gate, 0.025)

    ctrl = 64  # formant envelope at a control rate, then interpolated
    vowels = np.array(VOWELS[domain], np.float32)
    formants = _smooth_rows(vowels[vowel[::ctrl]], 0.06 * SR / ctrl)
    f0_c = f0[::ctrl]
    voice = np.zeros(n, np.float64)
    k_max = int(min(40, 9000.0 / f0.min()))
    # z**k gives every harmonic from one complex exponential; amplitudes step at the control rate
    z = np.exp(1j * phase)
    zk = np.ones(n, np.complex128)
    for k in range(1, k_max + 1):
        zk *= z
        amp_c = _formant_gain(k * f0_c, formants) * k ** -0.8
        amp_c[k * f0_c > 9000.0] = 0.0
        voice += np.repeat(amp_c, ctrl)[:n] * zk.imag
    voice *= env

    breath = _bandpass_noise(rng, n, 1500, 6000) * style.breath * env
    cons = np.zeros(n)
    for o in onsets:
        if rng.random() < 0.5:
            m = min(int(rng.uniform(0.03, 0.08) * SR), n - o)
            cons[o:o + m] += _bandpass_noise(rng, m, 3500, 9000) * np.hanning(m) * 0.6
    out = voice + breath + cons
    return (out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def _smooth_rows(x: np.ndarray, steps: float) -> np.ndarray:
    from scipy.signal import lfilter

    a = np.exp(-1.0 / max(steps, 1.0))
    return lfilter([1 - a], [1, -a], x, axis=0)


def _bandpass_noise(rng, n: int, lo: float, hi: float) -> np.ndarray:
    from scipy.signal import butter, sosfilt

    sos = butter(2, [lo, min(hi, SR / 2 * 0.95)], btype="band", fs=SR, output="sos")
    return sosfilt(sos, rng.standard_normal(n))


def _tone(f: float, n: int, harmonics: int, tilt: float, decay: float | None) -> np.ndarray:
    t = np.arange(n) / SR
    out = np.zeros(n)
    for k in range(1, harmonics + 1):
        if k * f > SR / 2 * 0.9:
            break
        out += np.sin(2 * np.pi * k * f * t + k) * k ** -tilt
    if decay is not None:
        out *= np.exp(-t / decay)
    return out


def _fm_piano(f: float, n: int) -> np.ndarray:
    t = np.arange(n) / SR
    index = 2.5 * np.exp(-t / 0.25)
    return np.sin(2 * np.pi * f * t + index * np.sin(2 * np.pi * 2 * f * t)) * np.exp(-t / 0.7)


def render_accompaniment(rng, domain: str, n: int, beat: float, scale) -> np.ndarray:
    """Chords, bass and drums, stereo (2, samples)."""
    out = np.zeros((2, n))
    bar = int(4 * beat * SR)
    degrees = [0, 4, 5, 3] if STYLES[domain].major else [0, 5, 3, 6]
    rng.shuffle(degrees[1:])
    root_midi = 48 + scale[0] % 12
    pans = rng.uniform(0.2, 0.8, size=4)
    for b, start in enumerate(range(0, n, bar)):
        deg = degrees[b % 4]
        chord = [root_midi + scale[(deg + i) % 7] - scale[0] + 12 * ((deg + i) // 7) for i in (0, 2, 4)]
        m = min(bar, n - start)
        seg = np.zeros(m)
        if domain == "studio":
            for note in chord:
                for detune in (-0.07, 0.07):
                    seg += _tone(midi_hz(note + 12 + detune), m, 10, 1.0, None) * 0.12
            seg *= np.minimum(1, np.arange(m) / (0.05 * SR)) * np.minimum(1, (m - np.arange(m)) / (0.05 * SR))
            bass = (_tone(midi_hz(chord[0] - 12), m, 6, 1.5, None) * 0.5)
        else:
            step = int(beat * SR / 2)
            for j, s in enumerate(range(0, m, step)):
                note = chord[j % 3] + 12 * (j % 2)
                k = min(step * 3, m - s)
                voice = _tone(midi_hz(note), k, 12, 1.2, 0.35) if b % 2 else _fm_piano(midi_hz(note), k)
                seg[s:s + k] += voice * 0.35
            bass = np.zeros(m)
            for s in range(0, m, int(beat * SR)):
                k = min(int(beat * SR), m - s)
                bass[s:s + k] += _tone(midi_hz(chord[0] - 12), k, 8, 1.0, 0.4) * 0.6
        out[0, start:start + m] += seg * pans[0] + bass * 0.5
        out[1, start:start + m] += seg * (1 - pans[0]) + bass * 0.5
    drums = _drums(rng, domain, n, beat)
    out += drums * np.array([[pans[1]], [1 - pans[1]]]) * 2
    return (out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def _drums(rng, domain: str, n: int, beat: float) -> np.ndarray:
    out = np.zeros(n)
    eighth = beat / 2
    t_kick = np.arange(int(0.25 * SR)) / SR
    kick = np.sin(2 * np.pi * (50 * t_kick + 60 * (1 - np.exp(-t_kick / 0.03)) * 0.03)) * np.exp(-t_kick / 0.12)
    snare_n = int(0.2 * SR)
    swing = 0.0 if domain == "studio" else 0.33
    for i in range(int(n / (eighth * SR)) + 1):
        pos = int((i * eighth + (swing * eighth if i % 2 else 0)) * SR)
        if pos >= n:
            break
        beat_i = i // 2
        if domain == "studio":
            hits = [("hat", 0.25)]
            if i % 2 == 0:
                hits.append(("kick", 0.9))
            if i % 4 == 2:
                hits.append(("snare", 0.7))
        else:
            hits = [("brush", 0.15)]
            if i % 8 == 0 or (i % 8 == 5 and rng.random() < 0.5):
                hits.append(("kick", 0.6))
            if i % 4 == 2:
                hits.append(("snare", 0.35))
        for kind, gain in hits:
            if kind == "kick":
                sound = kick
            elif kind == "snare":
                sound = (_bandpass_noise(rng, snare_n, 1000, 8000) + 0.5 * np.sin(2 * np.pi * 190 * np.arange(snare_n) / SR)) * np.exp(-np.arange(snare_n) / SR / 0.06)
            elif kind == "hat":
                m = int(0.05 * SR)
                sound = _bandpass_noise(rng, m, 7000, 16000) * np.exp(-np.arange(m) / SR / 0.012)
            else:
                m = int(0.15 * SR)
                sound = _bandpass_noise(rng, m, 2000, 12000) * np.exp(-np.arange(m) / SR / 0.05)
            m = min(len(sound), n - pos)
            out[pos:pos + m] += sound[:m] * gain * (0.8 + 0.4 * rng.random())
        del beat_i
    return out


def render_song(seed: int, domain: str, seconds: float) -> dict[str, np.ndarray]:
    """One song: ``vocals``, ``accompaniment``, ``mixture``, each float32 (2, samples) at 44.1 kHz.

    All three sit on the 16-bit grid and ``mixture == vocals + accompaniment`` exactly.
    """
    assert domain in DOMAINS, domain
    rng = np.random.default_rng([seed, DOMAINS.index(domain)])
    style = STYLES[domain]
    tempo = rng.uniform(*style.tempo)
    if domain == "acoustic" and rng.random() < 0.4:
        tempo = rng.uniform(132, 150)
    beat = 60.0 / tempo
    n = int(seconds * SR)
    scale = _scale(rng, style.major)
    voice = render_vocals(rng, domain, n, beat, scale)
    pan = rng.uniform(0.4, 0.6)
    vocals = np.stack([voice * pan, voice * (1 - pan)]) * 2
    acc = render_accompaniment(rng, domain, n, beat, scale)
    ratio_db = rng.uniform(-6, 3)
    vocals *= 10 ** (ratio_db / 20) / (np.abs(vocals).max() + 1e-9)
    peak = np.abs(vocals + acc).max()
    scale_to = rng.uniform(0.5, 0.9) / peak
    vocals_i = np.round(vocals * scale_to * 32768).astype(np.int16)
    acc_i = np.round(acc * scale_to * 32768).astype(np.int16)
    mix_i = vocals_i.astype(np.int32) + acc_i.astype(np.int32)
    assert np.abs(mix_i).max() < 32768
    as_float = lambda x: (x.astype(np.float32) / 32768.0)  # noqa: E731
    return {"mixture": as_float(mix_i), "vocals": as_float(vocals_i), "accompaniment": as_float(acc_i)}


def write_pcm16(path: Path, audio: np.ndarray) -> None:
    """(channels, samples) on the 16-bit grid -> 16-bit WAV, exact; temp name then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    ints = np.round(audio.T * 32768).astype(np.int16)
    sf.write(str(tmp), ints, SR, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


# each song's seed is seed * 100_003 + its group's base + its index in the group: a song keeps its
# audio when other counts change (raising ``valid`` must not hand test songs' seeds to new
# validation songs), and the paired training songs keep the seeds they always had
SEED_BASES = {"paired": 0, "valid": 10_000, "test": 20_000, "in_domain": 30_000, "mixture": 40_000,
              "vocals": 50_000, "accompaniment": 60_000, "gate": 70_000}


def generate_demo_corpus(root: str | os.PathLike, seed: int = 0, track_seconds: float = 20.0,
                         paired_train: int = 6, unpaired_per_role: int = 8, valid: int = 2,
                         test: int = 4, test_in_domain: int = 2, progress: bool = True,
                         render=None, workers: int = 1, gate: int = 0, unpaired_mixtures: int | None = None) -> dict[str, int]:
    """Write a two-domain corpus under ``root``; files already there are kept (same seed, same audio).

    ``render(seed, domain)`` makes one song's stems for domain ``paired`` or ``target`` (default:
    this module's synthesiser, studio and acoustic); ``workers`` songs are rendered at once.
    Layout (MUSDB18-HQ for paired folders, ``<role>/*.wav`` for unpaired):
      paired/train/<track>/{mixture,vocals,accompaniment}.wav   paired domain, small
      target/{valid,gate,test}/<track>/...                      target domain
      in_domain/test/<track>/...                                paired domain, held out
      unpaired/{mixture,vocals,accompaniment}/<name>.wav        target domain, distinct songs
    ``gate``: songs only the promotion gate measures on (no training, validation or experiment
    reads them). ``unpaired_mixtures``: how many unpaired mixtures (default ``unpaired_per_role``;
    a team has more finished songs than stems). A song's seed depends on its group and index only
    (``SEED_BASES``).
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    if render is None:
        render = lambda song_seed, domain: render_song(song_seed, SYNTH_DOMAINS[domain], track_seconds)  # noqa: E731
    root = Path(root)
    jobs = []  # (domain, destination, role or None, song seed)
    for i in range(paired_train):
        jobs.append(("paired", root / "paired" / "train" / f"paired_{i:03d}", None, SEED_BASES["paired"] + i))
    for split, count in (("valid", valid), ("gate", gate), ("test", test)):
        for i in range(count):
            jobs.append(("target", root / "target" / split / f"target_{split}_{i:03d}", None, SEED_BASES[split] + i))
    for i in range(test_in_domain):
        jobs.append(("paired", root / "in_domain" / "test" / f"paired_test_{i:03d}", None, SEED_BASES["in_domain"] + i))
    for role in ("mixture", "vocals", "accompaniment"):
        count = unpaired_per_role if role != "mixture" or unpaired_mixtures is None else unpaired_mixtures
        for i in range(count):
            jobs.append(("target", root / "unpaired" / role / f"target_{role}_{i:03d}.wav", role, SEED_BASES[role] + i))

    def write(k: int) -> bool:
        domain, dest, role, song = jobs[k]
        if dest.exists() if role else (dest / "mixture.wav").exists():
            return False
        stems = render(seed * 100_003 + song, domain)
        if role:
            write_pcm16(dest, stems[role])
        else:
            for name, audio in stems.items():
                write_pcm16(dest / f"{name}.wav", audio)
        return True

    with ThreadPoolExecutor(max(1, workers)) as pool:
        done = list(tqdm(pool.map(write, range(len(jobs))), total=len(jobs), desc="corpus", unit="song",
                         disable=None if progress else True))
    return {"songs": len(jobs), "written": sum(done)}


SYNTH_DOMAINS = {"paired": "studio", "target": "acoustic"}


def generate(root: str | os.PathLike, demo, progress: bool = True) -> dict[str, int]:
    """Write the corpus the ``demo`` config section describes (semisep.pipeline.config.DemoConfig):
    ``generator: synth`` (this module) or ``sampled`` (pipeline/sampled_corpus.py, FluidSynth)."""
    render, workers = None, 1
    if demo.generator == "sampled":
        from semisep.pipeline.sampled_corpus import renderer

        render = renderer(demo.track_seconds, (demo.paired_style, demo.paired_soundfont),
                          (demo.target_style, demo.target_soundfont))
        workers = os.cpu_count() or 1  # fluidsynth runs as a subprocess: threads overlap
    return generate_demo_corpus(root, demo.seed, demo.track_seconds, demo.paired_train, demo.unpaired_per_role,
                                demo.valid, demo.test, demo.test_in_domain, progress=progress, render=render,
                                workers=workers, gate=demo.gate, unpaired_mixtures=demo.unpaired_mixtures or None)
