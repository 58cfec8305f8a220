"""Ingestion with real Ray Data on a tiny generated corpus, bad files included."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import tiny_config

pytestmark = pytest.mark.slow


def test_ingest_writes_paired_and_unpaired_shards(ingested):
    cfg, report = ingested
    m = report.manifest
    assert (m.status == "ok").all()
    paired = m[m.role == "paired"]
    assert set(paired.split) == {"train", "valid", "gate", "test"}
    assert set(m[m.role != "paired"].role) == {"mixture", "vocals", "accompaniment"}
    train = paired[paired.split == "train"]
    shard = pq.read_table(train.shard.iloc[0])
    assert {"mixture", "vocals", "accompaniment", "start_frame", "track_id"} <= set(shard.column_names)
    assert shard.num_rows == train.excerpts.iloc[0] > 0


def test_no_training_stream_lists_a_gate_shard(ingested):
    """The gate's songs are ingested like any split, and no stream training or validation draws
    from lists them (the e2e tests run with those shards spoiled: tests/conftest.py)."""
    from semisep.training.data import stream_files

    cfg, report = ingested
    gate = set(report.manifest[report.manifest.split == "gate"].shard)
    listed = {path for files in stream_files(cfg).values() for path in files.paths}
    assert gate and listed and not gate & listed


def test_bad_files_are_reported_and_the_rest_ingested(tiny_corpus, tmp_path, ray_session):
    from semisep.pipeline.ingest import ingest

    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    vocals = corpus / "unpaired" / "vocals"
    (vocals / "empty.wav").write_bytes(b"")
    (vocals / "notes.wav").write_text("this is a text file, not audio\n")
    good = next(vocals.glob("target_*.wav")).read_bytes()
    (vocals / "corrupt.wav").write_bytes(good[:8] + b"JUNKJUNK" + good[16:])  # format header destroyed
    (vocals / "cover.jpg").write_bytes(b"\xff\xd8\xff")
    import soundfile as sf

    sf.write(vocals / "short.wav", np.full((1000, 2), 0.1, np.float32), 44100)
    sf.write(vocals / "silent.wav", np.zeros((44100 * 3, 2), np.float32), 44100)
    nan = np.full((44100 * 3, 2), 0.1, np.float32)
    nan[5000] = np.nan
    sf.write(vocals / "nan.wav", nan, 44100, subtype="FLOAT")
    nan[5000] = np.inf
    sf.write(vocals / "inf.wav", nan, 44100, subtype="FLOAT")
    (vocals / "gone.wav").symlink_to(tmp_path / "nowhere.wav")  # unreadable: a dangling link
    paired = sorted((corpus / "paired" / "train").iterdir())
    missing = paired[0] / "vocals.wav"
    missing.unlink()
    audio, sr = sf.read(paired[1] / "vocals.wav")
    sf.write(paired[1] / "vocals.wav", audio[: len(audio) // 2], sr)  # stems of different lengths
    valid = next((corpus / "target" / "valid").iterdir())
    audio, sr = sf.read(valid / "accompaniment.wav")
    sf.write(valid / "accompaniment.wav", audio[::2], sr // 2)  # stems at different rates
    cfg = tiny_config(tmp_path / "work", corpus)
    report = ingest(cfg, progress=False)
    m = report.manifest
    def reason(path):
        (error,) = m[m.path == str(path)].error
        return error
    assert reason(missing) == "file not found"
    assert "does not match" in reason(paired[1] / "vocals.wav")
    assert "does not match" in reason(valid / "accompaniment.wav") and "22050 Hz" in reason(valid / "accompaniment.wav")
    assert reason(paired[0] / "mixture.wav").startswith("not ingested: vocals.wav of this track")
    expected = {"empty.wav": "empty", "notes.wav": "cannot decode", "corrupt.wav": "cannot decode",
                "cover.jpg": "unsupported extension", "short.wav": "too short", "silent.wav": "silent",
                "nan.wav": "NaN or infinite", "inf.wav": "NaN or infinite", "gone.wav": "not a regular file (broken link?)"}
    for name, words in expected.items():
        assert words in reason(vocals / name), (name, reason(vocals / name))
    # nothing else is lost: every other file of the clean corpus is ingested, with the same shards
    clean = ingest(tiny_config(tmp_path / "clean", tiny_corpus), progress=False).manifest
    bad_tracks = {paired[0].name, paired[1].name, valid.name}
    kept = clean[~clean.track_id.map(lambda t: t.split("/")[1] in bad_tracks)]
    ok = m[m.status == "ok"]
    assert len(ok) == len(kept) == len(m) - len(expected) - 3 * 3
    assert sorted(map(os.path.basename, ok.shard)) == sorted(map(os.path.basename, kept.shard))


def test_second_run_reuses_every_shard(ingested):
    from semisep.pipeline.ingest import ingest

    cfg, first = ingested
    before = {p: open(p, "rb").read() for p in first.manifest.shard}
    second = ingest(cfg, progress=False)
    assert second.processed == 0 and not second.manifest.processed.any()
    assert second.dataset_version == first.dataset_version
    assert all(open(p, "rb").read() == b for p, b in before.items())


def test_cli_ingest_prints_one_line_per_bad_file(tiny_corpus, tmp_path):
    corpus = tmp_path / "c"
    shutil.copytree(tiny_corpus / "unpaired", corpus / "unpaired")
    (corpus / "unpaired" / "mixture" / "broken.wav").write_text("not audio")
    proc = subprocess.run(
        [sys.executable, "-m", "semisep.cli", "ingest", "--set", f"data.workdir={tmp_path / 'w'}",
         "--set", f"data.corpora=[{{name: u, path: {corpus / 'unpaired'}, format: folder, use: unpaired}}]",
         "--set", "data.excerpt_frames=32", "--set", "ray.num_cpus=2"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [l for l in proc.stdout.splitlines() if "broken.wav" in l]
    assert len(lines) == 1 and "cannot decode" in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "ingested 6 of 7 tracks" in proc.stdout and "exit" not in proc.stderr


def test_training_reader_refuses_shards_of_another_transform(ingested):
    from semisep.pipeline.errors import SemisepError
    from semisep.training.data import stream_files

    cfg, _ = ingested
    other = type(cfg).from_dict(cfg.to_dict())
    other.transform = type(cfg.transform)(**{**cfg.transform.to_dict(), "hop_length": 128})
    with pytest.raises(SemisepError, match="hop_length: 256 there vs 128 here.*re-run"):
        stream_files(other)
