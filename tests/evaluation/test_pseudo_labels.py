"""Pseudo-labels: the teacher's separations add up to the mixtures, the confidence filter keeps the
most decided excerpts, the teacher is recorded, and the nightly step relabels only for a new champion."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from semisep.pipeline.config import Config

pytestmark = pytest.mark.slow


def _decode(shard, column, cfg):
    from semisep.pipeline.shards import decode_column

    return decode_column(pq.read_table(shard).column(column), cfg.transform.freq_bins, cfg.data.excerpt_frames,
                         cfg.data.dtype).astype(np.float32)


def test_labels_add_up_to_the_mixtures_keep_the_most_decided_excerpts_and_name_the_teacher(trained, tmp_path):
    from semisep.evaluation.pseudo_labels import label_mixtures, teacher_labels
    from semisep.pipeline.manifest import read_manifest, shards_in_use
    from semisep.pipeline.pseudo_store import read_pseudo_manifest
    from semisep.training.checkpoint import load_model

    base, results = trained
    cfg = Config.from_dict(base.to_dict())
    cfg.pseudo.keep, cfg.pseudo.repet_weights = 0.5, [0.0]  # the teacher alone (the blend: the next test)
    model_dir = results["supervised"].model_dir
    report = label_mixtures(cfg, model_dir, "teacher-under-test", "run-1", str(tmp_path / "pseudo"), say=lambda _: None)
    rows, info = read_pseudo_manifest(str(tmp_path / "pseudo"))
    manifest, _ = read_manifest(cfg.data.shards_dir)
    ok = shards_in_use(manifest)
    mixtures = sorted(ok[(ok.role == "mixture") & (ok.split == "train")].shard)
    assert sorted(rows.source_shard) == mixtures and report.labelled == len(mixtures)
    assert info["teacher"] == "teacher-under-test" and info["version"] == report.version
    assert set(rows.teacher) == {"teacher-under-test"} and set(rows.teacher_run_id) == {"run-1"}
    model, _, _ = load_model(model_dir)
    for row in rows.itertuples():
        mixture = _decode(row.shard, "mixture", cfg)
        vocals, accompaniment = _decode(row.shard, "vocals", cfg), _decode(row.shard, "accompaniment", cfg)
        assert np.abs(vocals + accompaniment - mixture).max() <= 2e-2 * np.abs(mixture).max()  # float16 storage
        assert row.excerpts == max(1, round(0.5 * row.source_excerpts)) < row.source_excerpts
        # the kept excerpts are the ones the teacher's mask is most decided on
        source = _decode(row.source_shard, "mixture", cfg)
        _, _, conf = teacher_labels(model, source)
        kept = pq.read_table(row.shard).column("confidence").to_numpy()
        assert np.allclose(np.sort(kept), np.sort(conf)[-row.excerpts:], atol=1e-5)
        assert kept.min() >= np.sort(conf)[-row.excerpts] - 1e-5


def test_labels_blend_the_teacher_with_repet_sim_at_the_weight_validation_chose(trained, tmp_path):
    """pseudo.repet_weights and pseudo.vocal_scales: the pseudo-labeller scores each blended (and
    scaled) mask on the validation songs as training's validation does, labels with the best, and
    records weight, scale and figures."""
    import torch

    from semisep.evaluation.pseudo_labels import choose_blend, label_mixtures, song_repet_masks, teacher_masks
    from semisep.pipeline.pseudo_store import read_pseudo_manifest
    from semisep.training.checkpoint import load_model
    from semisep.training.data import load_training_data
    from semisep.training.validation import soft_mask, validate

    base, results = trained
    cfg = Config.from_dict(base.to_dict())
    cfg.pseudo.repet_weights = [1.0, 0.0, 0.5]
    model_dir = results["supervised"].model_dir
    model, _, _ = load_model(model_dir)
    model.eval()
    said = []
    best, scale, scores = choose_blend(cfg, model, said.append)
    assert scale == 1.0 and sorted(scores) == ["0", "0.5", "1"] and scores[f"{best:g}"] == max(scores.values())
    _, valid = load_training_data(cfg)
    assert abs(scores["0"] - validate(model, valid, 8)["val_sdr"]) < 1e-3  # weight 0: training's figure
    assert len(set(round(v, 3) for v in scores.values())) == 3 and f"labelling with weight {best:g}" in said[0]

    class Scaled(torch.nn.Module):
        """The teacher with its vocal mask scaled: estimates whose soft mask is scale x the teacher's."""

        def __init__(self, scale):
            super().__init__()
            self.scale = scale

        def forward(self, mix_log):
            m = self.scale * soft_mask(model(mix_log))[:, 0]
            mag = torch.expm1(mix_log)
            return torch.log1p(torch.stack([m * mag, (1 - m) * mag], 1))

    cfg.pseudo.vocal_scales = [1.0, 0.5]  # every (weight, scale) pair is scored
    best, scale, scaled = choose_blend(cfg, model, said.append)
    assert sorted(scaled) == sorted(f"{w} x{x}" for w in ("0", "0.5", "1") for x in ("1", "0.5"))
    assert all(abs(scaled[f"{w} x1"] - scores[w]) < 1e-9 for w in scores)
    assert abs(scaled["0 x0.5"] - validate(Scaled(0.5), valid, 8)["val_sdr"]) < 1e-3  # training's figure again
    assert scaled[f"{best:g} x{scale:g}"] == max(scaled.values()) and f"scale {scale:g}" in said[1]

    cfg.pseudo.repet_weights, cfg.pseudo.vocal_scales = [0.5], [0.5]  # one pair: no choice, labels with it
    label_mixtures(cfg, model_dir, "teacher-under-test", "run-1", str(tmp_path / "pseudo"), say=lambda _: None)
    rows, info = read_pseudo_manifest(str(tmp_path / "pseudo"))
    assert set(rows.repet) == {0.5} and info["repet"] == "0.5" and set(rows.scale) == {0.5} and info["scale"] == "0.5"
    for row in rows.itertuples():
        starts = pq.read_table(row.source_shard).column("start_frame").to_numpy()
        source = _decode(row.source_shard, "mixture", cfg)
        mask = 0.5 * (0.5 * teacher_masks(model, source) + 0.5 * song_repet_masks(source, starts, cfg))
        assert np.abs(_decode(row.shard, "vocals", cfg) - source * mask).max() <= 2e-2 * np.abs(source).max()
        # not the teacher alone
        assert np.abs(_decode(row.shard, "vocals", cfg) - source * teacher_masks(model, source)).max() > \
            5e-2 * np.abs(source).max()

    import os

    # the same teacher, another weight and scale: a new label set beside, the old one out of the new
    # version and kept on disk for the versions before it, until a vacuum
    from semisep.pipeline import table

    cfg.pseudo.repet_weights, cfg.pseudo.vocal_scales = [0.0], [1.0]
    label_mixtures(cfg, model_dir, "teacher-under-test", "run-1", str(tmp_path / "pseudo"), say=lambda _: None)
    again, info = read_pseudo_manifest(str(tmp_path / "pseudo"))
    assert set(again.repet) == {0.0} and info["repet"] == "0.0" and set(again.scale) == {1.0}
    assert not set(again.shard) & set(rows.shard) and all(os.path.exists(s) for s in rows.shard)
    latest, number = table.files(str(tmp_path / "pseudo"))
    assert set(latest.shard) == set(again.shard) and number == 1
    assert set(table.files(str(tmp_path / "pseudo"), 0)[0].shard) == set(rows.shard)
    table.vacuum(str(tmp_path / "pseudo"), retention_days=0)
    assert not any(os.path.exists(s) for s in rows.shard) and all(os.path.exists(s) for s in again.shard)


