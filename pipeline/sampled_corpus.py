"""A corpus of songs played by sampled instruments and voices: General MIDI rendered by FluidSynth.

Nothing here is synthesised from formulas: every note is a recorded sample from a General MIDI
soundfont (FluidR3_GM, MuseScore General, TimGM6mb, or any .sf2/.sf3 file), so timbre, attack and
noise are those of real instruments and of sampled human voices (GM "Choir Aahs", "Voice Oohs",
"Synth Voice"). Songs are written as MIDI with pretty_midi (the field's MIDI library) and
rendered with the ``fluidsynth`` command (Debian package ``fluidsynth``).

A *style* fixes tempo range, modes, chord progressions, which programs may play the sung line,
the chords, pads, bass, an instrumental counter-melody and the drum kit, how they play (block
chords, arpeggios, strumming, power chords, jazz stabs; root, octave or walking bass; rock,
half-time, four-on-the-floor, swing or brush grooves), and where the voice sits: its register
and its level against the accompaniment. Within a style each song draws its own key, tempo,
programs, pans, reverb sends and vocal level.

The sung line is one monophonic part: phrases with rests, scoops into notes and vibrato that
grows through long notes (pitch bends), velocity contours per phrase. The vocals are rendered
alone, the accompaniment alone, and the mixture is their sum on the 16-bit grid, so
``mixture == vocals + accompaniment`` holds exactly in the WAV files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from semisep.pipeline.errors import SemisepError

SR = 44100
MODES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10),
         "dorian": (0, 2, 3, 5, 7, 9, 10), "mixolydian": (0, 2, 4, 5, 7, 9, 10)}
# GM percussion keys
KICK, SNARE, SIDE_STICK, CLAP, CLOSED_HAT, PEDAL_HAT, OPEN_HAT, CRASH, RIDE, RIDE_BELL = 36, 38, 37, 39, 42, 44, 46, 49, 51, 53
# where Debian's packages put their soundfonts; "TimGM6mb" is also shipped inside pretty_midi
SOUNDFONTS = {
    "FluidR3_GM": ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "fluid-soundfont-gm"),
    "MuseScore_General": ("/usr/share/sounds/sf3/MuseScore_General.sf3", "musescore-general-soundfont"),
    "TimGM6mb": ("/usr/share/sounds/sf2/TimGM6mb.sf2", "timgm6mb-soundfont"),
}


@dataclass(frozen=True)
class Style:
    """How songs of one kind are played. Programs are General MIDI program numbers (0-based)."""

    tempo: tuple[float, float]
    modes: tuple[str, ...]
    progressions: tuple[tuple[int, ...], ...]  # scale degrees (0-based), one chord per bar
    voices: tuple[int, ...]
    voice_range: tuple[int, int]  # MIDI notes the sung line keeps to
    vocal_db: tuple[float, float]  # vocal RMS against accompaniment RMS, dB
    chords: tuple[int, ...]
    comping: tuple[str, ...]  # block, arpeggio, strum, power, stabs
    pads: tuple[int, ...]
    bass: tuple[int, ...]
    bass_line: tuple[str, ...]  # root, octave, walking
    groove: tuple[str, ...]  # rock, half, four, swing, brush, none
    kits: tuple[int, ...]  # GM drum kit programs (bank 128)
    leads: tuple[int, ...] = ()  # instrumental counter-melody, plays between sung phrases
    swing: float = 0.0  # delay of off-beat eighths, as a share of an eighth
    sevenths: bool = False
    note_beats: tuple[float, ...] = (0.5, 1.0, 1.0, 1.5, 2.0)  # sung note lengths to draw from
    reverb: tuple[int, int] = (20, 60)  # CC91 send range


STYLES = {
    "pop": Style(tempo=(92, 124), modes=("major",), progressions=((0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 4, 3)),
                 voices=(52, 53), voice_range=(55, 74), vocal_db=(-3.0, 3.0),
                 chords=(0, 1, 4, 25), comping=("block", "arpeggio", "strum"), pads=(48, 50, 89),
                 bass=(33, 34, 38), bass_line=("root", "octave"), groove=("rock",), kits=(0, 8)),
    "rock": Style(tempo=(118, 152), modes=("minor", "mixolydian"), progressions=((0, 6, 5, 6), (0, 3, 6, 4), (0, 5, 6, 0)),
                  voices=(52, 54), voice_range=(50, 69), vocal_db=(-9.0, -4.0),
                  chords=(29, 30), comping=("power",), pads=(16, 18),
                  bass=(34, 33), bass_line=("octave", "root"), groove=("rock", "half"), kits=(16, 0),
                  leads=(29, 30, 81), note_beats=(0.5, 0.5, 1.0, 1.0, 2.0), reverb=(10, 40)),
    "jazz": Style(tempo=(84, 140), modes=("dorian", "major"), progressions=((1, 4, 0, 0), (0, 5, 1, 4), (2, 5, 1, 4)),
                  voices=(53, 52), voice_range=(57, 77), vocal_db=(-8.0, -3.0),
                  chords=(4, 5, 11, 26, 0), comping=("stabs", "block"), pads=(),
                  bass=(32,), bass_line=("walking",), groove=("swing", "brush"), kits=(32, 40),
                  leads=(65, 66, 56, 73), swing=0.33, sevenths=True, reverb=(30, 70)),
    "folk": Style(tempo=(70, 104), modes=("major", "minor"), progressions=((0, 3, 0, 4), (0, 5, 3, 4), (0, 4, 3, 3)),
                  voices=(53, 52), voice_range=(59, 79), vocal_db=(-5.0, 1.0),
                  chords=(24, 25, 46), comping=("arpeggio", "strum"), pads=(48, 49),
                  bass=(32, 43), bass_line=("root",), groove=("brush", "none"), kits=(40, 8),
                  leads=(73, 74, 40, 22), reverb=(40, 80)),
    "electronic": Style(tempo=(118, 130), modes=("minor",), progressions=((0, 5, 2, 6), (0, 0, 5, 6), (0, 3, 5, 4)),
                        voices=(54, 85, 53), voice_range=(55, 74), vocal_db=(-8.0, -2.0),
                        chords=(90, 88, 94), comping=("stabs", "arpeggio"), pads=(89, 91, 95),
                        bass=(38, 39), bass_line=("octave",), groove=("four",), kits=(25, 24, 0),
                        leads=(80, 81), reverb=(20, 60)),
}


def soundfont_path(name: str) -> str:
    """A soundfont file from a known name (``SOUNDFONTS`` or pretty_midi's bundled TimGM6mb) or a path."""
    if name in SOUNDFONTS:
        path, package = SOUNDFONTS[name]
        if os.path.isfile(path):
            return path
        if name == "TimGM6mb":
            import pretty_midi

            return os.path.join(os.path.dirname(pretty_midi.__file__), "TimGM6mb.sf2")
        raise SemisepError(f"soundfont {name}: {path} not found; install it with `apt-get install {package}` "
                           "(make setup does)")
    if not os.path.isfile(name):
        raise SemisepError(f"soundfont {name}: no such file; give a .sf2/.sf3 path or one of "
                           f"{', '.join(SOUNDFONTS)}")
    return name


def _chord(scale: np.ndarray, degree: int, sevenths: bool) -> list[int]:
    """Pitch classes (as MIDI offsets from the tonic, may exceed 12) of the chord on ``degree``."""
    steps = (0, 2, 4, 6) if sevenths else (0, 2, 4)
    return [int(scale[(degree + s) % 7] + 12 * ((degree + s) // 7)) for s in steps]


def _note(inst, pitch: int, start: float, end: float, velocity: int) -> None:
    import pretty_midi

    if end - start > 0.01 and 0 <= pitch < 128:
        inst.notes.append(pretty_midi.Note(int(np.clip(velocity, 1, 127)), int(pitch), float(start), float(end)))


class _Song:
    """One song's score: tonic, scale, tempo, bars and the swing-aware clock of its style."""

    def __init__(self, rng: np.random.Generator, style: Style, seconds: float):
        self.rng, self.style = rng, style
        self.beat = 60.0 / rng.uniform(*style.tempo)
        self.tonic = int(rng.integers(0, 12))
        self.scale = np.array(MODES[str(rng.choice(style.modes))])
        self.bars = int(np.ceil(seconds / (4 * self.beat))) + 1
        progression = style.progressions[int(rng.integers(len(style.progressions)))]
        self.chords = [_chord(self.scale, progression[b % len(progression)], style.sevenths) for b in range(self.bars)]

    def time(self, bar: int, beats: float, jitter: float = 0.006) -> float:
        """Seconds at ``beats`` into ``bar`` (off-beat eighths swung), humanised by a few ms."""
        eighths = beats * 2
        if self.style.swing and abs(eighths - round(eighths)) < 1e-6 and int(round(eighths)) % 2 == 1:
            beats += self.style.swing / 2
        return max(0.0, (bar * 4 + beats) * self.beat + self.rng.normal(0, jitter))

    def chord_at(self, bar: int) -> list[int]:
        return self.chords[min(bar, self.bars - 1)]


def _sung_line(song: _Song, program: int):
    """The vocal part: phrases with rests, chord tones on strong beats, scoops and vibrato."""
    import pretty_midi

    rng, style = song.rng, song.style
    inst = pretty_midi.Instrument(program=program, name="vocals")
    lo, hi = style.voice_range
    pitches = np.array([p for p in range(lo, hi + 1) if (p - song.tonic) % 12 in set(song.scale % 12)])
    idx = int(rng.integers(len(pitches) // 3, 2 * len(pitches) // 3))
    phrases = []  # (start, end) in seconds, for the counter-melody to answer in between
    beat_pos = float(rng.choice([0.0, 1.0, 2.0]))
    total = song.bars * 4 - 4
    while beat_pos < total:
        phrase_start = beat_pos
        for _ in range(int(rng.integers(4, 10))):
            length = float(rng.choice(style.note_beats))
            bar, within = divmod(beat_pos, 4)
            idx = int(np.clip(idx + rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3]), 0, len(pitches) - 1))
            pitch = int(pitches[idx])
            if within in (0.0, 2.0):  # strong beats: the nearest chord tone
                tones = [p for p in pitches if (p - song.tonic) % 12 in {c % 12 for c in song.chord_at(int(bar))}]
                if tones:
                    pitch = int(min(tones, key=lambda p: abs(p - pitch)))
                    idx = int(np.searchsorted(pitches, pitch))
            start = song.time(int(bar), within)
            end = song.time(int(bar), within + length * rng.uniform(0.8, 0.97))
            contour = np.sin(np.pi * min(1.0, (beat_pos - phrase_start) / 8.0))
            _note(inst, pitch, start, end, 70 + 35 * contour + rng.normal(0, 6))
            beat_pos += length
            if beat_pos >= total:
                break
        phrases.append((song.time(0, phrase_start, 0), song.time(0, beat_pos, 0)))
        beat_pos += float(rng.choice([1.0, 2.0, 2.0, 3.0, 4.0, 6.0]))  # breathe
    _expressive_pitch(inst, rng)
    return inst, phrases


def _expressive_pitch(inst, rng: np.random.Generator, rate: float = 100.0) -> None:
    """Pitch bends (default range +-2 semitones): a scoop into most notes, vibrato growing through
    long ones, a little drift; one monophonic line, so channel-wide bends belong to one note."""
    import pretty_midi

    vib_hz, depth = rng.uniform(4.8, 6.5), rng.uniform(0.15, 0.45)
    per_semitone = 4096
    for note in inst.notes:
        t = np.arange(note.start, note.end, 1.0 / rate)
        since = t - note.start
        scoop = rng.uniform(-0.8, 0.0) * np.exp(-since / rng.uniform(0.03, 0.09)) if rng.random() < 0.7 else 0 * since
        vibrato = depth * np.clip((since - 0.25) / 0.4, 0, 1) * np.sin(2 * np.pi * vib_hz * since + rng.uniform(0, 6.3))
        bend = (scoop + vibrato + rng.normal(0, 0.02)) * per_semitone
        for ti, b in zip(t, bend):
            inst.pitch_bends.append(pretty_midi.PitchBend(int(np.clip(b, -8191, 8191)), float(ti)))
        inst.pitch_bends.append(pretty_midi.PitchBend(0, float(note.end)))


def _comping(song: _Song, program: int, kind: str):
    import pretty_midi

    rng = song.rng
    inst = pretty_midi.Instrument(program=program, name=f"chords-{kind}")
    base = 48 + song.tonic if kind != "power" else 40 + song.tonic
    strum_pattern = [0, 1, 1.5, 2.5, 3, 3.5]
    for bar in range(song.bars):
        chord = [base + c for c in song.chord_at(bar)]
        vel = int(rng.integers(55, 85))
        if kind == "block":
            for beat in (0, 2) if rng.random() < 0.5 else (0, 1, 2, 3):
                for p in chord:
                    _note(inst, p, song.time(bar, beat), song.time(bar, beat + 0.9), vel)
        elif kind == "arpeggio":
            tones = chord + [p + 12 for p in chord]
            for k in range(8):
                _note(inst, tones[k % len(tones)], song.time(bar, k / 2), song.time(bar, k / 2 + 1.2), vel - 10)
        elif kind == "strum":
            for k, beat in enumerate(strum_pattern):
                order = chord if k % 2 == 0 else chord[::-1]
                for j, p in enumerate(order):
                    start = song.time(bar, beat) + 0.012 * j
                    _note(inst, p, start, song.time(bar, beat + 0.45), vel - 5 * (k % 2))
        elif kind == "power":
            root = chord[0]
            for k in range(8):
                for p in (root, root + 7, root + 12):
                    _note(inst, p, song.time(bar, k / 2), song.time(bar, k / 2 + 0.42), vel + 10 * (k % 2 == 0))
        elif kind == "stabs":
            for beat in sorted(rng.choice([0.5, 1.0, 1.5, 2.5, 3.0, 3.5], size=3, replace=False)):
                for p in chord:
                    _note(inst, p + 12, song.time(bar, beat), song.time(bar, beat + 0.35), vel)
    return inst


def _pad(song: _Song, program: int):
    import pretty_midi

    inst = pretty_midi.Instrument(program=program, name="pad")
    for bar in range(song.bars):
        for p in song.chord_at(bar)[:3]:
            _note(inst, 60 + song.tonic + p, song.time(bar, 0, 0), song.time(bar, 4, 0) - 0.02, 45)
    return inst


def _bass(song: _Song, program: int, line: str):
    import pretty_midi

    rng = song.rng
    inst = pretty_midi.Instrument(program=program, name=f"bass-{line}")
    for bar in range(song.bars):
        chord = song.chord_at(bar)
        root = 36 + song.tonic + chord[0] % 12
        if line == "root":
            for beat, dur in ((0, 1.5), (2, 1.0), (3, 0.5)):
                _note(inst, root, song.time(bar, beat), song.time(bar, beat + dur * 0.9), 90)
        elif line == "octave":
            for k in range(8):
                _note(inst, root + 12 * (k % 2), song.time(bar, k / 2), song.time(bar, k / 2 + 0.4), 85 + 10 * (k % 2 == 0))
        else:  # walking: chord tones and passing notes in quarters, leading to the next root
            nxt = 36 + song.tonic + song.chord_at(bar + 1)[0] % 12
            steps = [root, root + (chord[1] - chord[0]), root + (chord[2] - chord[0]), nxt + int(rng.choice([-1, 1, 2]))]
            for beat, p in enumerate(steps):
                _note(inst, p, song.time(bar, beat), song.time(bar, beat + 0.9), 80 + int(rng.integers(-8, 8)))
    return inst


def _drums(song: _Song, kit: int, groove: str):
    import pretty_midi

    rng = song.rng
    inst = pretty_midi.Instrument(program=kit, is_drum=True, name=f"drums-{groove}")
    hit = lambda key, bar, beat, vel: _note(inst, key, song.time(bar, beat, 0.004), song.time(bar, beat, 0.004) + 0.1, vel)  # noqa: E731
    for bar in range(song.bars):
        if bar % 4 == 0 and groove in ("rock", "half", "four"):
            hit(CRASH, bar, 0, 90)
        for k in range(8):
            beat = k / 2
            if groove == "rock":
                hit(CLOSED_HAT, bar, beat, 60 + 20 * (k % 2 == 0))
                if k in (0, 4) or (k == 5 and rng.random() < 0.4):
                    hit(KICK, bar, beat, 100)
                if k in (2, 6):
                    hit(SNARE, bar, beat, 95)
            elif groove == "half":
                hit(CLOSED_HAT, bar, beat, 70)
                if k in (0, 3) or (k == 7 and rng.random() < 0.3):
                    hit(KICK, bar, beat, 100)
                if k == 4:
                    hit(SNARE, bar, beat, 105)
            elif groove == "four":
                if k % 2 == 0:
                    hit(KICK, bar, beat, 110)
                else:
                    hit(OPEN_HAT, bar, beat, 70)
                if k in (2, 6):
                    hit(CLAP, bar, beat, 90)
            elif groove == "swing":
                if k in (0, 2, 3, 4, 6, 7):
                    hit(RIDE, bar, beat, 70 + 15 * (k in (2, 6)))
                if k in (2, 6):
                    hit(PEDAL_HAT, bar, beat, 60)
                if k == 0 and rng.random() < 0.6:
                    hit(KICK, bar, beat, 55)
                if rng.random() < 0.12:
                    hit(SNARE, bar, beat, 45)
            elif groove == "brush":
                hit(SNARE, bar, beat, 35 + 10 * (k % 2 == 0))
                if k in (0, 4):
                    hit(KICK, bar, beat, 50)
                if k in (2, 6):
                    hit(SIDE_STICK, bar, beat, 50)
    return inst


def _counter_melody(song: _Song, program: int, phrases: list[tuple[float, float]]):
    """An instrument answering the voice in its rests (never under a sung phrase)."""
    import pretty_midi

    rng = song.rng
    inst = pretty_midi.Instrument(program=program, name="lead")
    gaps = [(a[1], b[0]) for a, b in zip(phrases, phrases[1:])]
    pitches = [60 + song.tonic + int(s) + 12 * o for o in (0, 1) for s in song.scale]
    for start, end in gaps:
        t, idx = start + song.beat * 0.5, int(rng.integers(0, len(pitches)))
        while t + song.beat * 0.5 < end - 0.1:
            length = song.beat * float(rng.choice([0.5, 0.5, 1.0]))
            idx = int(np.clip(idx + rng.choice([-2, -1, 1, 2]), 0, len(pitches) - 1))
            _note(inst, pitches[idx], t, min(t + length * 0.9, end - 0.1), int(rng.integers(60, 90)))
            t += length
    return inst


def _controls(inst, pan: int, reverb: int) -> None:
    import pretty_midi

    inst.control_changes += [pretty_midi.ControlChange(10, int(np.clip(pan, 0, 127)), 0.0),
                             pretty_midi.ControlChange(91, int(np.clip(reverb, 0, 127)), 0.0)]


def compose(seed: int, style_name: str, seconds: float):
    """The score of one song: (vocals MIDI, accompaniment MIDI, vocal level in dB against the accompaniment)."""
    import pretty_midi

    if style_name not in STYLES:
        raise SemisepError(f"style {style_name!r} is not known; use one of {', '.join(STYLES)}")
    style = STYLES[style_name]
    rng = np.random.default_rng([seed, sorted(STYLES).index(style_name)])
    song = _Song(rng, style, seconds)
    pick = lambda options: int(options[int(rng.integers(len(options)))])  # noqa: E731
    reverb = lambda: int(rng.integers(*style.reverb))  # noqa: E731
    voice, phrases = _sung_line(song, pick(style.voices))
    _controls(voice, 64 + int(rng.integers(-10, 11)), reverb())
    parts = [_comping(song, pick(style.chords), str(rng.choice(style.comping))),
             _bass(song, pick(style.bass), str(rng.choice(style.bass_line)))]
    if style.pads and rng.random() < 0.7:
        parts.append(_pad(song, pick(style.pads)))
    groove = str(rng.choice(style.groove))
    if groove != "none":
        parts.append(_drums(song, pick(style.kits), groove))
    if style.leads and rng.random() < 0.8:
        parts.append(_counter_melody(song, pick(style.leads), phrases))
    for part in parts:
        _controls(part, int(rng.integers(24, 104)) if not part.is_drum else 64, reverb())
    tempo = 60.0 / song.beat
    vocals_midi = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    vocals_midi.instruments.append(voice)
    acc_midi = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    acc_midi.instruments += parts
    return vocals_midi, acc_midi, float(rng.uniform(*style.vocal_db))


def render(midi, soundfont: str, samples: int) -> np.ndarray:
    """MIDI -> float32 (2, samples) at 44.1 kHz with the fluidsynth command (reverb and chorus on)."""
    if shutil.which("fluidsynth") is None:
        raise SemisepError("rendering the sampled corpus needs the fluidsynth command: `apt-get install fluidsynth` "
                           "(make setup does)")
    with tempfile.TemporaryDirectory() as tmp:
        mid, wav = os.path.join(tmp, "song.mid"), os.path.join(tmp, "song.wav")
        midi.write(mid)
        # dynamic sample loading: only the samples the song plays are decoded (an .sf3 loads 3x faster)
        proc = subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.4", "-r", str(SR), "-o", "synth.dynamic-sample-loading=1",
                               "-F", wav, soundfont, mid],
                              capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(wav):
            raise SemisepError(f"fluidsynth failed on {soundfont}: {proc.stderr.strip()[:300]}")
        audio, sr = sf.read(wav, dtype="float32", always_2d=True)
    assert sr == SR, sr
    out = np.zeros((2, samples), np.float32)
    m = min(samples, audio.shape[0])
    out[:, :m] = audio[:m].T
    return out


def render_song(seed: int, style: str, seconds: float, soundfont: str) -> dict[str, np.ndarray]:
    """One song: ``vocals``, ``accompaniment``, ``mixture``, float32 (2, samples) at 44.1 kHz on the
    16-bit grid with ``mixture == vocals + accompaniment`` exactly; vocals at the style's level."""
    vocals_midi, acc_midi, vocal_db = compose(seed, style, seconds)
    n = int(seconds * SR)
    font = soundfont_path(soundfont)
    vocals, acc = render(vocals_midi, font, n), render(acc_midi, font, n)
    rms = lambda x: float(np.sqrt(np.mean(x ** 2)) + 1e-9)  # noqa: E731
    vocals *= 10 ** (vocal_db / 20) * rms(acc) / rms(vocals)
    rng = np.random.default_rng([seed, 7])
    scale = rng.uniform(0.5, 0.9) / max(np.abs(vocals + acc).max(), 1e-9)
    vocals_i = np.round(vocals * scale * 32767).astype(np.int16)
    acc_i = np.round(acc * scale * 32767).astype(np.int16)
    mix_i = vocals_i.astype(np.int32) + acc_i.astype(np.int32)
    assert np.abs(mix_i).max() < 32768
    as_float = lambda x: x.astype(np.float32) / 32768.0  # noqa: E731
    return {"mixture": as_float(mix_i), "vocals": as_float(vocals_i), "accompaniment": as_float(acc_i)}


def renderer(seconds: float, paired: tuple[str, str], target: tuple[str, str]):
    """``render(seed, domain)`` for pipeline/demo_corpus.py's layout: domain ``paired`` or
    ``target`` played in (style, soundfont)."""
    styles = {"paired": paired, "target": target}
    for style, font in styles.values():
        if style not in STYLES:
            raise SemisepError(f"demo style {style!r} is not known; use one of {', '.join(STYLES)}")
        soundfont_path(font)  # fail before any song is rendered
    return lambda seed, domain: render_song(seed, styles[domain][0], seconds, styles[domain][1])
