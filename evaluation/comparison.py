"""Comparing separators over seeds and tracks: differences with 95% intervals, paired tests, tables, plots.

The statistics of ``semisep experiment`` (semisep/experiment.py), usable on any score table with
one row per (test_set, track, target, method, seed) and an ``sdr`` column:

- per method: the per-track median over 1 s frames (museval), averaged over seeds, then the
  median and mean over tracks (the SiSEC way, with seeds folded in);
- per comparison (an arm against another): the per-seed differences (mean over tracks), the mean
  difference over tracks (per-track differences averaged over seeds) with a 95% t-interval over
  tracks, and a two-sided Wilcoxon signed-rank test over tracks. Tracks are the unit of the
  interval and the test (they are the sample of music); the per-seed differences show how much
  training noise sits on top;
- how well validation figures rank the models against their test SDR (Spearman's rho).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ARMS = ("supervised", "supervised+remix", "semi-supervised", "semi-supervised+remix", "self-training+remix")
BASELINE = "supervised"
REMIX = "supervised+remix"  # the strong baseline: what unpaired solo recordings give without any new method
TARGETS = ("vocals", "accompaniment")
REFERENCE_ROWS = ("oracle_irm", "repet_sim", "mixture")


def comparisons(methods: list[str]) -> list[tuple[str, str]]:
    """(arm, against): every arm against the baseline, then every other arm against supervised+remix
    (what a method adds on top of remixing the solo recordings)."""
    pairs = [(m, BASELINE) for m in methods if m != BASELINE]
    if REMIX in methods:
        pairs += [(m, REMIX) for m in methods if m not in (BASELINE, REMIX)]
    return pairs


def _interval(diff: pd.DataFrame) -> dict:
    """diff: (tracks, seeds) differences -> per-seed means, mean over tracks, 95% t-interval, Wilcoxon p."""
    from scipy import stats

    diff = diff.dropna(axis=0, how="any")
    per_seed, per_track = diff.mean(axis=0), diff.mean(axis=1)
    n = len(per_track)
    mean = float(per_track.mean()) if n else float("nan")
    if n >= 2:
        half = float(stats.t.ppf(0.975, n - 1) * per_track.std(ddof=1) / np.sqrt(n))
        p = 1.0 if np.allclose(per_track, 0) else float(stats.wilcoxon(per_track.values).pvalue)
    else:
        half, p = float("nan"), float("nan")
    return {"tracks": n, "seeds": len(per_seed), "per_seed": [round(float(v), 3) for v in per_seed.values],
            "mean": mean, "ci_low": mean - half, "ci_high": mean + half, "p_value": p}


def improvement_stats(scores: pd.DataFrame, pairs: list[tuple[str, str]] | None = None) -> pd.DataFrame:
    """Per test set, target and comparison (arm, against): per-seed differences, mean over tracks,
    95% CI, Wilcoxon p. ``scores`` has one row per (test_set, track, target, method, seed), column ``sdr``."""
    learned = scores[~scores.method.isin(REFERENCE_ROWS)]
    methods = list(dict.fromkeys(learned.method))
    pairs = pairs if pairs is not None else comparisons(methods)
    rows = []
    order = {t: i for i, t in enumerate(TARGETS)} | {s: i for i, s in enumerate(learned.test_set.unique())}
    learned = learned.sort_values(["test_set", "target"], key=lambda col: col.map(order), kind="stable")
    for (test_set, target), g in learned.groupby(["test_set", "target"], sort=False):
        wide = g.pivot_table(index="track", columns=["method", "seed"], values="sdr")
        for arm, against in pairs:
            rows.append({"test_set": test_set, "target": target, "comparison": f"{arm} - {against}",
                         **_interval(wide[arm] - wide[against])})
    return pd.DataFrame(rows)


NOISE_RULE = ("the simpler arm, supervised+remix, unless another beats it on the validation songs with a 95% "
              "t-interval of the paired differences over seeds x songs above 0 (then the one with the largest mean "
              "difference), and never an arm that costs more than {cost:g} dB on the paired domain's held-out songs")


def choose_arm(per_song: pd.DataFrame, default: str = REMIX, paired_domain: pd.DataFrame | None = None,
               max_cost_db: float = 0.2) -> tuple[str, pd.DataFrame]:
    """The arm to use, chosen on validation in a way that survives noise (``NOISE_RULE``).

    per_song: one row per (arm, seed, track) with ``val_sdr``, each model's vocal SDR on each
    validation song; paired_domain: the same on held-out songs of the paired songs' own domain,
    when such a split exists. Returns (chosen arm, per other arm: its mean difference to
    ``default``, the 95% interval, the pairs, the paired-domain difference and the verdict).
    The highest mean over a handful of songs is a noisy rule: on a fresh corpus it once picked an
    arm 0.46 dB ahead on validation that was worse than the default on both test sets."""
    from scipy import stats

    if default not in set(per_song.arm):
        best = per_song.groupby("arm", sort=False).val_sdr.mean().idxmax()
        return str(best), pd.DataFrame()

    def paired(frame: pd.DataFrame, arm: str) -> pd.Series:
        wide = frame.pivot_table(index=["seed", "track"], columns="arm", values="val_sdr")
        return (wide[arm] - wide[default]).dropna()

    rows = []
    for arm in dict.fromkeys(per_song.arm):
        if arm == default:
            continue
        diff = paired(per_song, arm)
        n = len(diff)
        mean = float(diff.mean()) if n else float("nan")
        half = float(stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / np.sqrt(n)) if n >= 2 else float("nan")
        cost = float(paired(paired_domain, arm).mean()) if paired_domain is not None and arm in set(paired_domain.arm) \
            else float("nan")
        wins = n >= 2 and mean - half > 0
        refused = np.isfinite(cost) and cost < -max_cost_db
        verdict = ("refused: costs the paired domain" if wins and refused else
                   "beats the default" if wins else "not above the noise")
        rows.append({"arm": arm, "against": default, "mean": mean, "ci_low": mean - half, "ci_high": mean + half,
                     "pairs": n, "paired_domain": cost, "verdict": verdict})
    table = pd.DataFrame(rows)
    winners = table[table.verdict == "beats the default"] if len(table) else table
    chosen = str(winners.sort_values("mean", ascending=False).arm.iloc[0]) if len(winners) else default
    return chosen, table


def choice_markdown(chosen: str, table: pd.DataFrame, max_cost_db: float = 0.2) -> str:
    """The choice, its rule and the figures that applied it."""
    lines = ["", f"Chosen on validation: **{chosen}**. Rule: {NOISE_RULE.format(cost=max_cost_db)}."]
    if len(table):
        lines += ["", "| arm | against | mean difference (dB) | 95% CI over seeds x songs | pairs | paired domain | verdict |",
                  "|---|---|---:|---|---:|---:|---|"]
        for _, r in table.iterrows():
            cost = f"{r.paired_domain:+.2f}" if np.isfinite(r.paired_domain) else "no split"
            lines.append(f"| {r.arm} | {r.against} | {r['mean']:+.2f} | [{r.ci_low:+.2f}, {r.ci_high:+.2f}] | {r.pairs} "
                         f"| {cost} | {r.verdict} |")
    return "\n".join(lines) + "\n"


def method_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Per test set, method and target: median and mean over tracks of the seed-averaged SDR."""
    per_track = scores.groupby(["test_set", "method", "target", "track"], sort=False)["sdr"].mean().reset_index()
    g = per_track.groupby(["test_set", "method", "target"], sort=False)["sdr"]
    return pd.DataFrame({"median": g.median(), "mean": g.mean(), "tracks": g.count()}).reset_index()


