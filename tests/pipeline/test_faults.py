"""Ingestion under faults: failed tracks are retried, an empty corpus removes nothing, manifest rows
keep what the audio is, failures count tracks, one song never sits in two splits, a full disk
stops the run naming the store and the next run completes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from semisep.pipeline import table
from semisep.pipeline.errors import SemisepError, StoreError
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow


def _copy(tiny_corpus, tmp_path) -> Path:
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    return corpus


def test_a_track_that_failed_is_retried_on_the_next_run(tiny_corpus, tmp_path, ray_session):
    """A transient read error (here: the bytes garbled, then restored with the same size and
    mtime) must not stay a failure for good because the file looks unchanged."""
    from semisep.pipeline.ingest import ingest

    corpus = _copy(tiny_corpus, tmp_path)
    victim = sorted((corpus / "unpaired" / "vocals").glob("*.wav"))[0]
    good, stat = victim.read_bytes(), victim.stat()
    victim.write_bytes(good[:8] + b"JUNKJUNK" + good[16:])
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    cfg = tiny_config(tmp_path / "work", corpus)
    first = ingest(cfg, progress=False)
    assert first.failed_tracks == 1 and "cannot decode" in first.failed.error.iloc[0]
    victim.write_bytes(good)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = ingest(cfg, progress=False)
    assert second.failed.empty and second.processed == 1
    assert (second.manifest.status == "ok").all()


def test_an_empty_or_missing_corpus_root_is_an_error_that_removes_nothing(tiny_corpus, tmp_path, ray_session):
    from semisep.pipeline.ingest import ingest

    corpus = _copy(tiny_corpus, tmp_path)
    cfg = tiny_config(tmp_path / "work", corpus)
    first = ingest(cfg, progress=False)
    shards = sorted(Path(cfg.data.shards_dir).rglob("part-*.parquet"))
    versions = [table.latest_version(cfg.data.shards_dir), table.latest_version(f"{cfg.data.shards_dir}/_sources")]
    for role in ("mixture", "vocals", "accompaniment"):  # an unmounted mount point looks like this
        shutil.rmtree(corpus / "unpaired" / role)
    with pytest.raises(SemisepError, match=r"corpus 'unpaired': no folder tracks in .*nothing in the store was changed"):
        ingest(cfg, progress=False)
    shutil.rmtree(corpus / "unpaired")
    with pytest.raises(SemisepError, match="does not exist"):
        ingest(cfg, progress=False)
    assert sorted(Path(cfg.data.shards_dir).rglob("part-*.parquet")) == shards
    assert [table.latest_version(cfg.data.shards_dir), table.latest_version(f"{cfg.data.shards_dir}/_sources")] == versions
    assert first.failed.empty


def test_manifest_rows_carry_duration_rate_and_channels_when_the_shard_already_exists(tiny_corpus, tmp_path, ray_session):
    """After a run killed before its manifest's commit (or a `touch`), the shards are there: the rows
    must still say what the audio is, so the hours in the report do not shrink for good."""
    from semisep.pipeline.ingest import format_report, ingest

    corpus = _copy(tiny_corpus, tmp_path)
    cfg = tiny_config(tmp_path / "work", corpus)
    first = ingest(cfg, progress=False)
    shutil.rmtree(Path(cfg.data.shards_dir) / "_sources")  # as a kill -9 before the manifest's first commit leaves it
    os.utime(sorted((corpus / "unpaired" / "mixture").glob("*.wav"))[0])  # and a touched file
    again = ingest(cfg, progress=False)
    cols = ["path", "duration", "sample_rate", "channels"]
    pd.testing.assert_frame_equal(again.manifest[cols], first.manifest[cols])
    assert (again.manifest.duration > 3.9).all() and (again.manifest.sample_rate == 44100).all()
    hours = lambda r: format_report(r).splitlines()[1].split(" h of audio")[0]  # noqa: E731
    assert hours(again) == hours(first)


def test_failure_share_counts_tracks_not_their_sibling_files(tiny_corpus, tmp_path, ray_session):
    from semisep.pipeline.ingest import ingest

    corpus = _copy(tiny_corpus, tmp_path)
    (sorted((corpus / "paired" / "train").iterdir())[0] / "vocals.wav").write_text("not audio")
    cfg = tiny_config(tmp_path / "work", corpus)
    report = ingest(cfg, progress=False)
    assert len(report.failed) == 3  # the bad stem and its two siblings are out
    assert report.failed_tracks == 1 and report.failed_share == pytest.approx(1 / report.tracks)
    proc = subprocess.run([os.sys.executable, "-m", "semisep.cli", "ingest", "--set", f"data.workdir={tmp_path / 'work'}",
                           "--set", f"data.corpora={cfg.to_dict()['data']['corpora']}", "--set", "data.excerpt_frames=32",
                           "--set", "ray.num_cpus=2", "--set", "data.max_failed_share=0.05"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3 and f"1 of {report.tracks} tracks failed" in proc.stderr, proc.stderr[-2000:]


def test_one_recording_in_two_splits_or_corpora_is_refused_naming_both(tiny_corpus, tmp_path, ray_session):
    from semisep.pipeline.ingest import ingest

    corpus = _copy(tiny_corpus, tmp_path)
    leaked = sorted((corpus / "unpaired" / "vocals").glob("*.wav"))[0]
    (tmp_path / "leak" / "vocals").mkdir(parents=True)
    shutil.copy(leaked, tmp_path / "leak" / "vocals" / "copy.wav")
    cfg = tiny_config(tmp_path / "work", corpus)
    corpora = cfg.to_dict()["data"]["corpora"] + [{"name": "leak", "path": str(tmp_path / "leak"), "format": "folder",
                                                   "use": "unpaired", "split": "test"}]
    cfg = tiny_config(tmp_path / "work", corpus, **{"data.corpora": corpora})
    report = ingest(cfg, progress=False)
    m = report.manifest.set_index("path")
    original, copy = m.loc[str(leaked)], m.loc[str(tmp_path / "leak" / "vocals" / "copy.wav")]
    assert original.status == copy.status == "error"
    assert str(tmp_path / "leak" / "vocals" / "copy.wav") in original.error and "leak/test" in original.error
    assert str(leaked) in copy.error and "unpaired/train" in copy.error
    assert report.failed_tracks == 2 and (report.manifest.status == "ok").sum() == len(report.manifest) - 2


def test_a_full_disk_stops_ingestion_naming_the_store_and_the_rerun_completes(tiny_corpus, tmp_path, ray_session):
    from semisep.pipeline.ingest import ingest
    from tests.pipeline.test_incremental import shard_bytes

    store = tmp_path / "small"
    store.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(store)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root (CI and the dev machines have it)")
    try:
        cfg = tiny_config(tmp_path / "work", tiny_corpus, **{"data.store": str(store)})
        with pytest.raises(StoreError, match=rf"{store}.*No space left on device.*free space"):
            ingest(cfg, progress=False)
        assert not (store / "_delta_log").exists() and not (store / "_sources").exists()  # no version naming missing shards
        subprocess.run(["mount", "-o", "remount,size=64m", str(store)], check=True)
        rerun = ingest(cfg, progress=False)
        clean = ingest(tiny_config(tmp_path / "clean", tiny_corpus), progress=False)
        assert rerun.dataset_version == clean.dataset_version and rerun.failed.empty
        assert shard_bytes(store) == shard_bytes(tmp_path / "clean" / "shards")
        assert not [p for p in store.rglob("*") if p.name.endswith(".tmp")]
        cols = ["corpus", "split", "role", "track_id", "file_hash", "duration", "status", "excerpts"]
        pd.testing.assert_frame_equal(rerun.manifest[cols], clean.manifest[cols])
    finally:
        subprocess.run(["umount", "-l", str(store)])
