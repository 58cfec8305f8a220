"""The experiment's statistics by hand: differences, intervals, paired tests, rankings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from semisep.evaluation.comparison import comparisons, improvement_stats, markdown, ranking


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


def test_comparisons_put_every_arm_against_the_baseline_then_against_remix():
    arms = ["supervised", "supervised+remix", "semi-supervised", "semi-supervised+remix", "self-training+remix"]
    assert comparisons(arms) == [("supervised+remix", "supervised"), ("semi-supervised", "supervised"),
                                 ("semi-supervised+remix", "supervised"), ("self-training+remix", "supervised"),
                                 ("semi-supervised", "supervised+remix"), ("semi-supervised+remix", "supervised+remix"),
                                 ("self-training+remix", "supervised+remix")]
    assert comparisons(["supervised", "semi-supervised"]) == [("semi-supervised", "supervised")]


def test_ranking_and_the_validation_table_name_the_arm_that_wins_on_validation():
    scores = _scores(np.array([[1.0, 2.0], [0.5, 0.5], [3.0, 1.0]]))
    validation = pd.DataFrame([{"arm": "supervised", "seed": 0, "val_sdr": 1.0, "val_loss": 0.3, "best_step": 10},
                               {"arm": "supervised", "seed": 1, "val_sdr": 1.2, "val_loss": 0.2, "best_step": 20},
                               {"arm": "semi-supervised", "seed": 0, "val_sdr": 2.0, "val_loss": 0.25, "best_step": 30},
                               {"arm": "semi-supervised", "seed": 1, "val_sdr": 1.9, "val_loss": 0.1, "best_step": 40}])
    rho = ranking(validation, scores, "t")
    # test SDR per model: semi seeds (mean over tracks) 2.5, 2.17; sup seeds 1, 1
    assert rho["models"] == 4 and rho["val_sdr"] > 0.5
    text = markdown(scores, improvement_stats(scores), validation)
    assert "Highest mean validation vocal SDR: semi-supervised" in text
    assert "| semi-supervised | 1.95 | 2.00, 1.90 |" in text


def _per_song(diffs: dict[str, list[float]], base: float = 2.0) -> pd.DataFrame:
    """Validation SDR per (arm, seed, song): supervised+remix at ``base``, each arm ``base`` + its
    differences (2 seeds x 3 songs, in that order)."""
    rows = []
    for arm, values in {"supervised+remix": [0.0] * 6, **diffs}.items():
        for i, d in enumerate(values):
            rows.append({"arm": arm, "seed": i // 3, "track": f"song{i % 3}", "val_sdr": base + d})
    return pd.DataFrame(rows)


def test_the_choice_keeps_the_simpler_arm_unless_another_wins_beyond_the_noise():
    from semisep.evaluation.comparison import choice_markdown, choose_arm

    # a higher mean (+0.46) made of one lucky song: the interval spans 0, the default stays
    noisy = _per_song({"self-training+remix": [2.5, -0.2, -0.1, 0.6, -0.3, 0.26], "supervised": [-2.0] * 6})
    chosen, table = choose_arm(noisy)
    assert noisy.groupby("arm").val_sdr.mean().idxmax() == "self-training+remix"
    assert chosen == "supervised+remix"
    row = table.set_index("arm").loc["self-training+remix"]
    assert row["mean"] == pytest.approx(0.46) and row.ci_low < 0 < row.ci_high and row.pairs == 6
    assert row.verdict == "not above the noise"
    # a steady gain wins; of two winners, the larger mean
    steady = _per_song({"self-training+remix": [0.4, 0.5, 0.3, 0.45, 0.35, 0.5],
                        "semi-supervised+remix": [0.2, 0.25, 0.15, 0.2, 0.3, 0.2]})
    assert choose_arm(steady)[0] == "self-training+remix"
    # ... unless it costs the paired domain more than 0.2 dB there: the next winner
    paired = _per_song({"self-training+remix": [-0.5] * 6, "semi-supervised+remix": [-0.1] * 6})
    chosen, table = choose_arm(steady, paired_domain=paired)
    assert chosen == "semi-supervised+remix"
    assert table.set_index("arm").loc["self-training+remix"].verdict == "refused: costs the paired domain"
    text = choice_markdown(chosen, table)
    assert "Chosen on validation: **semi-supervised+remix**" in text and "| self-training+remix | supervised+remix |" in text
    assert "-0.50" in text and "no split" not in text
