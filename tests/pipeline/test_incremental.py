"""Nightly ingestion: only new or changed files are processed, deletions drop out, a killed run
leaves nothing behind that a second run does not finish, and one store takes one ingestion."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import soundfile as sf

from semisep.pipeline.errors import SemisepError
from semisep.training.data import stream_files
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow


def shard_bytes(shards_dir) -> dict[str, bytes]:
    """Relative path -> bytes of every shard file in the store."""
    root = Path(shards_dir)
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("part-*.parquet")
            if not any(part.startswith("_") for part in p.relative_to(root).parts)}  # not the _sources table


def test_incremental_runs(tiny_corpus, tmp_path, ray_session):
    from semisep.pipeline.ingest import ingest

    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    extra = tmp_path / "later"
    vocals = corpus / "unpaired" / "vocals"
    for f in sorted(vocals.glob("*.wav"))[:2]:  # held back now, added "tomorrow"
        extra.mkdir(exist_ok=True)
        shutil.move(f, extra / f.name)
    cfg = tiny_config(tmp_path / "work", corpus)
    first = ingest(cfg, progress=False)
    assert first.processed == len(first.manifest) > 0 and first.dataset_version == "0"
    before = shard_bytes(cfg.data.shards_dir)
    mtimes = {p: os.stat(Path(cfg.data.shards_dir) / p).st_mtime_ns for p in before}

    second = ingest(cfg, progress=False)
    assert second.processed == 0 and second.removed == 0
    assert second.dataset_version == first.dataset_version
    assert shard_bytes(cfg.data.shards_dir) == before
    assert {p: os.stat(Path(cfg.data.shards_dir) / p).st_mtime_ns for p in before} == mtimes

    for f in extra.iterdir():
        shutil.copy(f, vocals / f.name)
    added = ingest(cfg, progress=False)
    assert added.processed == 2
    assert sorted(added.manifest[added.manifest.processed].path) == sorted(str(vocals / f.name) for f in extra.iterdir())
    after_add = shard_bytes(cfg.data.shards_dir)
    assert len(after_add) == len(before) + 2 and all(after_add[p] == b for p, b in before.items())
    assert added.dataset_version != first.dataset_version

    changed = sorted((corpus / "unpaired" / "mixture").glob("*.wav"))[0]
    old_shard = added.manifest.set_index("path").loc[str(changed), "shard"]
    audio, sr = sf.read(changed)
    sf.write(changed, audio[::-1] * 0.5, sr)  # new content, same name
    third = ingest(cfg, progress=False)
    assert third.processed == 1 and third.removed == 1
    new_shard = third.manifest.set_index("path").loc[str(changed), "shard"]
    # the replaced shard leaves the new version, not the disk: the older versions still read it
    assert new_shard != old_shard and os.path.exists(new_shard) and os.path.exists(old_shard)
    after_change = shard_bytes(cfg.data.shards_dir)
    assert set(after_change) - set(after_add) == {str(Path(new_shard).relative_to(cfg.data.shards_dir))}
    assert all(after_change[p] == b for p, b in after_add.items())
    assert old_shard not in set(stream_files(cfg)["mixture"].paths)
    pinned = tiny_config(tmp_path / "work", corpus, **{"data.version": added.dataset_version})
    assert old_shard in set(stream_files(pinned)["mixture"].paths)

    deleted = sorted((corpus / "unpaired" / "accompaniment").glob("*.wav"))[0]
    gone_shard = third.manifest.set_index("path").loc[str(deleted), "shard"]
    deleted.unlink()
    fourth = ingest(cfg, progress=False)
    assert fourth.processed == 0 and fourth.removed == 1
    assert str(deleted) not in set(fourth.manifest.path) and os.path.exists(gone_shard)
    assert int(fourth.dataset_version) == int(third.dataset_version) + 1
    assert gone_shard not in stream_files(cfg)["accompaniment"].paths


def test_second_ingestion_of_a_store_is_refused(tiny_corpus, tmp_path, ray_session):
    from semisep.pipeline.ingest import ingest
    from semisep.pipeline.manifest import store_lock

    cfg = tiny_config(tmp_path / "work", tiny_corpus)
    with store_lock(os.path.abspath(cfg.data.shards_dir)):
        with pytest.raises(SemisepError, match=r"is being ingested by pid \d+ .*wait for that run"):
            ingest(cfg, progress=False)
    assert not list(Path(cfg.data.shards_dir).rglob("part-*.parquet"))


def test_run_killed_half_way_then_rerun_matches_uninterrupted(tiny_corpus, tmp_path, ray_session):
    from semisep.pipeline.ingest import ingest

    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus / "unpaired", corpus / "unpaired")
    for role in ("mixture", "vocals", "accompaniment"):  # more files, so the kill lands half-way
        for f in sorted((corpus / "unpaired" / role).glob("*.wav")):
            for k in range(4):
                shutil.copy(f, f.with_name(f"{f.stem}_copy{k}.wav"))
    total = sum(1 for _ in corpus.rglob("*.wav"))
    work = tmp_path / "killed"
    shards = work / "shards"
    overrides = ["--set", f"data.workdir={work}", "--set", "data.excerpt_frames=32", "--set", "ray.num_cpus=1",
                 "--set", f"data.corpora=[{{name: u, path: {corpus / 'unpaired'}, format: folder, use: unpaired}}]"]
    proc = subprocess.Popen([sys.executable, "-m", "semisep.cli", "ingest", *overrides],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(shards.rglob("part-*.parquet"))) < 3:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: driver, raylet, workers
    proc.wait()
    done = len(list(shards.rglob("part-*.parquet")))
    assert 3 <= done < total, f"kill landed at {done} of {total} shards"
    assert not (shards / "_delta_log").exists() and not (shards / "_sources").exists()  # no version committed

    cfg = tiny_config(work, corpus, **{"data.corpora": f"[{{name: u, path: {corpus / 'unpaired'}, format: folder, use: unpaired}}]"})
    rerun = ingest(cfg, progress=False)
    assert rerun.processed == total and (rerun.manifest.status == "ok").all()
    reference = ingest(tiny_config(tmp_path / "straight", corpus, **{"data.corpora": cfg.to_dict()["data"]["corpora"]}),
                       progress=False)
    assert rerun.dataset_version == reference.dataset_version
    got, want = shard_bytes(shards), shard_bytes(tmp_path / "straight" / "shards")
    assert sorted(got) == sorted(want) and len(got) == total
    for rel in want:
        assert pq.read_table(shards / rel).equals(pq.read_table(tmp_path / "straight" / "shards" / rel))
    assert not [p for p in shards.rglob("*") if p.name.endswith(".tmp")]


def test_corpus_given_as_a_uri_is_mirrored_and_ingested_like_the_folder(ingested, tiny_corpus, tmp_path):
    """A corpus path such as s3://bucket/audio goes through pyarrow's filesystems (file:// here):
    mirrored new-or-changed-only, the same shards and dataset version as the folder itself."""
    from semisep.pipeline import storage
    from semisep.pipeline.ingest import ingest

    _, plain = ingested
    cfg = tiny_config(tmp_path / "work", f"file://{tiny_corpus}")
    first = ingest(cfg, progress=False)
    assert first.dataset_version == plain.dataset_version and first.failed.empty
    mirrored = sorted((tmp_path / "work" / "audio_cache").rglob("*.wav"))
    assert len(mirrored) == len(list(Path(tiny_corpus).rglob("*.wav")))
    one = next(p for p in mirrored if "unpaired" in str(p))
    original = Path(tiny_corpus) / "unpaired" / one.relative_to(tmp_path / "work" / "audio_cache" / "unpaired")
    assert one.read_bytes() == original.read_bytes()
    assert one.stat().st_mtime_ns == original.stat().st_mtime_ns  # so the nightly size+mtime check holds

    one.unlink()  # a node without the mirror: the task fetches the file itself
    storage.ensure_local(str(one), str(tmp_path / "work" / "audio_cache" / "unpaired"), f"file://{tiny_corpus}/unpaired")
    assert one.read_bytes() == original.read_bytes()

    one.unlink()  # lost from the driver's mirror: copied again at the scan, and nothing is re-decoded
    second = ingest(cfg, progress=False)
    assert second.processed == 0 and second.dataset_version == plain.dataset_version and one.exists()

    with pytest.raises(SemisepError, match="no such folder"):
        ingest(tiny_config(tmp_path / "work2", f"file://{tmp_path}/missing"), progress=False)
