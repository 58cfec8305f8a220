"""``semisep tune``: a Ray Tune sweep over alpha, beta, n_critic and learning rates.

Each trial is a Tune function trainable running the training step of ``semisep train`` on one
device (a GPU fraction, or CPUs), data read from the same shards into memory, and reporting each
validation with ``tune.report``. (A Ray Train run per trial, Ray's Train V2 + Tune pattern, was
tried first: on Ray 2.60 without the dashboard a finished trial's placement group outlived it and
the next trial's Ray Data reads waited forever for the CPU it held; it also cost ~50 s of start-up
per trial.) ASHA stops lagging trials on their validation score (``train.select_on``: the
validation SDR by default, higher is better); Optuna's TPE picks new points (random search
when configured). The first trial is always the supervised baseline. MLflow: one parent run for
the sweep, one child run per trial (tag ``mlflow.parentRunId``); the summary table and a plot of
validation loss against alpha and beta are artifacts of the parent. The best finished trial's model
is registered as a candidate version. Interrupted sweeps resume with ``--resume``: Tune restores its
experiment state and does not rerun finished trials.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from ray.tune.search import Searcher

from semisep.evaluation.registry import log_model
from semisep.pipeline import storage as store
from semisep.pipeline.config import Config
from semisep.pipeline.errors import SemisepError
from semisep.training.trial import SEARCHED, trainable

STATE = "semisep_sweep.json"
PLOT = "val_sdr_vs_alpha_beta.png"  # parent run id and settings, next to Tune's experiment state


@dataclass
class SweepResult:
    parent_run_id: str
    summary: pd.DataFrame
    candidate_version: str | None
    interrupted: bool
    path: str


def _space(cfg: Config) -> dict:
    from ray import tune

    s = cfg.tune
    for key in ("alpha", "beta", "lr", "critic_lr"):
        lo, hi = getattr(s, key)
        if not 0 < lo <= hi:
            raise SemisepError(f"tune.{key}={getattr(s, key)}: need [low, high] with 0 < low <= high")
    return {"alpha": tune.loguniform(*s.alpha), "beta": tune.loguniform(*s.beta), "n_critic": tune.choice(list(s.n_critic)),
            "lr": tune.loguniform(*s.lr), "critic_lr": tune.loguniform(*s.critic_lr)}


def _baseline(cfg: Config) -> dict:
    t = cfg.train
    return {"alpha": 0.0, "beta": 0.0, "n_critic": t.n_critic, "lr": t.lr, "critic_lr": t.critic_lr}


def _points(cfg: Config) -> list[dict]:
    """The configured points, missing keys filled from the config's train section."""
    points = []
    for i, p in enumerate(cfg.tune.points):
        unknown = set(p) - set(SEARCHED)
        if unknown:
            raise SemisepError(f"tune.points[{i}]: unknown keys {sorted(unknown)} (known: {', '.join(SEARCHED)})")
        points.append({k: p.get(k, getattr(cfg.train, k)) for k in SEARCHED})
    return points


class BaselineFirst(Searcher):
    """Suggests the supervised baseline first, then defers to the wrapped searcher.

    alpha = beta = 0 lies outside the log-uniform ranges, so the baseline cannot be one of
    Optuna's points; the wrapped searcher never hears of that trial.
    """

    def __init__(self, searcher: Searcher, baseline: dict):
        self.searcher, self.baseline, self.baseline_trial = searcher, baseline, None
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def set_search_properties(self, metric, mode, config, **spec):
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent):
        return self.searcher.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id):
        if self.baseline_trial is None:
            self.baseline_trial = trial_id
            return dict(self.baseline)
        return self.searcher.suggest(trial_id)

    def on_trial_result(self, trial_id, result):
        if trial_id != self.baseline_trial:
            self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id, result=None, error=False):
        if trial_id != self.baseline_trial:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)

    # Tune saves wrappers through get_state / set_state and the wrapped searcher by itself
    def get_state(self) -> dict:
        return {"baseline_trial": self.baseline_trial}

    def set_state(self, state: dict) -> None:
        self.baseline_trial = state["baseline_trial"]

    def save(self, checkpoint_path):
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path):
        self.searcher.restore(checkpoint_path)