def ranking(validation: pd.DataFrame, scores: pd.DataFrame, test_set: str) -> dict[str, float]:
    """Spearman's rho between each validation figure and the models' mean test vocal SDR."""
    from scipy import stats

    test = scores[(scores.test_set == test_set) & (scores.target == "vocals") & ~scores.method.isin(REFERENCE_ROWS)]
    per_model = test.groupby(["method", "seed"])["sdr"].mean().rename("test_sdr").reset_index()
    both = validation.merge(per_model, left_on=["arm", "seed"], right_on=["method", "seed"])
    if len(both) < 3:
        return {}
    return {"val_sdr": float(stats.spearmanr(both.val_sdr, both.test_sdr).statistic),
            "val_loss": float(stats.spearmanr(-both.val_loss, both.test_sdr).statistic), "models": len(both)}


def markdown(scores: pd.DataFrame, improvements: pd.DataFrame, validation: pd.DataFrame | None = None) -> str:
    summary = method_summary(scores).set_index(["test_set", "method", "target"])
    seeds = scores[~scores.method.isin(REFERENCE_ROWS)].seed.nunique()
    methods = list(dict.fromkeys(scores.method))
    lines = [f"SDR (dB, BSS Eval v4): per-track median over 1 s frames, averaged over {seeds} seeds; "
             "median and mean over tracks. oracle_irm, repet_sim and mixture are references (no training).", "",
             "| test set | method | vocals median | vocals mean | accompaniment median | accompaniment mean | tracks |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for test_set in scores.test_set.unique():
        for method in methods:
            cells, tracks = [], 0
            for target in TARGETS:
                key = (test_set, method, target)
                if key in summary.index:
                    row = summary.loc[key]
                    cells += [f"{row['median']:.2f}", f"{row['mean']:.2f}"]
                    tracks = max(tracks, int(row["tracks"]))
                else:
                    cells += ["-", "-"]
            if tracks:
                lines.append(f"| {test_set} | {method} | {' | '.join(cells)} | {tracks} |")
    lines += ["", "Differences (dB): per-seed differences (mean over tracks), mean over tracks with a 95% t-interval, "
              "two-sided Wilcoxon signed-rank test over tracks.", "",
              "| test set | target | comparison | per-seed differences | mean difference | 95% CI | Wilcoxon p | tracks |",
              "|---|---|---|---|---:|---|---:|---:|"]
    for _, r in improvements.iterrows():
        per_seed = ", ".join(f"{v:+.2f}" for v in r.per_seed)
        lines.append(f"| {r.test_set} | {r.target} | {r.comparison} | {per_seed} | {r['mean']:+.2f} "
                     f"| [{r.ci_low:+.2f}, {r.ci_high:+.2f}] | {r.p_value:.3g} | {r.tracks} |")
    if validation is not None and len(validation):
        lines += ["", "Validation (what chooses; test sets are only reported): each model's validation vocal SDR "
                  "(signal SDR, dB) and loss at its best step, mean over seeds.", "",
                  "| arm | validation vocal SDR | per seed | validation loss | best step |", "|---|---:|---|---:|---:|"]
        by_arm = validation.groupby("arm", sort=False)
        for arm, g in by_arm:
            seeds_sdr = ", ".join(f"{v:.2f}" for v in g.val_sdr)
            lines.append(f"| {arm} | {g.val_sdr.mean():.2f} | {seeds_sdr} | {g.val_loss.mean():.4f} "
                         f"| {g.best_step.mean():.0f} |")
        winner = by_arm.val_sdr.mean().idxmax()
        lines += ["", f"Highest mean validation vocal SDR: {winner} (what chooses is the rule below)."]
        first = scores.test_set.unique()[0]
        rho = ranking(validation, scores, first)
        if rho:
            lines.append(f"Ranking of the {rho['models']} models against their mean {first} vocal SDR (Spearman's rho): "
                         f"validation SDR {rho['val_sdr']:+.2f}, validation loss {rho['val_loss']:+.2f} "
                         "(loss negated: +1 means lower loss, higher test SDR).")
    return "\n".join(lines) + "\n"


def plot(scores: pd.DataFrame, improvements: pd.DataFrame, out: Path) -> list[Path]:
    """improvement.png (mean difference, CI, per-seed marks per comparison) and vocals_per_track.png
    (every arm against the baseline, per track)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(scores.test_set.unique())
    pairs = list(dict.fromkeys(improvements.comparison))
    fig, axes = plt.subplots(1, len(TARGETS), figsize=(3 + 1.3 * len(pairs) * len(sets), 5), squeeze=False, sharey=True)
    for ax, target in zip(axes[0], TARGETS):
        ticks, labels = [], []
        for k, test_set in enumerate(sets):
            rows = improvements[(improvements.target == target) & (improvements.test_set == test_set)].set_index("comparison")
            rows = rows.loc[[p for p in pairs if p in rows.index]]
            x = np.arange(len(rows)) + k * (len(pairs) + 1)
            err = np.vstack([rows["mean"] - rows.ci_low, rows.ci_high - rows["mean"]])
            ax.errorbar(x, rows["mean"], yerr=err, fmt="o", capsize=4, markersize=7, color=f"C{k}", label=test_set)
            for xi, seeds in zip(x, rows.per_seed):
                ax.scatter([xi + 0.15] * len(seeds), seeds, s=12, color=f"C{k}", alpha=0.5, marker="x")
            ticks += list(x)
            labels += [name.replace(" - ", "\n- ") for name in rows.index]
        ax.axhline(0, color="gray", linestyle="--", linewidth=1)
        ax.set_xticks(ticks, labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{target}")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("SDR difference (dB), mean over tracks, 95% CI")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Does unpaired audio help? (x: per-seed differences)")
    fig.tight_layout()
    paths = [out / "improvement.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    vocals = scores[(scores.target == "vocals") & ~scores.method.isin(REFERENCE_ROWS)]
    per_track = vocals.groupby(["test_set", "track", "method"])["sdr"].mean().unstack("method").reset_index()
    others = [m for m in dict.fromkeys(vocals.method) if m != BASELINE]
    fig, axes = plt.subplots(1, len(sets), figsize=(4.6 * len(sets), 4.4), squeeze=False)
    for ax, test_set in zip(axes[0], sets):
        sel = per_track[per_track.test_set == test_set]
        for k, method in enumerate(others):
            ax.scatter(sel[BASELINE], sel[method], label=method, color=f"C{k + 1}", s=18)
        values = sel[[BASELINE, *others]].values
        lo, hi = float(np.nanmin(values)) - 1, float(np.nanmax(values)) + 1
        ax.plot([lo, hi], [lo, hi], color="gray", linestyle="--", linewidth=1)
        ax.set_xlabel(f"{BASELINE} vocals SDR (dB)")
        ax.set_ylabel("vocals SDR (dB)")
        ax.set_title(test_set)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("vocals SDR per track, averaged over seeds (above the line: better than supervised)", fontsize=10)
    fig.tight_layout()
    paths.append(out / "vocals_per_track.png")
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths
