"""Every corpus adapter on a small fixture written in that corpus's exact layout.

Each test checks the track count, the split assignment, and that the vocals and accompaniment
the adapter reports add up to the mixture it reports (within codec tolerance for stem.mp4).
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile as sf
import yaml

from semisep.pipeline.config import CorpusConfig
from semisep.pipeline.corpora import load_source, scan_corpus, split_of
from semisep.pipeline.demo_corpus import SR, render_song
from semisep.pipeline.errors import SemisepError


@pytest.fixture(scope="module")
def songs():
    """Three 2-second stereo songs at 44.1 kHz: mixture, vocals, accompaniment (and fake stems)."""
    out = []
    for seed in range(3):
        s = render_song(seed, "studio", 2.0)
        acc = s["accompaniment"]
        # drums/bass/other that sum exactly to the accompaniment (thirds on the 16-bit grid)
        drums = np.round(acc / 3 * 32768) / 32768
        bass = np.round(acc / 3 * 32768) / 32768
        s.update(drums=drums, bass=bass, other=acc - drums - bass)
        out.append(s)
    return out


def write(path, audio, sr=SR):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio.T, sr, subtype="FLOAT")


def assert_additive(spec, atol=1e-5, min_snr_db=None):
    cache = {}
    mix, sr = load_source(spec.files["mixture"], cache)
    voc, _ = load_source(spec.files["vocals"], cache)
    acc, _ = load_source(spec.files["accompaniment"], cache)
    assert sr == SR and mix.shape == voc.shape == acc.shape and mix.shape[1] > SR
    err = mix - (voc + acc)
    if min_snr_db is None:
        np.testing.assert_allclose(err, 0, atol=atol)
    else:
        snr = 10 * np.log10(np.sum(mix**2) / np.sum(err**2))
        assert snr > min_snr_db, snr
    assert np.abs(voc).max() > 0.01 and np.abs(acc).max() > 0.01


def test_musdb18_stem_mp4(songs, tmp_path):
    for i, (split, s) in enumerate(zip(("train", "train", "test"), songs)):
        stems = []
        for name in ("mixture", "drums", "bass", "other", "vocals"):
            write(tmp_path / "src" / f"{i}_{name}.wav", s[name])
            stems.append(tmp_path / "src" / f"{i}_{name}.wav")
        dest = tmp_path / "musdb18" / split / f"Artist {i} - Song.stem.mp4"
        dest.parent.mkdir(parents=True, exist_ok=True)
        cmd = ["ffmpeg", "-v", "error", "-y"]
        for f in stems:
            cmd += ["-i", str(f)]
        for k in range(5):
            cmd += ["-map", f"{k}:a"]
        subprocess.run(cmd + ["-c:a", "aac", "-b:a", "256k", str(dest)], check=True)
    specs = scan_corpus(CorpusConfig("m", str(tmp_path / "musdb18"), format="musdb18"))
    assert [(s.split, s.track_id) for s in specs] == [
        ("test", "test/Artist 2 - Song"), ("train", "train/Artist 0 - Song"), ("train", "train/Artist 1 - Song")]
    assert [p["stream"] for p in specs[0].files["accompaniment"]] == [1, 2, 3]
    for spec in specs:
        assert_additive(spec, min_snr_db=20)
    # the decoded vocals stream is the vocals, not another stem
    voc, _ = load_source(specs[1].files["vocals"])
    ref = songs[0]["vocals"][:, : voc.shape[1]]
    assert np.corrcoef(voc[0, : ref.shape[1]], ref[0])[0, 1] > 0.95


def test_musdb18hq_and_unpaired_use(songs, tmp_path):
    for i, (split, s) in enumerate(zip(("train", "train", "test"), songs)):
        for name in ("mixture", "drums", "bass", "other", "vocals"):
            write(tmp_path / split / f"song{i}" / f"{name}.wav", s[name])
    specs = scan_corpus(CorpusConfig("hq", str(tmp_path)))
    assert [(s.split, s.role) for s in specs] == [("test", "paired"), ("train", "paired"), ("train", "paired")]
    assert len(specs[0].files["accompaniment"]) == 3
    for spec in specs:
        assert_additive(spec)
    unpaired = scan_corpus(CorpusConfig("hq", str(tmp_path), use="unpaired", splits={"test": "valid"}))
    # train tracks become one unpaired row set per role; valid keeps the truth
    assert sorted((s.split, s.role) for s in unpaired) == [
        ("train", r) for r in ("accompaniment", "accompaniment", "mixture", "mixture", "vocals", "vocals")
    ] + [("valid", "paired")]


def test_dsd100(songs, tmp_path):
    for i, (split, s) in enumerate(zip(("Dev", "Dev", "Test"), songs)):
        write(tmp_path / "Mixtures" / split / f"{i:03d} - Band" / "mixture.wav", s["mixture"])
        for name in ("vocals", "drums", "bass", "other"):
            write(tmp_path / "Sources" / split / f"{i:03d} - Band" / f"{name}.wav", s[name])
    specs = scan_corpus(CorpusConfig("dsd", str(tmp_path), format="dsd100"))
    assert [(s.split, s.track_id) for s in specs] == [
        ("train", "Dev/000 - Band"), ("train", "Dev/001 - Band"), ("test", "Test/002 - Band")]
    for spec in specs:
        assert_additive(spec)
    renamed = scan_corpus(CorpusConfig("dsd", str(tmp_path), format="dsd100", splits={"Test": "skip"}))
    assert [s.split for s in renamed] == ["train", "train"]


def test_medleydb(songs, tmp_path):
    instruments = {"S01": "female singer", "S02": "drum set", "S03": "electric bass", "S04": ["male singer", "vocalists"]}
    for i, s in enumerate(songs):
        name = f"Artist{i}_Song"
        folder = tmp_path / "Audio" / name
        parts = {"S01": s["vocals"] * 0.5, "S02": s["drums"], "S03": s["bass"] + s["other"], "S04": s["vocals"] * 0.5}
        stems = {}
        for k, audio in parts.items():
            fname = f"{name}_STEM_{k[1:]}.wav"
            write(folder / f"{name}_STEMS" / fname, audio)
            stems[k] = {"filename": fname, "instrument": instruments[k], "component": ""}
        if i == 2:  # an instrumental song: no stem is a voice
            stems = {k: v for k, v in stems.items() if k in ("S02", "S03")}
        write(folder / f"{name}_MIX.wav", s["mixture"])
        meta = {"artist": f"Artist{i}", "mix_filename": f"{name}_MIX.wav", "stem_dir": f"{name}_STEMS",
                "instrumental": "yes" if i == 2 else "no", "stems": stems}
        (folder / f"{name}_METADATA.yaml").write_text(yaml.safe_dump(meta))
    cfg = CorpusConfig("medley", str(tmp_path), format="medleydb", partition={"train": 1, "valid": 1, "test": 1})
    specs = scan_corpus(cfg)
    assert len(specs) == 3
    assert specs[2].skip.startswith("instrumental")
    for spec in specs:
        assert spec.split == split_of(cfg, spec.track_id, None) in ("train", "valid", "test")
    for spec in specs[:2]:
        assert [p["path"].rsplit("_", 1)[-1] for p in spec.files["vocals"]] == ["01.wav", "04.wav"]
        assert_additive(spec)
        voc, _ = load_source(spec.files["vocals"])
        np.testing.assert_allclose(voc, songs[int(spec.track_id[6])]["vocals"], atol=1e-5)


def test_partition_is_balanced_and_stable():
    cfg = CorpusConfig("c", "/x", format="ccmixter", partition={"train": 1, "valid": 1, "test": 1})
    splits = [split_of(cfg, f"track{i}", None) for i in range(300)]
    counts = {s: splits.count(s) for s in ("train", "valid", "test")}
    assert all(70 < c < 130 for c in counts.values()), counts
    # a track keeps its split when others are added or the order changes
    assert [split_of(cfg, f"track{i}", None) for i in reversed(range(300))] == splits[::-1]


def test_ccmixter(songs, tmp_path):
    for i, s in enumerate(songs):
        write(tmp_path / f"Song {i}" / "mix.wav", s["mixture"])
        write(tmp_path / f"Song {i}" / "source-01.wav", s["accompaniment"])
        write(tmp_path / f"Song {i}" / "source-02.wav", s["vocals"])
    (tmp_path / "README").write_text("ccMixter corpus")
    cfg = CorpusConfig("cc", str(tmp_path), format="ccmixter", split="valid")
    specs = scan_corpus(cfg)
    assert [(s.track_id, s.split) for s in specs] == [(f"Song {i}", "valid") for i in range(3)]
    for spec in specs:
        assert spec.files["vocals"][0]["path"].endswith("source-02.wav")
        assert_additive(spec)


def test_ikala_channels(songs, tmp_path):
    for i, s in enumerate(songs):
        stereo = np.stack([s["accompaniment"][0], s["vocals"][0]])  # music left, voice right
        write(tmp_path / "Wavs" / f"{10161 + i}_chorus.wav", stereo)
    cfg = CorpusConfig("ikala", str(tmp_path), format="ikala", use="unpaired", split="train")
    specs = scan_corpus(cfg)
    assert len(specs) == 9 and {s.role for s in specs} == {"mixture", "vocals", "accompaniment"}
    paired = scan_corpus(CorpusConfig("ikala", str(tmp_path), format="ikala", split="test"))
    assert len(paired) == 3
    for spec in paired:
        assert_additive(spec)
        voc, _ = load_source(spec.files["vocals"])
        np.testing.assert_allclose(voc[0], songs[int(spec.track_id.split("_")[0]) - 10161]["vocals"][0], atol=1e-6)


def test_ikala_sections_of_one_song_share_a_split(tmp_path):
    """iKala names clips <song>_<section>: partitioned by track they would land in train and test."""
    folder = tmp_path / "Wavs"
    folder.mkdir()
    for song in range(10000, 10060):
        for section in ("verse", "chorus"):
            (folder / f"{song}_{section}.wav").write_bytes(b"")
    cfg = CorpusConfig("ikala", str(tmp_path), format="ikala", partition={"train": 1, "valid": 1, "test": 1})
    by_song = {}
    for spec in scan_corpus(cfg):
        by_song.setdefault(spec.track_id.split("_")[0], set()).add(spec.split)
    assert len(by_song) == 60 and all(len(splits) == 1 for splits in by_song.values())
    assert {s for splits in by_song.values() for s in splits} == {"train", "valid", "test"}


def test_a_corpus_folder_without_tracks_is_an_error(tmp_path):
    (tmp_path / "mixture").mkdir()
    with pytest.raises(SemisepError, match="no folder tracks in .* nothing in the store was changed"):
        scan_corpus(CorpusConfig("u", str(tmp_path), format="folder", use="unpaired"))
