"""``semisep experiment``: does unpaired audio help? The paper's comparison, with seeds and statistics.

For each seed the supervised baseline (alpha = beta = 0, no critics) and the semi-supervised model
(the train section's alpha, beta, n_critic) are trained as Ray Tune trials of one device each
(training/trial.py: the step, validation and early stopping of ``semisep train``), with the same
architecture, initial weights, paired data order, step budget and patience. Every model is scored
with museval on every test set. Per test set and target:

- SDR of each method: the per-track median over 1 s frames, averaged over seeds, then the median
  and mean over tracks (the SiSEC way, with seeds folded in);
- the per-seed differences (semi-supervised minus supervised, mean over tracks);
- the mean improvement over tracks (per-track differences averaged over seeds) with a 95%
  t-interval over tracks, and a two-sided Wilcoxon signed-rank test over tracks (paired).

Tracks are the unit of the interval and the test (they are the sample of music); the per-seed
differences show how much training noise sits on top. Results: ``results.md`` (two tables),
``scores.csv`` (every track, seed, method, target), ``improvements.csv``, ``improvement.png`` and
``vocals_per_track.png``, all logged to an MLflow parent run whose children are the trainings.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import Config
from pipeline.errors import SemisepError

METHODS = ("supervised", "semi-supervised")
TARGETS = ("vocals", "accompaniment")


@dataclass
class ExperimentResult:
    parent_run_id: str
    scores: pd.DataFrame  # test_set, track, target, method, seed, sdr
    improvements: pd.DataFrame  # test_set, target, tracks, seeds, per_seed, mean, ci_low, ci_high, p_value
    table: str
    out_dir: str


def arms(cfg: Config) -> list[dict]:
    """One Tune grid point per (method, seed): train settings plus a label for the run name."""
    seeds = [int(s) for s in cfg.experiment.seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise SemisepError(f"experiment.seeds={cfg.experiment.seeds}: give one or more distinct seeds")
    if cfg.train.alpha <= 0 and cfg.train.beta <= 0:
        raise SemisepError("train.alpha and train.beta are both 0: the semi-supervised arm would be the baseline")
    out = []
    for seed in seeds:
        out.append({"label": f"supervised-seed{seed}", "seed": seed, "alpha": 0.0, "beta": 0.0})
        out.append({"label": f"semi-supervised-seed{seed}", "seed": seed, "alpha": cfg.train.alpha,
                    "beta": cfg.train.beta})
    return out


def test_sets(cfg: Config) -> list[dict]:
    sets = cfg.experiment.test_sets or [{"name": cfg.eval.corpus, "corpus": cfg.eval.corpus, "split": cfg.eval.split}]
    corpora = {c.name for c in cfg.data.corpora}
    for i, s in enumerate(sets):
        if not isinstance(s, dict) or set(s) - {"name", "corpus", "split"} or "corpus" not in s:
            raise SemisepError(f"experiment.test_sets[{i}]={s!r}: write it as {{name: ..., corpus: ..., split: test}}")
        if s["corpus"] not in corpora:
            raise SemisepError(f"experiment.test_sets[{i}]: corpus {s['corpus']!r} is not in data.corpora")
    return [{"name": s.get("name", s["corpus"]), "corpus": s["corpus"], "split": s.get("split", "test")} for s in sets]


def improvement_stats(scores: pd.DataFrame) -> pd.DataFrame:
    """Per test set and target: per-seed differences, mean over tracks, 95% CI, Wilcoxon p.

    ``scores`` has one row per (test_set, track, target, method, seed) with column ``sdr``.
    """
    from scipy import stats

    rows = []
    # test sets in the order given, vocals before accompaniment
    order = {t: i for i, t in enumerate(TARGETS)} | {s: i for i, s in enumerate(scores.test_set.unique())}
    scores = scores.sort_values(["test_set", "target"], key=lambda col: col.map(order), kind="stable")
    for (test_set, target), g in scores.groupby(["test_set", "target"], sort=False):
        wide = g.pivot_table(index="track", columns=["method", "seed"], values="sdr")
        diff = wide["semi-supervised"] - wide["supervised"]  # (tracks, seeds)
        diff = diff.dropna(axis=0, how="any")
        per_seed = diff.mean(axis=0)
        per_track = diff.mean(axis=1)
        n = len(per_track)
        mean = float(per_track.mean()) if n else float("nan")
        if n >= 2:
            half = float(stats.t.ppf(0.975, n - 1) * per_track.std(ddof=1) / np.sqrt(n))
            p = 1.0 if np.allclose(per_track, 0) else float(stats.wilcoxon(per_track.values).pvalue)
        else:
            half, p = float("nan"), float("nan")
        rows.append({"test_set": test_set, "target": target, "tracks": n, "seeds": len(per_seed),
                     "per_seed": [round(float(v), 3) for v in per_seed.values], "mean": mean,
                     "ci_low": mean - half, "ci_high": mean + half, "p_value": p})
    return pd.DataFrame(rows)


def method_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Per test set, method and target: median and mean over tracks of the seed-averaged SDR."""
    per_track = scores.groupby(["test_set", "method", "target", "track"], sort=False)["sdr"].mean().reset_index()
    g = per_track.groupby(["test_set", "method", "target"], sort=False)["sdr"]
    return pd.DataFrame({"median": g.median(), "mean": g.mean(), "tracks": g.count()}).reset_index()