def test_a_new_champion_makes_the_nightly_step_relabel_and_an_unchanged_one_does_not(trained, tmp_path):
    from mlflow import MlflowClient

    from semisep.evaluation.registry import log_model, register
    from semisep.nightly import refresh_pseudo_labels
    from semisep.pipeline.pseudo_store import pseudo_dir, read_pseudo_manifest
    from semisep.pipeline import storage
    from semisep.training.tracking import start_run

    base, results = trained
    cfg = Config.from_dict(base.to_dict())
    cfg.mlflow.tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg.train.pseudo, cfg.train.pseudo_labels = 0.25, str(tmp_path / "pseudo")
    said = []
    plain, version = refresh_pseudo_labels(cfg, said.append)  # no champion yet: a night without pseudo-labels
    assert plain.train.pseudo == 0 and version == "" and "no champion to pseudo-label with yet" in said[0]

    client = MlflowClient(cfg.tracking_uri)
    versions = []
    for name in ("supervised", "semi-supervised"):
        run_id = start_run(cfg.tracking_uri, "pseudo", name, {}, {})
        client.set_tag(run_id, "semisep.model_uri", log_model(cfg.tracking_uri, run_id, results[name].model_dir))
        versions.append(register(cfg.tracking_uri, cfg.mlflow.registered_model, run_id))
    client.set_registered_model_alias(cfg.mlflow.registered_model, "champion", versions[0])

    _, first = refresh_pseudo_labels(cfg, said.append)
    rows, info = read_pseudo_manifest(pseudo_dir(cfg))
    assert info["teacher"] == f"models:/{cfg.mlflow.registered_model}/{versions[0]}" and info["version"] == first
    from semisep.pipeline import table

    labels_version = table.latest_version(pseudo_dir(cfg))
    written = {s: storage.resolve(s)[0].get_file_info(s).mtime for s in rows.shard}

    _, again = refresh_pseudo_labels(cfg, said.append)  # the same champion: nothing is relabelled
    assert again == first and "up to date" in said[-1]
    assert {s: storage.resolve(s)[0].get_file_info(s).mtime for s in written} == written
    assert table.latest_version(pseudo_dir(cfg)) == labels_version  # no commit

    client.set_registered_model_alias(cfg.mlflow.registered_model, "champion", versions[1])
    _, second = refresh_pseudo_labels(cfg, said.append)  # a new champion: everything relabelled
    new_rows, info = read_pseudo_manifest(pseudo_dir(cfg))
    assert second != first and info["teacher"] == f"models:/{cfg.mlflow.registered_model}/{versions[1]}"
    assert not set(new_rows.shard) & set(rows.shard) and set(table.files(pseudo_dir(cfg))[0].shard) == set(new_rows.shard)
    assert table.latest_version(pseudo_dir(cfg)) == labels_version + 1
    assert set(new_rows.teacher_run_id) == {client.get_model_version(cfg.mlflow.registered_model, versions[1]).run_id}


