"""Corpus adapters: a folder in one of the field's layouts becomes a list of tracks to ingest.

A ``TrackSpec`` names the audio of one ingestion unit: a paired track (mixture, vocals,
accompaniment) or one unpaired recording of a single role. Each source is a list of *parts*
that are summed; a part is a file, optionally one stream of a multi-stream container
(MUSDB18 ``.stem.mp4``) or one channel (iKala keeps voice and music on separate channels).

Layouts (``format`` in the corpus config):

===========  ==========================================================================
musdb18      ``ROOT/{train,test}/<track>.stem.mp4``; streams mixture, drums, bass, other,
             vocals; accompaniment = drums + bass + other
musdb18hq    ``ROOT/{train,test}/<track>/{mixture,vocals}.wav`` plus ``accompaniment.wav``
             or ``drums.wav + bass.wav + other.wav``
dsd100       ``ROOT/Mixtures/{Dev,Test}/<track>/mixture.wav`` and
             ``ROOT/Sources/{Dev,Test}/<track>/{vocals,drums,bass,other}.wav``
medleydb     ``<track>_METADATA.yaml`` anywhere under ROOT, stems in ``<track>_STEMS/`` next to
             it or under ``ROOT/Audio/<track>/``; vocals = sum of the stems whose instrument is
             a voice, accompaniment = sum of the rest, mixture = sum of all stems
ccmixter     ``ROOT/<track>/{mix,source-01,source-02}.wav``; source-01 is the accompaniment,
             source-02 the voice
ikala        ``ROOT/Wavs/<song>_<section>.wav`` (or ``ROOT/*.wav``): stereo, accompaniment
             left, voice right; mixture = left + right; a song's sections share a split
folder       ``ROOT/<role>/**/*.{wav,flac,ogg,mp3,m4a}``: unpaired audio, role from the folder
===========  ==========================================================================

Splits: corpora with split folders take the split from the folder name (``splits`` renames
them, e.g. ``{Dev: train}``; ``skip`` leaves a folder out). ``partition`` (weights per split,
e.g. ``{train: 1, valid: 1, test: 1}`` for thirds) assigns each track by a hash of its song (its
id, or for iKala the song its clip belongs to), so an assignment never changes when tracks are
added and no song is split across train and test. ``use: unpaired`` turns the *train* tracks of a
multitrack corpus into unpaired mixtures, vocals and accompaniment; valid and test tracks stay
paired, because validation and evaluation need the truth.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from semisep.pipeline import storage
from semisep.pipeline.audio import AUDIO_EXTENSIONS, load_audio
from semisep.pipeline.config import CORPUS_FORMATS as FORMATS, CorpusConfig
from semisep.pipeline.errors import AudioError, SemisepError

ROLES = ("mixture", "vocals", "accompaniment")
MUSDB_ACCOMPANIMENT_STEMS = ("drums", "bass", "other")
MUSDB_STREAMS = {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}
DSD100_SPLITS = {"Dev": "train", "Test": "test"}
# MedleyDB instrument labels that are a human voice (its taxonomy, v1 and v2)
MEDLEYDB_VOICES = {"male singer", "female singer", "male speaker", "female speaker", "male rapper",
                   "female rapper", "beatboxing", "vocalists", "choir", "male screamer", "female screamer"}
SKIP = "skip"


def part(path: str | Path, stream: int | None = None, channel: int | None = None) -> dict:
    """One summand of a source: a file, optionally one of its streams or channels."""
    return {"path": str(path), "stream": stream, "channel": channel}


@dataclass
class TrackSpec:
    """One unit of ingestion. role: ``paired`` or one of ROLES; files: source -> parts to sum.

    ``error`` set by an adapter (unsupported file, unreadable metadata) fails the track with that
    reason; ``skip`` (an instrumental MedleyDB track) leaves it out with the reason recorded.
    """

    corpus: str
    split: str
    role: str
    track_id: str
    files: dict[str, list[dict]] = field(default_factory=dict)
    error: str = ""
    skip: str = ""
    mirror: list[str] = field(default_factory=list)  # [local root, URI] when the corpus is a URI

    def paths(self) -> list[str]:
        """Every file the track reads, each once, in source order."""
        seen: dict[str, None] = {}
        for parts in self.files.values():
            for p in parts:
                seen.setdefault(p["path"], None)
        return list(seen)


@dataclass
class _Track:
    """What an adapter finds: a track id, its sources, the split folder it sat in (if any), its song."""

    track_id: str
    sources: dict[str, list[dict]]
    folder_split: str | None = None
    error: str = ""
    skip: str = ""
    song: str | None = None  # tracks of one song share a split (iKala's <song>_verse, <song>_chorus)


def scan_corpus(cfg: CorpusConfig, cache_dir: str | None = None) -> list[TrackSpec]:
    """The tracks of one corpus. A corpus path that is a URI (``s3://``, ``gs://``, ``file://``,
    anything pyarrow opens) is first mirrored into ``cache_dir/<corpus name>`` (new and changed
    files only), and its tracks name the mirror's files."""
    mirror = []
    if storage.has_scheme(cfg.path):
        if not cache_dir:
            raise SemisepError(f"corpus {cfg.name!r}: {cfg.path} is a URI; it needs a local cache folder (data.audio_cache)")
        root = Path(cache_dir).absolute() / cfg.name
        try:
            storage.mirror(cfg.path, str(root))
        except OSError as exc:
            raise SemisepError(f"corpus {cfg.name!r}: cannot copy {cfg.path} to {root}: {exc}") from None
        mirror = [str(root), cfg.path]
    else:
        # absolute, so Ray workers on any node (whose working directory differs) open the same files
        root = Path(cfg.path).absolute()
    if not root.is_dir():
        raise SemisepError(f"corpus {cfg.name!r}: folder {cfg.path} does not exist")
    if cfg.format not in ADAPTERS:
        raise SemisepError(f"corpus {cfg.name!r}: format {cfg.format!r} is not one of {', '.join(FORMATS)}")
    tracks = ADAPTERS[cfg.format](root)
    if not tracks:
        raise SemisepError(f"corpus {cfg.name!r}: no {cfg.format} tracks in {cfg.path} (an empty folder, an unmounted "
                           "mount point, or another format?); nothing in the store was changed")
    specs = []
    for track in tracks:
        specs.extend(_assign(cfg, track))
    for spec in specs:
        spec.mirror = mirror
    return specs


