"""A training run reads the store's version it planned on: through a resume with another number of
workers, whatever ingestion and relabelling did in between (pipeline/table.py, training/data.py)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from semisep.pipeline import table
from semisep.pipeline.config import Config
from semisep.pipeline.errors import SemisepError
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow


def _coverage(client, run_id: str) -> tuple[list[float], dict[str, float]]:
    """(every data_coverage_errors value the run logged, the last data_epochs/<stream> values)."""
    run = client.get_run(run_id)
    errors = [m.value for m in client.get_metric_history(run_id, "data_coverage_errors")]
    epochs = {k.split("/", 1)[1]: v for k, v in run.data.metrics.items() if k.startswith("data_epochs/")}
    return errors, epochs


def test_a_resumed_and_resized_run_reads_its_pinned_version_after_ingest_and_relabel(
        tiny_corpus, trained, tmp_path, ray_session):
    from mlflow import MlflowClient

    from semisep.evaluation.pseudo_labels import label_mixtures
    from semisep.pipeline.ingest import ingest, vacuum
    from semisep.pipeline.pseudo_store import pseudo_dir
    from semisep.training.data import pin_version
    from semisep.training.train import train

    _, teachers = trained
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    work = tmp_path / "work"
    cfg = tiny_config(work, corpus, **{"train.num_workers": 2, "train.alpha": 0, "train.beta": 0, "train.remix": 0.5,
                                       "train.pseudo": 0.25, "train.max_steps": 8, "train.val_every": 4,
                                       "train.checkpoint_every_s": 0, "train.shuffle_buffer": 4})
    v0 = ingest(cfg, progress=False).dataset_version
    import ray  # Ray Data reads a version of the store as a Delta table

    rows_v0 = int(table.files(cfg.data.shards_dir, 0)[0].rows.sum())
    assert ray.data.read_delta(cfg.data.shards_dir, version=0, columns=["role", "track_id"]).count() == rows_v0
    label_mixtures(cfg, teachers["supervised"].model_dir, "teacher-0", say=lambda _: None)
    first = train(cfg, "pinned")
    client = MlflowClient(cfg.tracking_uri)
    assert client.get_run(first.run_id).data.tags["semisep.dataset_version"] == v0 == "0"

    # meanwhile: new songs, a deleted one, another teacher's labels (every label file replaced)
    vocals = sorted((corpus / "unpaired" / "vocals").glob("*.wav"))
    audio, sr = sf.read(vocals[0])
    sf.write(vocals[0].with_name("new_song.wav"), np.roll(audio, sr // 3) * 0.7, sr)
    sorted((corpus / "unpaired" / "accompaniment").glob("*.wav"))[0].unlink()
    after = ingest(cfg, progress=False)
    assert after.dataset_version == "1" and after.removed == 1
    label_mixtures(cfg, teachers["semi-supervised"].model_dir, "teacher-1", say=lambda _: None)
    old_files = set(table.files(cfg.data.shards_dir, 0)[0].shard) | set(table.files(pseudo_dir(cfg), 0)[0].shard)
    new_files = (set(table.files(cfg.data.shards_dir)[0].shard) | set(table.files(pseudo_dir(cfg))[0].shard)) - old_files
    assert new_files and all(os.path.exists(f) for f in old_files)
    vacuum(cfg)  # inside data.retention_days: deletes nothing version 0 needs
    assert all(os.path.exists(f) for f in old_files)

    # resume on 1 worker instead of 2 with the new version's own files out of reach: a read of any
    # of them fails the run
    hidden = {f: f + ".hidden" for f in new_files}
    for f, h in hidden.items():
        os.rename(f, h)
    resumed_cfg = Config.from_dict(cfg.to_dict())
    resumed_cfg.train.num_workers, resumed_cfg.train.max_steps = 1, 20
    try:
        resumed = train(resumed_cfg, "pinned", resume=True)
    finally:
        for f, h in hidden.items():
            os.rename(h, f)
    run = client.get_run(resumed.run_id)
    assert run.data.tags["semisep.dataset_version"] == "0" and run.data.tags["semisep.pseudo_table_version"] == "0"
    assert run.data.tags["semisep.resumed_from_run"] == first.run_id and resumed.steps == 20
    errors, epochs = _coverage(client, resumed.run_id)
    assert errors and set(errors) == {0.0}, errors  # every finished epoch drew each row of version 0 once
    assert epochs.get("remix_vocals", 0) >= 1 and epochs.get("paired", 0) >= 1, epochs
    with pytest.raises(SemisepError, match=r"--resume with data.version=1: the checkpoint trained on version 0"):
        train(Config.from_dict(resumed_cfg.to_dict() | {"data": resumed_cfg.to_dict()["data"] | {"version": 1}}),
              "pinned", resume=True)

    # a run started now reads the new version
    fresh_cfg = Config.from_dict(cfg.to_dict())
    fresh_cfg.train.max_steps = 4
    fresh = train(fresh_cfg, "after-ingest")
    tags = client.get_run(fresh.run_id).data.tags
    assert tags["semisep.dataset_version"] == "1" and tags["semisep.pseudo_table_version"] == "1"
    assert pin_version(cfg).data.version == 1
