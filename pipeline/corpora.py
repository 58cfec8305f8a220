"""Corpus adapters: a folder plus its layout become a list of tracks to ingest.

A ``TrackSpec`` names the files of one ingestion unit: a paired track (mixture, vocals,
accompaniment) or one unpaired file of a single role.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.audio import AUDIO_EXTENSIONS
from pipeline.config import CorpusConfig
from pipeline.errors import SemisepError

ROLES = ("mixture", "vocals", "accompaniment")
MUSDB_ACCOMPANIMENT_STEMS = ("drums", "bass", "other")


@dataclass
class TrackSpec:
    """One unit of ingestion. role: ``paired`` or one of ROLES.

    files maps a source name to a path; for MUSDB-style folders without accompaniment.wav,
    ``accompaniment`` is a list of stems to sum.
    """

    corpus: str
    split: str
    role: str
    track_id: str
    files: dict[str, str | list[str]] = field(default_factory=dict)
    error: str = ""


def scan_corpus(cfg: CorpusConfig) -> list[TrackSpec]:
    root = Path(cfg.path)
    if not root.is_dir():
        raise SemisepError(f"corpus {cfg.name!r}: folder {cfg.path} does not exist")
    if cfg.format == "musdb18hq":
        return _scan_musdb18hq(cfg, root)
    return _scan_folder(cfg, root)


def _scan_musdb18hq(cfg: CorpusConfig, root: Path) -> list[TrackSpec]:
    """``ROOT/<split>/<track>/{mixture,vocals}.wav`` plus accompaniment.wav or drums/bass/other."""
    specs = []
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        split = cfg.splits.get(split_dir.name, split_dir.name)
        for track in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files: dict[str, str | list[str]] = {
                "mixture": str(track / "mixture.wav"),
                "vocals": str(track / "vocals.wav"),
            }
            if (track / "accompaniment.wav").exists():
                files["accompaniment"] = str(track / "accompaniment.wav")
            else:
                files["accompaniment"] = [str(track / f"{s}.wav") for s in MUSDB_ACCOMPANIMENT_STEMS]
            track_id = f"{split_dir.name}/{track.name}"
            if cfg.use == "paired":
                specs.append(TrackSpec(cfg.name, split, "paired", track_id, files))
            else:
                for role in ROLES:
                    specs.append(TrackSpec(cfg.name, split, role, f"{track_id}/{role}", {role: files[role]}))
    return specs


def _scan_folder(cfg: CorpusConfig, root: Path) -> list[TrackSpec]:
    """``ROOT/<role>/*``: every file under a role folder is one unpaired track of that role.

    Files with extensions we cannot decode are kept as specs with an ``error`` so the run
    reports them instead of silently ignoring them.
    """
    specs = []
    for role in ROLES:
        folder = root / role
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            rel = str(path.relative_to(root))
            spec = TrackSpec(cfg.name, cfg.split, role, rel, {role: str(path)})
            if path.suffix.lower() not in AUDIO_EXTENSIONS:
                spec.error = f"unsupported extension {path.suffix!r}"
            specs.append(spec)
    return specs
