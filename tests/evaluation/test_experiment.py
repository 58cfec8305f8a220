"""`semisep experiment` end to end on tiny generated data, and its statistics by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from evaluation.experiment import arms, improvement_stats
from pipeline.errors import SemisepError
from tests.conftest import tiny_config


def _scores(diffs: np.ndarray) -> pd.DataFrame:
    """Scores whose semi - sup differences are ``diffs`` (tracks, seeds)."""
    rows = []
    for i, track in enumerate(diffs):
        for seed, d in enumerate(track):
            rows.append({"test_set": "t", "track": f"tr{i}", "target": "vocals", "method": "supervised", "seed": seed,
                         "sdr": float(i)})
            rows.append({"test_set": "t", "track": f"tr{i}", "target": "vocals", "method": "semi-supervised",
                         "seed": seed, "sdr": float(i + d)})
    return pd.DataFrame(rows)


def test_improvement_stats_match_hand_computation():
    diffs = np.array([[1.0, 2.0, 0.0], [0.5, 0.5, 0.5], [3.0, 1.0, 2.0], [0.5, 1.0, 1.5], [2.0, 2.5, 3.0]])
    r = improvement_stats(_scores(diffs)).iloc[0]
    per_track = diffs.mean(axis=1)
    assert r.tracks == 5 and r.seeds == 3
    np.testing.assert_allclose(r.per_seed, diffs.mean(axis=0), atol=1e-3)
    assert r["mean"] == pytest.approx(per_track.mean())
    half = stats.t.ppf(0.975, 4) * per_track.std(ddof=1) / np.sqrt(5)
    assert (r.ci_low, r.ci_high) == pytest.approx((per_track.mean() - half, per_track.mean() + half))
    assert r.p_value == pytest.approx(stats.wilcoxon(per_track).pvalue)
    assert r.ci_low > 0  # every track improved on average: the interval excludes 0


def test_no_difference_gives_p_one_and_a_zero_interval():
    r = improvement_stats(_scores(np.zeros((4, 2)))).iloc[0]
    assert r["mean"] == 0 and r.ci_low == 0 and r.ci_high == 0 and r.p_value == 1.0


def test_arms_pair_every_seed_and_refuse_a_baseline_only_experiment(tmp_path):
    cfg = tiny_config(tmp_path, tmp_path, **{"experiment.seeds": "[4, 5]"})
    labels = [(a["label"], a["alpha"], a["seed"]) for a in arms(cfg)]
    assert labels == [("supervised-seed4", 0.0, 4), ("semi-supervised-seed4", cfg.train.alpha, 4),
                      ("supervised-seed5", 0.0, 5), ("semi-supervised-seed5", cfg.train.alpha, 5)]
    cfg.train.alpha = cfg.train.beta = 0.0
    with pytest.raises(SemisepError, match="both 0"):
        arms(cfg)


@pytest.mark.slow
def test_cli_experiment_end_to_end(tmp_path, ray_session, capsys):
    from mlflow import MlflowClient

    from pipeline.cli import main

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
                 "experiment.seeds=[0, 1]", "experiment.generate_demo=true", f"experiment.test_sets={sets}",
                 "demo.track_seconds=4", "demo.paired_train=2", "demo.unpaired_per_role=2", "demo.valid=1",
                 "demo.test=3", "demo.test_in_domain=3", "mlflow.experiment=exp-test", "eval.corpus=target"]
    args = ["experiment"] + [a for o in overrides for a in ("--set", o)]
    assert main(args) == 0
    out = capsys.readouterr().out
    for column in ("vocals median", "vocals mean", "accompaniment median", "accompaniment mean", "per-seed differences",
                   "mean improvement", "95% CI", "Wilcoxon p"):
        assert column in out
    rows = [line for line in out.splitlines() if line.startswith("| out-of-domain |") or line.startswith("| in-domain |")]
    assert len(rows) == 2 * 2 + 2 * 2  # 2 methods and 2 targets per test set
    per_seed = [r for r in rows if "vocals |" in r and "[" in r]
    assert all(len(r.split("|")[3].split(",")) == 2 for r in per_seed)  # one difference per seed

    result_dir = work / "experiment" / "experiment"
    scores = pd.read_csv(result_dir / "scores.csv")
    assert set(scores.test_set) == {"out-of-domain", "in-domain"} and set(scores.seed) == {0, 1}
    assert scores.groupby(["test_set", "method", "seed", "target"]).track.nunique().eq(3).all()
    assert np.isfinite(scores.sdr).all()
    for png in ("improvement.png", "vocals_per_track.png"):
        assert (result_dir / png).stat().st_size > 10_000

    client = MlflowClient(cfg.tracking_uri)
    exp = client.get_experiment_by_name("exp-test")
    parent = client.search_runs([exp.experiment_id], "tags.`semisep.kind` = 'experiment'")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert "out-of-domain_vocals_sdr_improvement_mean" in parent[0].data.metrics
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent[0].info.run_id}'")
    names = sorted(r.info.run_name for r in children)
    assert names == ["experiment-semi-supervised-seed0", "experiment-semi-supervised-seed1",
                     "experiment-supervised-seed0", "experiment-supervised-seed1"]
    assert all("test_in-domain_vocals_SDR_median" in r.data.metrics for r in children)
    # the baseline trained without critics, the semi-supervised runs with them
    kinds = {r.info.run_name: r.data.tags["semisep.kind"] for r in children}
    assert kinds["experiment-supervised-seed0"] == "supervised" and kinds["experiment-semi-supervised-seed1"] == "semi-supervised"
