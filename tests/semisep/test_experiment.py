"""`semisep experiment`: its arms, and end to end on tiny generated data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from semisep.pipeline.errors import SemisepError
from semisep.experiment import arms, rounds, student_model
from tests.conftest import tiny_config


def test_arms_pair_every_seed_and_refuse_a_baseline_only_experiment(tmp_path):
    cfg = tiny_config(tmp_path, tmp_path, **{"experiment.seeds": "[4, 5]", "experiment.remix": 0.25,
                                             "experiment.pseudo": 0.125, "train.alpha": 0.001, "train.beta": 0.001})
    got = [(a["label"], a["alpha"], a["remix"], a["pseudo"], a["seed"], a.get("teacher")) for a in arms(cfg)]
    alpha, pseudo = cfg.train.alpha, cfg.experiment.pseudo
    assert got == [("supervised-seed4", 0.0, 0.0, 0.0, 4, None), ("supervised+remix-seed4", 0.0, 0.25, 0.0, 4, None),
                   ("semi-supervised-seed4", alpha, 0.0, 0.0, 4, None),
                   ("semi-supervised+remix-seed4", alpha, 0.25, 0.0, 4, None),
                   ("self-training+remix-seed4", 0.0, 0.125, pseudo, 4, "supervised+remix-seed4"),
                   ("supervised-seed5", 0.0, 0.0, 0.0, 5, None), ("supervised+remix-seed5", 0.0, 0.25, 0.0, 5, None),
                   ("semi-supervised-seed5", alpha, 0.0, 0.0, 5, None),
                   ("semi-supervised+remix-seed5", alpha, 0.25, 0.0, 5, None),
                   ("self-training+remix-seed5", 0.0, 0.125, pseudo, 5, "supervised+remix-seed5")]
    # students train after their teachers; with two rounds the first round's students teach the second's
    phases = rounds(cfg, arms(cfg))
    assert [len(p) for p in phases] == [8, 2] and all(p["teacher"].startswith("supervised+remix") for p in phases[1])
    cfg.pseudo.rounds = 2
    phases = rounds(cfg, arms(cfg))
    assert [[p["label"] for p in phase] for phase in phases[1:]] == [
        ["self-training+remix-round1-seed4", "self-training+remix-round1-seed5"],
        ["self-training+remix-seed4", "self-training+remix-seed5"]]
    assert [p["teacher"] for p in phases[2]] == ["self-training+remix-round1-seed4", "self-training+remix-round1-seed5"]
    # a student of its own size and dropout changes only those model settings; by default none
    assert student_model(cfg) == {}
    cfg.pseudo.student_channels, cfg.pseudo.student_dropout = 16, 0.1
    assert student_model(cfg) == {"model": {"base_channels": 16, "dropout": 0.1}}
    cfg.experiment.arms = ["supervised", "self-training+remix"]
    with pytest.raises(SemisepError, match="learns from 'supervised\\+remix'"):
        arms(cfg)
    cfg.experiment.arms = ["supervised+remix", "semi-supervised"]
    with pytest.raises(SemisepError, match="'supervised' among them"):
        arms(cfg)
    cfg.experiment.arms = ["supervised", "semi-supervised"]
    cfg.train.alpha = cfg.train.beta = 0.0
    with pytest.raises(SemisepError, match="both 0"):
        arms(cfg)


@pytest.mark.slow
def test_cli_experiment_end_to_end(tmp_path, ray_session, capsys):
    from mlflow import MlflowClient

    from semisep.cli import main

    work = tmp_path / "work"
    corpus = work / "demo_corpus"
    cfg = tiny_config(work, corpus)
    corpora = (f"[{{name: paired, path: {corpus}/paired}}, {{name: target, path: {corpus}/target}},"
               f" {{name: in_domain, path: {corpus}/in_domain}},"
               f" {{name: unpaired, path: {corpus}/unpaired, format: folder, use: unpaired}}]")
    sets = "[{name: out-of-domain, corpus: target}, {name: in-domain, corpus: in_domain, split: test}]"
    overrides = [f"data.workdir={work}", f"data.corpora={corpora}", "data.excerpt_frames=32", "data.excerpt_hop=16",
                 "model.base_channels=4", "model.critic_channels=4", "model.critic_layers=3", "train.batch_size=4",
                 "train.max_steps=4", "train.val_every=2", "train.log_every=1", "train.lr=0.001", "train.n_critic=2",
                 "train.alpha=0.001", "train.beta=0.001",
                 # the students: labels blended with REPET-SIM and scaled as validation picks, their
                 # stems remixed, fine-tuned from the teacher
                 "pseudo.repet_weights=[0, 0.5]", "pseudo.vocal_scales=[1, 0.5]", "train.pseudo_remix=true",
                 "pseudo.student=teacher",
                 "pseudo.student_dropout=0.2",
                 "experiment.seeds=[0, 1]", "experiment.generate_demo=true", f"experiment.test_sets={sets}",
                 "demo.track_seconds=4", "demo.paired_train=2", "demo.unpaired_per_role=2", "demo.valid=1",
                 "demo.test=3", "demo.test_in_domain=3", "mlflow.experiment=exp-test", "eval.corpus=target"]
    args = ["experiment"] + [a for o in overrides for a in ("--set", o)]
    assert main(args) == 0
    out = capsys.readouterr().out
    for noise in ("Configuration for experiment", "View detailed results here", "tensorboard --logdir"):
        assert noise not in out  # Ray Tune's tables stay off the console; semisep's lines stay on it
    assert out.count("best validation vocal SDR") == 10  # one progress line per training
    assert out.count("pseudo-labels for self-training+remix") == 2  # by each seed's supervised+remix model
    assert out.count("teacher's mask blended with REPET-SIM's and scaled, validation vocal SDR by weight and "
                     "scale: 0 x1: ") == 2
    for column in ("vocals median", "vocals mean", "accompaniment median", "accompaniment mean", "per-seed differences",
                   "mean difference", "95% CI", "Wilcoxon p", "Chosen on validation:", "Spearman"):
        assert column in out
    methods = ["supervised", "supervised+remix", "semi-supervised", "semi-supervised+remix", "self-training+remix",
               "oracle_irm", "repet_sim", "mixture"]
    for test_set in ("out-of-domain", "in-domain"):
        for method in methods:
            assert any(line.startswith(f"| {test_set} | {method} |") for line in out.splitlines()), (test_set, method)
    differences = [line for line in out.splitlines() if line.startswith("| out-of-domain | vocals |")]
    assert [line.split("|")[3].strip() for line in differences] == [
        "supervised+remix - supervised", "semi-supervised - supervised", "semi-supervised+remix - supervised",
        "self-training+remix - supervised", "semi-supervised - supervised+remix",
        "semi-supervised+remix - supervised+remix", "self-training+remix - supervised+remix"]
    assert all(len(line.split("|")[4].split(",")) == 2 for line in differences)  # one difference per seed

    result_dir = work / "experiment" / "experiment"
    scores = pd.read_csv(result_dir / "scores.csv")
    learned = scores[~scores.method.isin(["oracle_irm", "repet_sim", "mixture"])]
    assert set(scores.test_set) == {"out-of-domain", "in-domain"} and set(learned.seed) == {0, 1}
    assert learned.groupby(["test_set", "method", "seed", "target"]).track.nunique().eq(3).all()
    assert np.isfinite(scores.sdr).all()
    validation = pd.read_csv(result_dir / "validation.csv")
    assert len(validation) == 10 and np.isfinite(validation.val_sdr).all()
    # the choice pairs every model's figure on each validation song; the mean over songs is training's
    per_song = pd.read_csv(result_dir / "validation_per_song.csv")
    assert len(per_song) == 10 * per_song.track.nunique() and per_song.track.nunique() >= 1
    means = per_song.groupby(["arm", "seed"]).val_sdr.mean()
    for _, r in validation.iterrows():
        assert means[(r.arm, r.seed)] == pytest.approx(r.val_sdr, abs=1e-3), (r.arm, r.seed)
    assert "Rule: the simpler arm, supervised+remix" in out
    # learning curves and the report: one line per arm, every arm's last-quarter gain
    curves = pd.read_csv(result_dir / "curves.csv")
    assert len(curves) == 10 and set(curves.arm) == set(methods[:5]) and (curves.steps == 4).all()
    assert (result_dir / "learning_curves.png").stat().st_size > 5000
    assert "| still rising |" in out or "| flat |" in out
    page = (result_dir / "report.html").read_text()
    assert page.count("<img") == 3 and page.count("data:audio/ogg;base64,") >= 2 * (3 + 2 * 6)
    for png in ("improvement.png", "vocals_per_track.png"):
        assert (result_dir / png).stat().st_size > 10_000

    client = MlflowClient(cfg.tracking_uri)
    exp = client.get_experiment_by_name("exp-test")
    parent = client.search_runs([exp.experiment_id], "tags.`semisep.kind` = 'experiment'")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert "out-of-domain_vocals_supervised_remix_vs_supervised_mean" in parent[0].data.metrics
    assert parent[0].data.tags["semisep.chosen_on_validation"] in methods
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent[0].info.run_id}'")
    names = sorted(r.info.run_name for r in children)
    assert names == sorted(f"experiment-{m}-seed{s}" for m in methods[:5] for s in (0, 1))
    assert all("test_in-domain_vocals_SDR_median" in r.data.metrics for r in children)
    # the baseline trained without critics or remix, the others with theirs
    kinds = {r.info.run_name: r.data.tags["semisep.kind"] for r in children}
    assert kinds["experiment-supervised-seed0"] == "supervised"
    assert kinds["experiment-supervised+remix-seed1"] == "supervised+remix"
    assert kinds["experiment-semi-supervised+remix-seed1"] == "semi-supervised+remix"
    assert kinds["experiment-self-training+remix-seed0"] == "self-training+remix"
    # the student names its teacher: the same seed's supervised+remix model, and its label set
    runs = {r.info.run_name: r for r in children}
    student = runs["experiment-self-training+remix-seed1"]
    assert student.data.tags["semisep.teacher"] == runs["experiment-supervised+remix-seed1"].data.tags["semisep.model_uri"]
    inputs = {d.dataset.name: d.dataset for d in client.get_run(student.info.run_id).inputs.dataset_inputs}
    assert inputs["semisep-pseudo-labels"].digest == student.data.tags["semisep.pseudo_version"]
    # it fine-tuned its teacher (a copy of the teacher's model beside the labels) on remixed labels
    params = student.data.params
    assert params["train.init_model"] == str((result_dir / "teachers" / "supervised+remix-seed1").resolve())
    assert (result_dir / "teachers" / "supervised+remix-seed1" / "model.json").is_file()
    assert params["train.pseudo_remix"] == "True" and runs["experiment-supervised+remix-seed1"].data.params["train.init_model"] == ""
    # with dropout of its own (pseudo.student_dropout), the other arms without
    assert params["model.dropout"] == "0.2" and runs["experiment-supervised+remix-seed1"].data.params["model.dropout"] == "0.0"
    from semisep.pipeline.pseudo_store import read_pseudo_manifest

    rows, info = read_pseudo_manifest(params["train.pseudo_labels"])
    assert set(rows.repet) == {float(info["repet"])} and float(info["repet"]) in (0.0, 0.5)
    assert sorted(json.loads(info["repet_sdr"])) == ["0 x0.5", "0 x1", "0.5 x0.5", "0.5 x1"]
    assert set(rows.scale) == {float(info["scale"])} and float(info["scale"]) in (1.0, 0.5)