def split_of(cfg: CorpusConfig, track_id: str, folder_split: str | None, song: str | None = None) -> str:
    """The split a track serves: ``partition`` by a hash of its song (files of one song stay
    together), else its (renamed) folder, else ``split``."""
    if cfg.partition:
        total = sum(cfg.partition.values())
        u = int(hashlib.sha256(f"{cfg.name}/{song or track_id}".encode()).hexdigest()[:12], 16) / 16**12
        edge = 0.0
        for split, weight in cfg.partition.items():
            edge += weight / total
            if u < edge:
                return split
        return split
    if folder_split is None:
        return cfg.split
    default = DSD100_SPLITS if cfg.format == "dsd100" else {}
    return cfg.splits.get(folder_split, default.get(folder_split, folder_split))


def _assign(cfg: CorpusConfig, track: _Track) -> list[TrackSpec]:
    split = split_of(cfg, track.track_id, track.folder_split, track.song)
    if split == SKIP:
        return []
    if len(track.sources) == 1:  # an unpaired file of one role (folder corpora)
        (role,) = track.sources
        return [TrackSpec(cfg.name, split, role, track.track_id, track.sources, track.error, track.skip)]
    if cfg.use == "paired" or split != "train" or track.error or track.skip:
        return [TrackSpec(cfg.name, split, "paired", track.track_id, track.sources, track.error, track.skip)]
    return [TrackSpec(cfg.name, split, role, f"{track.track_id}/{role}", {role: track.sources[role]})
            for role in ROLES]


def _dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files(folder: Path, pattern: str = "*") -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if not p.name.startswith(".") and not p.is_dir())


def _musdb18(root: Path) -> list[_Track]:
    tracks = []
    for split_dir in _dirs(root):
        for f in _files(split_dir, "*.stem.mp4"):
            s = {name: part(f, stream=i) for name, i in MUSDB_STREAMS.items()}
            sources = {"mixture": [s["mixture"]], "vocals": [s["vocals"]],
                       "accompaniment": [s[n] for n in MUSDB_ACCOMPANIMENT_STEMS]}
            tracks.append(_Track(f"{split_dir.name}/{f.name[:-len('.stem.mp4')]}", sources, split_dir.name))
    return tracks


def _stem_folder_sources(mixture: Path, stems: Path) -> dict[str, list[dict]]:
    """mixture.wav, vocals.wav, and accompaniment.wav or the sum of drums, bass and other."""
    acc = stems / "accompaniment.wav"
    accompaniment = [part(acc)] if acc.exists() else [part(stems / f"{s}.wav") for s in MUSDB_ACCOMPANIMENT_STEMS]
    return {"mixture": [part(mixture)], "vocals": [part(stems / "vocals.wav")], "accompaniment": accompaniment}


def _musdb18hq(root: Path) -> list[_Track]:
    return [_Track(f"{split_dir.name}/{t.name}", _stem_folder_sources(t / "mixture.wav", t), split_dir.name)
            for split_dir in _dirs(root) for t in _dirs(split_dir)]


def _dsd100(root: Path) -> list[_Track]:
    mixtures = root / "Mixtures"
    if not mixtures.is_dir():
        raise SemisepError(f"{root}: no Mixtures/ folder; a DSD100 corpus has Mixtures/ and Sources/")
    return [_Track(f"{split_dir.name}/{t.name}",
                   _stem_folder_sources(t / "mixture.wav", root / "Sources" / split_dir.name / t.name),
                   split_dir.name)
            for split_dir in _dirs(mixtures) for t in _dirs(split_dir)]