def _trial_lines(say, max_steps: int):
    """A Tune callback saying one line per validation of every trial."""
    from ray import tune

    from semisep.progress import trial_line

    class Lines(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            say(trial_line(f"trial {trial.trial_id}", result, max_steps))

    return Lines()


def sweep(cfg: Config, num_samples: int | None = None, resume: bool = False, say=None) -> SweepResult:
    """Run (or ``resume``) the sweep; ``say`` gets one line per trial and validation (None: quiet)."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from semisep.pipeline.ray_session import ensure_ray
    from semisep.training.data import pin_version
    from semisep.training.tracking import client, start_run

    ensure_ray(cfg)
    s, t = cfg.tune, cfg.train
    # Tune's experiment state on storage every node shares (data.storage_path); the sweep's own
    # state, summary and plot in the driver's workdir
    storage = store.join(cfg.data.results_dir, "tune")
    path = store.join(storage, s.name)
    local = os.path.abspath(os.path.join(cfg.data.workdir, "tune", s.name))
    state_file = Path(local) / STATE
    mlflow = client(cfg.tracking_uri)
    if resume:
        if not (state_file.exists() and tune.Tuner.can_restore(path)):
            raise SemisepError(f"--resume: no sweep named {s.name!r} under {storage} to resume")
        parent = json.loads(state_file.read_text())["parent_run_id"]
        pinned = json.loads(state_file.read_text()).get("data_version", -1)
        if pinned >= 0:  # the resumed sweep's trials read the version its first trials read
            cfg = pin_version(cfg, {"data": {"version": pinned}})
        mlflow.update_run(parent, status="RUNNING")
    else:
        if state_file.exists():
            raise SemisepError(f"a sweep named {s.name!r} already exists under {storage}: pass --resume to continue "
                               "it, or set tune.name to start another")
        version = str(pin_version(cfg).data.version)  # trainable() pins the same one for every trial
        total = 1 + len(_points(cfg)) + (s.num_samples if num_samples is None else num_samples)
        parent = start_run(cfg.tracking_uri, cfg.mlflow.experiment, f"sweep-{s.name}",
                           {"tune": cfg.to_dict()["tune"], "train": cfg.to_dict()["train"], "trials": total},
                           {"semisep.kind": "sweep", "semisep.sweep": s.name, "semisep.dataset_version": version})
        Path(local).mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps({"parent_run_id": parent, "trials": total, "data_version": int(version)}))
    total = json.loads(state_file.read_text())["trials"]
    trial_fn = trainable(cfg, {"CPU": t.cpus_per_worker} | ({"GPU": s.gpus_per_worker} if s.gpus_per_worker else {}),
                         log_model)
    param_space = {**_space(cfg), "parent_run_id": parent, "sweep": s.name}
    if resume:
        # the restored run config keeps the first run's callbacks, the progress lines among them
        tuner = tune.Tuner.restore(path, trial_fn, resume_errored=True, param_space=param_space)
    else:
        per_trial = t.cpus_per_worker
        cpus = int(ray.cluster_resources().get("CPU", 1))
        concurrent = s.max_concurrent or max(1, cpus // per_trial)
        if s.searcher not in ("optuna", "random"):
            raise SemisepError(f"tune.searcher={s.searcher!r}: use 'optuna' (TPE) or 'random'")
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        sampler = optuna.samplers.TPESampler(seed=s.seed) if s.searcher == "optuna" else \
            optuna.samplers.RandomSampler(seed=s.seed)
        search = BaselineFirst(OptunaSearch(points_to_evaluate=_points(cfg) or None, sampler=sampler,
                                              metric="score", mode="max"), _baseline(cfg))
        scheduler = ASHAScheduler(metric="score", mode="max", time_attr="step", max_t=t.max_steps, grace_period=s.grace_steps or t.val_every,
                                  reduction_factor=s.reduction_factor)
        tuner = tune.Tuner(
            trial_fn, param_space=param_space,
            tune_config=tune.TuneConfig(search_alg=search, scheduler=scheduler,
                                        num_samples=total, max_concurrent_trials=concurrent),
            run_config=tune.RunConfig(name=s.name, storage_path=storage, verbose=1,
                                      failure_config=tune.FailureConfig(max_failures=1),
                                      callbacks=[_trial_lines(say, t.max_steps)] if say else None))
    grid = tuner.fit()
    summary = _summary(grid, cfg, parent)
    interrupted = len(summary) < total or summary.status.isin(["pending", "running"]).any()
    if interrupted:
        mlflow.update_run(parent, status="KILLED")
        return SweepResult(parent, summary, None, True, local)
    version = _report(cfg, parent, summary, local)
    mlflow.set_terminated(parent, "FINISHED")
    return SweepResult(parent, summary, version, False, local)


def _summary(grid, cfg: Config, parent: str) -> pd.DataFrame:
    """One row per trial: params, best validation score (SDR and loss there), steps, status, child run id."""
    from semisep.training.tracking import client

    mlflow = client(cfg.tracking_uri)
    runs = {r.data.tags.get("semisep.trial_id"): r for r in mlflow.search_runs(
        [mlflow.get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")}
    rows = []
    for result in grid:
        m = result.metrics or {}
        trial_id = m.get("trial_id") or Path(result.path).name.split("_")[1]
        steps = int(m.get("step", 0))
        run = runs.get(trial_id)
        if result.error is not None:
            status = "error"
        elif run is not None and run.info.status == "FINISHED":
            status = "early stopped (patience)" if steps < cfg.train.max_steps else "finished"
        elif steps and steps < cfg.train.max_steps:
            status = "stopped by ASHA"
        else:
            status = "pending" if not steps else "running"
        rows.append({"trial": trial_id, **{k: result.config[k] for k in SEARCHED},
                     "best_score": m.get("best_score", float("nan")), "best_val_sdr": m.get("best_val_sdr", float("nan")),
                     "best_val_loss": m.get("best_val_loss", float("nan")), "steps": steps, "status": status,
                     "run_id": run.info.run_id if run else ""})
        if run is not None and run.info.status == "RUNNING" and status == "stopped by ASHA":
            mlflow.set_tag(run.info.run_id, "semisep.trial_status", "stopped by ASHA")
            mlflow.set_terminated(run.info.run_id, "KILLED")
    df = pd.DataFrame(rows)
    return df.sort_values("best_score", ascending=False, na_position="last").reset_index(drop=True) if len(df) else df


def _report(cfg: Config, parent: str, summary: pd.DataFrame, path: str) -> str | None:
    """Summary table and plot on the parent run; the best finished trial registered as a candidate."""
    from semisep.evaluation.registry import register
    from semisep.training.tracking import client

    mlflow = client(cfg.tracking_uri)
    out = Path(path)
    summary.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(summary_markdown(summary))
    _plot(summary, out / PLOT)
    for name in ("summary.csv", "summary.md", PLOT):
        mlflow.log_artifact(parent, str(out / name), artifact_path="sweep")
    finished = summary[summary.status.str.startswith(("finished", "early stopped")) & (summary.run_id != "")]
    baseline = summary[(summary.alpha == 0) & (summary.beta == 0)]
    if len(baseline):
        mlflow.log_metric(parent, "baseline_best_val_sdr", float(baseline.best_val_sdr.iloc[0]))
    if not len(finished):
        return None
    best = finished.iloc[0]
    mlflow.log_metric(parent, "best_val_sdr", float(best.best_val_sdr))
    mlflow.set_tag(parent, "semisep.best_trial", best.trial)
    version = register(cfg.tracking_uri, cfg.mlflow.registered_model, best.run_id,
                       {"semisep.sweep_run_id": parent, "semisep.sweep": cfg.tune.name})
    mlflow.set_tag(parent, "semisep.candidate_version", version)
    return version


def summary_markdown(summary: pd.DataFrame) -> str:
    lines = ["| trial | alpha | beta | n_critic | lr | critic_lr | best val SDR (dB) | val loss there | steps | status |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for _, r in summary.iterrows():
        lines.append(f"| {r.trial} | {r.alpha:.2g} | {r.beta:.2g} | {int(r.n_critic)} | {r.lr:.2g} | {r.critic_lr:.2g} "
                     f"| {r.best_val_sdr:.2f} | {r.best_val_loss:.4f} | {r.steps} | {r.status} |")
    return "\n".join(lines) + "\n"


def _plot(summary: pd.DataFrame, dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    semi = summary[(summary.alpha > 0) | (summary.beta > 0)]
    base = summary[(summary.alpha == 0) & (summary.beta == 0)]
    for ax, key in zip(axes, ("alpha", "beta")):
        stopped = semi.status == "stopped by ASHA"
        ax.scatter(semi[key][~stopped], semi.best_val_sdr[~stopped], label="trial")
        ax.scatter(semi[key][stopped], semi.best_val_sdr[stopped], marker="x", label="stopped by ASHA")
        for _, r in base.iterrows():
            ax.axhline(r.best_val_sdr, color="gray", linestyle="--", label="supervised baseline (alpha = beta = 0)")
        if (semi[key] > 0).any():
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("best validation vocal SDR (dB)")
    axes[0].legend(fontsize=8)
    fig.suptitle("sweep: validation vocal SDR against alpha and beta (higher is better)")
    fig.tight_layout()
    fig.savefig(dest, dpi=110)
    plt.close(fig)