def test_a_teacher_retrained_into_the_same_folder_relabels(trained, tmp_path):
    """The teacher is named by its weights: the same folder (or alias) with new weights is a new teacher."""
    import shutil

    from semisep.evaluation.pseudo_labels import label_mixtures, weights_digest
    from semisep.pipeline.pseudo_store import read_pseudo_manifest
    from semisep.training.checkpoint import MODEL_WEIGHTS

    base, results = trained
    cfg = Config.from_dict(base.to_dict())
    cfg.pseudo.repet_weights = [0.0]
    folder = tmp_path / "teacher"
    shutil.copytree(results["supervised"].model_dir, folder)
    said = []
    first = label_mixtures(cfg, str(folder), str(folder), "", str(tmp_path / "pseudo"), say=said.append)
    rows, info = read_pseudo_manifest(str(tmp_path / "pseudo"))
    assert info["teacher"] == str(folder) and info["teacher_weights"] == weights_digest(str(folder))
    old = _decode(rows.sort_values("source_shard").shard.iloc[0], "vocals", cfg)
    again = label_mixtures(cfg, str(folder), str(folder), "", str(tmp_path / "pseudo"), say=said.append)
    assert again.version == first.version and again.labelled == 0 and "up to date" in said[-1]
    # retrained in place: the other model's weights under the same name
    shutil.copy(f"{results['semi-supervised'].model_dir}/{MODEL_WEIGHTS}", folder / MODEL_WEIGHTS)
    third = label_mixtures(cfg, str(folder), str(folder), "", str(tmp_path / "pseudo"), say=said.append)
    new_rows, new_info = read_pseudo_manifest(str(tmp_path / "pseudo"))
    assert "up to date" not in said[-1] and third.labelled == len(rows) and third.version != first.version
    assert new_info["teacher"] == str(folder) and new_info["teacher_weights"] != info["teacher_weights"]
    assert not set(new_rows.shard) & set(rows.shard)
    new = _decode(new_rows.sort_values("source_shard").shard.iloc[0], "vocals", cfg)
    assert old.shape != new.shape or np.abs(old - new).max() > 1e-3  # other labels