def _medleydb(root: Path) -> list[_Track]:
    import yaml

    tracks = []
    for meta_path in sorted(root.rglob("*_METADATA.yaml")):
        track_id = meta_path.name[: -len("_METADATA.yaml")]
        try:
            meta = yaml.safe_load(meta_path.read_text())
            stems = meta["stems"] or {}
            stem_dir = meta.get("stem_dir") or f"{track_id}_STEMS"
        except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
            tracks.append(_Track(track_id, {"mixture": [part(meta_path)]}, error=f"cannot read metadata: {exc}"))
            continue
        folder = next((d / stem_dir for d in (meta_path.parent, root / "Audio" / track_id)
                       if (d / stem_dir).is_dir()), meta_path.parent / stem_dir)
        vocals, rest = [], []
        for key in sorted(stems):
            stem = stems[key] or {}
            instruments = stem.get("instrument", "")
            instruments = set(instruments if isinstance(instruments, list) else [instruments])
            (vocals if instruments & MEDLEYDB_VOICES else rest).append(part(folder / stem.get("filename", f"{key}.wav")))
        sources = {"mixture": vocals + rest, "vocals": vocals, "accompaniment": rest}
        track = _Track(track_id, sources)
        if not vocals:
            track.skip = "instrumental: no vocal stem in the metadata"
        elif not rest:
            track.skip = "a cappella: no accompaniment stem in the metadata"
        tracks.append(track)
    return tracks


def _ccmixter(root: Path) -> list[_Track]:
    return [_Track(t.name, {"mixture": [part(t / "mix.wav")], "vocals": [part(t / "source-02.wav")],
                            "accompaniment": [part(t / "source-01.wav")]})
            for t in _dirs(root)]


def _ikala(root: Path) -> list[_Track]:
    """iKala clips are named <song>_<section> (e.g. 10161_chorus): a song's clips share a split."""
    folder = root / "Wavs" if (root / "Wavs").is_dir() else root
    return [_Track(f.stem, {"mixture": [part(f, channel=0), part(f, channel=1)],
                            "vocals": [part(f, channel=1)], "accompaniment": [part(f, channel=0)]},
                   song=f.stem.rsplit("_", 1)[0])
            for f in _files(folder, "*.wav")]


def _folder(root: Path) -> list[_Track]:
    """Every file under a role folder is one unpaired track; odd files are kept with an error."""
    tracks = []
    for role in ROLES:
        folder = root / role
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.name.startswith(".") or path.is_dir():
                continue
            track = _Track(str(path.relative_to(root)), {role: [part(path)]})
            if path.suffix.lower() not in AUDIO_EXTENSIONS:
                track.error = f"unsupported extension {path.suffix!r}"
            elif not path.is_file():
                track.error = "not a regular file (broken link?)" if path.is_symlink() else "not a regular file"
            tracks.append(track)
    return tracks


ADAPTERS = {"musdb18": _musdb18, "musdb18hq": _musdb18hq, "dsd100": _dsd100, "medleydb": _medleydb,
            "ccmixter": _ccmixter, "ikala": _ikala, "folder": _folder}


def load_source(parts: list[dict], cache: dict | None = None) -> tuple[np.ndarray, int]:
    """Decode and sum the parts of one source: float32 (channels, samples) and the rate.

    ``cache`` (path, stream) -> decoded audio lets the sources of one track share decodes.
    Parts must agree in rate and length; a channel part must exist in its file.
    """
    cache = {} if cache is None else cache
    if not parts:
        raise SemisepError("a source needs at least one part")
    arrays, sr, first = [], 0, parts[0]["path"]
    for p in parts:
        key = (p["path"], p.get("stream"))
        if key not in cache:
            cache[key] = load_audio(p["path"], stream=p.get("stream"))
        audio, sr_p = cache[key]
        if p.get("channel") is not None:
            if p["channel"] >= audio.shape[0]:
                raise AudioError(p["path"], f"has {audio.shape[0]} channel(s); channel {p['channel']} was expected")
            audio = audio[p["channel"]:p["channel"] + 1]
        if arrays and (sr_p != sr or audio.shape[1] != arrays[0].shape[1]):
            raise AudioError(p["path"], f"stem does not match {Path(first).name}: {sr_p} Hz x {audio.shape[1]} "
                                        f"samples vs {sr} Hz x {arrays[0].shape[1]}")
        arrays.append(audio)
        sr = sr_p
    if len(arrays) == 1:
        return arrays[0], sr
    if len({a.shape[0] for a in arrays}) > 1:  # mono and stereo stems: sum them in mono
        arrays = [a.mean(axis=0, keepdims=True) for a in arrays]
    total = np.array(arrays[0], np.float32)
    for a in arrays[1:]:
        total += a
    return total, sr