def markdown(scores: pd.DataFrame, improvements: pd.DataFrame) -> str:
    summary = method_summary(scores).set_index(["test_set", "method", "target"])
    seeds = scores.seed.nunique()
    lines = [f"SDR (dB, BSS Eval v4): per-track median over 1 s frames, averaged over {seeds} seeds; "
             "median and mean over tracks.", "",
             "| test set | method | vocals median | vocals mean | accompaniment median | accompaniment mean | tracks |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for test_set in scores.test_set.unique():
        for method in METHODS:
            v, a = summary.loc[(test_set, method, "vocals")], summary.loc[(test_set, method, "accompaniment")]
            lines.append(f"| {test_set} | {method} | {v['median']:.2f} | {v['mean']:.2f} | {a['median']:.2f} "
                         f"| {a['mean']:.2f} | {int(v['tracks'])} |")
    lines += ["", "Improvement, semi-supervised minus supervised (dB): per-seed differences (mean over tracks), "
              "mean over tracks with a 95% t-interval, two-sided Wilcoxon signed-rank test over tracks.", "",
              "| test set | target | per-seed differences | mean improvement | 95% CI | Wilcoxon p | tracks |",
              "|---|---|---|---:|---|---:|---:|"]
    for _, r in improvements.iterrows():
        per_seed = ", ".join(f"{v:+.2f}" for v in r.per_seed)
        lines.append(f"| {r.test_set} | {r.target} | {per_seed} | {r['mean']:+.2f} | [{r.ci_low:+.2f}, {r.ci_high:+.2f}] "
                     f"| {r.p_value:.3g} | {r.tracks} |")
    return "\n".join(lines) + "\n"


def plot(scores: pd.DataFrame, improvements: pd.DataFrame, out: Path) -> list[Path]:
    """improvement.png (mean improvement, CI, per-seed dots) and vocals_per_track.png (sup vs semi)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(scores.test_set.unique())
    fig, ax = plt.subplots(figsize=(2.2 + 2.2 * len(sets), 4))
    for k, target in enumerate(TARGETS):
        rows = improvements[improvements.target == target].set_index("test_set").loc[sets]
        x = np.arange(len(sets)) + (k - 0.5) * 0.3
        err = np.vstack([rows["mean"] - rows.ci_low, rows.ci_high - rows["mean"]])
        ax.errorbar(x, rows["mean"], yerr=err, fmt="o", capsize=5, markersize=8, label=f"{target}: mean, 95% CI")
        for xi, seeds in zip(x, rows.per_seed):
            ax.scatter([xi + 0.06] * len(seeds), seeds, s=14, color=f"C{k}", alpha=0.5, marker="x")
    ax.axhline(0, color="gray", linestyle="--", linewidth=1)
    ax.set_xticks(np.arange(len(sets)), sets)
    ax.set_ylabel("SDR improvement (dB), semi-supervised - supervised")
    ax.set_title("Does unpaired audio help? (x: per-seed differences)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    paths = [out / "improvement.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    vocals = scores[scores.target == "vocals"]
    per_track = vocals.groupby(["test_set", "track", "method"])["sdr"].mean().unstack("method").reset_index()
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 4), squeeze=False)
    for ax, test_set in zip(axes[0], sets):
        sel = per_track[per_track.test_set == test_set]
        ax.scatter(sel["supervised"], sel["semi-supervised"])
        lo = float(np.nanmin(sel[list(METHODS)].values)) - 1
        hi = float(np.nanmax(sel[list(METHODS)].values)) + 1
        ax.plot([lo, hi], [lo, hi], color="gray", linestyle="--", linewidth=1)
        ax.set_xlabel("supervised vocals SDR (dB)")
        ax.set_ylabel("semi-supervised vocals SDR (dB)")
        ax.set_title(test_set)
        ax.grid(alpha=0.3)
    fig.suptitle("vocals SDR per track, averaged over seeds (above the line: the unpaired data helped)", fontsize=10)
    fig.tight_layout()
    paths.append(out / "vocals_per_track.png")
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths


def _metric_key(name: str) -> str:
    """An MLflow metric name (letters, digits, _ - . / only) from a test set's free-form name."""
    return re.sub(r"[^\w\-./]", "_", name)


def _train_all(cfg: Config, parent: str) -> dict[str, dict]:
    """Run every (method, seed) arm as a Tune trial; returns label -> child run info."""
    import ray
    from ray import tune

    from pipeline import storage as store
    from training.trial import trainable
    from training.tracking import client

    e, t = cfg.experiment, cfg.train
    resources = {"CPU": t.cpus_per_worker} | ({"GPU": e.gpus_per_trial} if e.gpus_per_trial else {})
    concurrent = e.max_concurrent or max(1, int(ray.cluster_resources().get("CPU", 1)) // t.cpus_per_worker)
    tuner = tune.Tuner(
        trainable(cfg, resources),
        param_space={"arm": tune.grid_search(arms(cfg)), "parent_run_id": parent, "sweep": e.name},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrent),
        run_config=tune.RunConfig(name=e.name, storage_path=store.join(cfg.data.results_dir, "experiment"), verbose=1,
                                  failure_config=tune.FailureConfig(max_failures=1)))
    grid = tuner.fit()
    failed = [r for r in grid if r.error is not None]
    if failed:
        raise SemisepError(f"{len(failed)} of {len(grid)} trainings failed; first: {failed[0].error}")
    mlflow = client(cfg.tracking_uri)
    runs = mlflow.search_runs([mlflow.get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    found = {}
    for run in runs:
        label = run.info.run_name[len(e.name) + 1:]
        found[label] = {"run_id": run.info.run_id, "model_uri": run.data.tags.get("semisep.model_uri", ""),
                        "best_step": run.data.tags.get("semisep.best_step", "")}
    missing = [a["label"] for a in arms(cfg) if a["label"] not in found or not found[a["label"]]["model_uri"]]
    if missing:
        raise SemisepError(f"trainings without a logged model: {', '.join(missing)}")
    return found


def run_experiment(cfg: Config, say=print, progress: bool = True) -> ExperimentResult:
    from evaluation.bss_eval import track_frame_medians
    from evaluation.evaluate import evaluate
    from pipeline.ingest import format_report, ingest
    from pipeline.ray_session import ensure_ray
    from training.registry import local_model_dir
    from training.tracking import client, start_run

    e = cfg.experiment
    sets = test_sets(cfg)
    labels = [a["label"] for a in arms(cfg)]
    out = Path(cfg.data.workdir) / "experiment" / e.name
    out.mkdir(parents=True, exist_ok=True)
    if e.generate_demo:
        from pipeline.demo_corpus import generate_demo_corpus

        d = cfg.demo
        root = Path(cfg.data.workdir) / "demo_corpus"
        say(f"[1/4] demo corpus in {root}")
        generate_demo_corpus(root, d.seed, d.track_seconds, d.paired_train, d.unpaired_per_role, d.valid, d.test,
                             d.test_in_domain, progress=progress)
    say("[2/4] ingesting (incremental)")
    ensure_ray(cfg)
    ingested = ingest(cfg, progress=progress)
    say(format_report(ingested))
    params = {k: cfg.to_dict()[k] for k in ("experiment", "train", "model", "transform")}
    parent = start_run(cfg.tracking_uri, cfg.mlflow.experiment, f"experiment-{e.name}", params,
                       {"semisep.kind": "experiment", "semisep.dataset_version": ingested.dataset_version})
    mlflow = client(cfg.tracking_uri)
    try:
        say(f"[3/4] training {len(labels)} models ({len(e.seeds)} seeds x {', '.join(METHODS)}) as Ray Tune trials")
        runs = _train_all(cfg, parent)
        models = {label: local_model_dir(runs[label]["model_uri"], cfg.tracking_uri) for label in labels}
        say(f"[4/4] museval on {', '.join(s['name'] for s in sets)}")
        rows = []
        for s in sets:
            set_cfg = Config.from_dict(cfg.to_dict())
            set_cfg.eval.corpus, set_cfg.eval.split = s["corpus"], s["split"]
            result = evaluate(set_cfg, models, str(out / "eval" / s["name"]), progress=progress)
            for _, r in result.summary[result.summary.method.isin(labels)].iterrows():
                key = _metric_key(f"test_{s['name']}_{r.target}_{r.metric}")
                mlflow.log_metric(runs[r.method]["run_id"], f"{key}_median", float(r["median"]))
                mlflow.log_metric(runs[r.method]["run_id"], f"{key}_mean", float(r["mean"]))
            per_track = track_frame_medians(result.frames)
            sdr = per_track[(per_track.metric == "SDR") & per_track.method.isin(labels)]
            for _, r in sdr.iterrows():
                method, seed = r.method.rsplit("-seed", 1)
                rows.append({"test_set": s["name"], "track": r.track, "target": r.target, "method": method,
                             "seed": int(seed), "sdr": float(r.score)})
        scores = pd.DataFrame(rows)
        improvements = improvement_stats(scores)
        table = markdown(scores, improvements)
        scores.to_csv(out / "scores.csv", index=False)
        improvements.to_csv(out / "improvements.csv", index=False)
        (out / "results.md").write_text(table)
        for path in [out / "results.md", out / "scores.csv", out / "improvements.csv", *plot(scores, improvements, out)]:
            mlflow.log_artifact(parent, str(path), artifact_path="experiment")
        for _, r in improvements.iterrows():
            key = _metric_key(f"{r.test_set}_{r.target}_sdr_improvement")
            for stat in ("mean", "ci_low", "ci_high", "p_value"):
                if np.isfinite(r[stat]):
                    mlflow.log_metric(parent, f"{key}_{stat}", float(r[stat]))
        mlflow.set_tag(parent, "semisep.experiment_runs", json.dumps({k: v["run_id"] for k, v in runs.items()}))
    except BaseException:
        mlflow.set_terminated(parent, "FAILED")
        raise
    mlflow.set_terminated(parent, "FINISHED")
    return ExperimentResult(parent, scores, improvements, table, str(out))
