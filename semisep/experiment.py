"""``semisep experiment``: does unpaired audio help? Four arms, several seeds, honest statistics.

Arms (``experiment.arms``), each trained for every seed in ``experiment.seeds`` as a Ray Tune trial
of one device (training/trial.py: the step, validation and early stopping of ``semisep train``),
with the same architecture, initial weights, paired data order, step budget and patience:

- ``supervised``: alpha = beta = 0, no critics, no remix: the paired songs only;
- ``supervised+remix``: the same, with ``experiment.remix`` of every batch remixed from the
  unpaired vocals and accompaniment and the paired stems (training/batches.py): the obvious use
  of solo recordings, the baseline a reviewer asks for first;
- ``semi-supervised``: the train section's alpha, beta, n_critic (the paper's method);
- ``semi-supervised+remix``: both.

Every model is scored with museval on every test set, beside the oracle IRM, the mixture and
REPET-SIM. Per test set and target:

- SDR of each arm: the per-track median over 1 s frames, averaged over seeds, then the median
  and mean over tracks (the SiSEC way, with seeds folded in);
- for each comparison (every arm against ``supervised``, and ``semi-supervised+remix`` against
  ``supervised+remix``: what the adversarial terms add on top of remix): the per-seed differences
  (mean over tracks), the mean difference over tracks (per-track differences averaged over seeds)
  with a 95% t-interval over tracks, and a two-sided Wilcoxon signed-rank test over tracks.

Choosing on validation, never on test: each arm's best validation SDR (the figure that picked its
best step) is reported, averaged over seeds; the arm to use is supervised+remix (the simpler one)
unless another beats it on the validation songs with a 95% interval of the paired differences over
seeds x songs above 0 (``evaluation.comparison.choose_arm``: the highest mean over a handful of
songs picked an arm once that lost on both test sets); how well validation SDR and validation loss rank the trained models against their test SDR
(Spearman's rho over all models) is reported beside it.

Tracks are the unit of the interval and the test (they are the sample of music); the per-seed
differences show how much training noise sits on top. Results: ``results.md`` (the tables),
``scores.csv`` (every track, seed, method, target), ``improvements.csv``, ``validation.csv``,
``validation_per_song.csv``,
``improvement.png``, ``vocals_per_track.png``, ``learning_curves.png`` and ``curves.csv`` (validation vocal SDR
against step per arm, and what the last quarter of each training's steps gained), all logged to an MLflow parent run whose children
are the trainings.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from semisep.evaluation.comparison import (
    ARMS, BASELINE, REFERENCE_ROWS, choice_markdown, choose_arm, improvement_stats, markdown, plot)
from semisep.pipeline.config import Config
from semisep.pipeline.errors import SemisepError



@dataclass
class ExperimentResult:
    parent_run_id: str
    scores: pd.DataFrame  # test_set, track, target, method, seed, sdr
    improvements: pd.DataFrame  # test_set, target, comparison, tracks, seeds, per_seed, mean, ci_low, ci_high, p_value
    validation: pd.DataFrame  # arm, seed, val_sdr, val_loss, best_step
    table: str
    out_dir: str


STUDENT, TEACHER = "self-training+remix", "supervised+remix"


def arm_settings(cfg: Config, arm: str) -> dict:
    """The train settings an arm changes: alpha, beta, remix, pseudo, the unpaired roles it reads."""
    semi = arm.startswith("semi-supervised")
    e = cfg.experiment
    remix = e.remix if arm.endswith("+remix") else 0.0
    pseudo = e.pseudo if arm == STUDENT else 0.0  # in place of that much remix: the paired share stays the teacher's
    return {"alpha": cfg.train.alpha if semi else 0.0, "beta": cfg.train.beta if semi else 0.0,
            "remix": remix - pseudo, "pseudo": pseudo, "unpaired_roles": list(e.unpaired_roles)}


def arms(cfg: Config) -> list[dict]:
    """One Tune grid point per (arm, seed): train settings plus a label for the run name. A
    self-training arm's ``teacher`` is the label of the arm whose model pseudo-labels its mixtures."""
    e = cfg.experiment
    seeds = [int(s) for s in e.seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise SemisepError(f"experiment.seeds={e.seeds}: give one or more distinct seeds")
    chosen = list(e.arms)
    unknown = [a for a in chosen if a not in ARMS]
    if unknown or BASELINE not in chosen or len(set(chosen)) != len(chosen):
        raise SemisepError(f"experiment.arms={chosen}: distinct arms from {', '.join(ARMS)}, {BASELINE!r} among them")
    if any(a.startswith("semi") for a in chosen) and cfg.train.alpha <= 0 and cfg.train.beta <= 0:
        raise SemisepError("train.alpha and train.beta are both 0: the semi-supervised arms would be the baseline")
    if any(a.endswith("+remix") for a in chosen) and not 0 < e.remix < 1:
        raise SemisepError(f"experiment.remix={e.remix}: the +remix arms need a share 0 < remix < 1")
    if STUDENT in chosen and (TEACHER not in chosen or not 0 < e.pseudo < e.remix):
        raise SemisepError(f"experiment.arms: {STUDENT!r} learns from {TEACHER!r}'s pseudo-labels: list both, with "
                           "0 < experiment.pseudo < experiment.remix (its pseudo-labelled rows take that share of "
                           "the remixed rows' place)")
    out = []
    for seed in seeds:
        for arm in chosen:
            point = {"label": f"{arm}-seed{seed}", "seed": seed, **arm_settings(cfg, arm)}
            if arm == STUDENT:
                point["teacher"] = f"{TEACHER}-seed{seed}"
            out.append(point)
    return out


def rounds(cfg: Config, points: list[dict]) -> list[list[dict]]:
    """The grid points of each training phase: the arms without a teacher, then for each of
    pseudo.rounds the students (a round's students teach the next; only the last round's are
    the reported arm, the earlier ones are labelled ``...-round<r>``)."""
    first = [p for p in points if "teacher" not in p]
    students = [p for p in points if "teacher" in p]
    phases = [first]
    for r in range(1, cfg.pseudo.rounds + 1):
        last = r == cfg.pseudo.rounds
        phases.append([p | ({} if last else {"label": f"{p['label'].rsplit('-seed', 1)[0]}-round{r}-seed{p['seed']}"})
                       | ({"teacher": p["teacher"]} if r == 1 else
                          {"teacher": f"{p['label'].rsplit('-seed', 1)[0]}-round{r - 1}-seed{p['seed']}"})
                       for p in students] if students else [])
    return [phase for phase in phases if phase]


def test_sets(cfg: Config) -> list[dict]:
    sets = cfg.experiment.test_sets or [{"name": cfg.eval.corpus, "corpus": cfg.eval.corpus, "split": cfg.eval.split}]
    corpora = {c.name for c in cfg.data.corpora}
    for i, s in enumerate(sets):
        if not isinstance(s, dict) or set(s) - {"name", "corpus", "split"} or "corpus" not in s:
            raise SemisepError(f"experiment.test_sets[{i}]={s!r}: write it as {{name: ..., corpus: ..., split: test}}")
        if s["corpus"] not in corpora:
            raise SemisepError(f"experiment.test_sets[{i}]: corpus {s['corpus']!r} is not in data.corpora")
    return [{"name": s.get("name", s["corpus"]), "corpus": s["corpus"], "split": s.get("split", "test")} for s in sets]


def _metric_key(name: str) -> str:
    """An MLflow metric name (letters, digits, _ - . / only) from a test set's free-form name."""
    return re.sub(r"[^\w\-./]", "_", name)


def _progress(total: int, say, max_steps: int, trial_lines: bool = True):
    """A Tune callback saying one line per validation of every training (``trial_lines``) and one per
    finished training (Tune's own tables stay off)."""
    from ray import tune

    from semisep.progress import trial_line

    class Progress(tune.Callback):
        done = 0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if trial_lines:
                say(trial_line(trial.config["arm"]["label"], result, max_steps))

        def on_trial_complete(self, iteration, trials, trial, **info):
            Progress.done += 1
            r = trial.last_result or {}
            say(f"  [{Progress.done}/{total}] {trial.config['arm']['label']}: best validation vocal SDR "
                f"{r.get('best_val_sdr', float('nan')):.2f} dB at step {int(r.get('best_step', 0))} of "
                f"{int(r.get('step', 0))}")

    return Progress()


def _train_all(cfg: Config, parent: str, points: list[dict], phase: int, say=print,
               trial_lines: bool = True) -> dict[str, dict]:
    """Run the grid points of one phase as Tune trials; returns label -> child run info."""
    import ray
    from ray import tune

    from semisep.evaluation.registry import log_model
    from semisep.pipeline import storage as store
    from semisep.training.trial import trainable
    from semisep.training.tracking import client

    e, t = cfg.experiment, cfg.train
    resources = {"CPU": t.cpus_per_worker} | ({"GPU": e.gpus_per_trial} if e.gpus_per_trial else {})
    concurrent = e.max_concurrent or max(1, int(ray.cluster_resources().get("CPU", 1)) // t.cpus_per_worker)
    grid = [{k: v for k, v in p.items() if k != "teacher"} for p in points]
    tuner = tune.Tuner(
        trainable(cfg, resources, log_model),
        param_space={"arm": tune.grid_search(grid), "parent_run_id": parent, "sweep": e.name},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrent),
        run_config=tune.RunConfig(name=f"{e.name}-phase{phase}", storage_path=store.join(cfg.data.results_dir, "experiment"),
                                  verbose=0, failure_config=tune.FailureConfig(max_failures=1),
                                  callbacks=[_progress(len(grid), say, t.max_steps, trial_lines)]))
    grid = tuner.fit()
    failed = [r for r in grid if r.error is not None]
    if failed:
        raise SemisepError(f"{len(failed)} of {len(grid)} trainings failed; first: {failed[0].error}")
    # the validation figures are the ones each trial reported to Tune (in-process, not through a
    # server that may have dropped the last of them); MLflow gives the run and its model
    reported = {r.config["arm"]["label"]: r.metrics or {} for r in grid}
    mlflow = client(cfg.tracking_uri)
    runs = mlflow.search_runs([mlflow.get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    found = {}
    for run in runs:
        label = run.info.run_name[len(e.name) + 1:]
        if label not in reported:
            continue  # a run of another phase
        m = reported[label]
        found[label] = {"run_id": run.info.run_id, "model_uri": run.data.tags.get("semisep.model_uri", ""),
                        "best_step": int(m.get("best_step", 0)),
                        "val_sdr": float(m.get("best_val_sdr", float("nan"))),
                        "val_loss": float(m.get("best_val_loss", float("nan")))}
    missing = [p["label"] for p in points if p["label"] not in found or not found[p["label"]]["model_uri"]]
    if missing:
        raise SemisepError(f"trainings without a logged model: {', '.join(missing)}")
    unscored = [label for label, f in found.items() if not np.isfinite(f["val_sdr"])]
    if unscored:  # never left out of the choice of arm in silence
        raise SemisepError(f"trainings without a validation SDR: {', '.join(sorted(unscored))} (MLflow runs "
                           f"{', '.join(found[label]['run_id'] for label in sorted(unscored))})")
    return found


def _pseudo_label(cfg: Config, phase: list[dict], runs: dict[str, dict], out: Path, say) -> list[dict]:
    """Each student's pseudo-labels, by its teacher (a model of an earlier phase), in a store of its
    own under the experiment's folder; returns the phase's points with ``pseudo_labels`` set."""
    from semisep.evaluation.pseudo_labels import label_mixtures
    from semisep.evaluation.registry import local_model_dir

    points = []
    for point in phase:
        teacher = runs[point["teacher"]]
        directory = str((out / "pseudo" / point["label"]).resolve())
        say(f"  pseudo-labels for {point['label']} by {point['teacher']}:")
        model_dir = local_model_dir(teacher["model_uri"], cfg.tracking_uri)
        label_mixtures(cfg, model_dir, teacher["model_uri"], teacher["run_id"], directory,
                       say=lambda line: say(f"    {line}"))
        init = {}
        if cfg.pseudo.student == "teacher":  # fine-tuning: a copy beside the labels, where every trial reads it
            init_dir = (out / "teachers" / point["teacher"]).resolve()
            shutil.rmtree(init_dir, ignore_errors=True)
            shutil.copytree(model_dir, init_dir)
            init = {"init_model": str(init_dir)}
        points.append(point | {"pseudo_labels": directory} | init | student_model(cfg))
    return points


def student_model(cfg: Config) -> dict:
    """The model settings a student changes (pseudo.student_channels, pseudo.student_dropout), as a
    trial's ``model`` entry; none when both are 0."""
    ps = cfg.pseudo
    model = ({"base_channels": ps.student_channels} if ps.student_channels else {}) | (
        {"dropout": ps.student_dropout} if ps.student_dropout else {})
    return {"model": model} if model else {}


def validation_per_song(cfg: Config, models: dict[str, str], labels: list[str]) -> pd.DataFrame:
    """Every trained model's vocal SDR on each validation song (the figure training validates on,
    before its mean over songs): arm, seed, track, val_sdr. What ``choose_arm`` pairs."""
    from semisep.training.checkpoint import load_model
    from semisep.training.data import read_validation, validation_files
    from semisep.training.validation import per_track_sdr

    valid = read_validation(validation_files(cfg), cfg)
    rows = []
    for label in labels:
        arm, seed = _split_label(label)
        model = load_model(models[label])[0]
        rows += [{"arm": arm, "seed": seed, "track": track, "val_sdr": sdr}
                 for track, sdr in per_track_sdr(model, valid, cfg.train.batch_size).items()]
    return pd.DataFrame(rows)


def learning_curves(cfg: Config, mlflow, runs: dict[str, dict], labels: list[str], out: Path) -> tuple[pd.DataFrame, Path]:
    """Each reported training's validation vocal SDR against step, read back from its MLflow run:
    ``learning_curves.png`` (one line per arm, the mean over seeds with a band) and a frame of
    arm, seed, steps, best_step, last_quarter_gain (what the last quarter of its steps gained)."""
    from semisep.training import learning_curve

    groups: dict[str, list] = {}
    rows = []
    for label in labels:
        arm, seed = _split_label(label)
        curve = learning_curve.history(mlflow, runs[label]["run_id"])
        groups.setdefault(arm, []).append(curve)
        rows.append({"arm": arm, "seed": seed, "steps": curve[-1][0] if curve else 0,
                     "best_step": runs[label]["best_step"], "last_quarter_gain": learning_curve.last_quarter_gain(curve)})
    path = out / "learning_curves.png"
    learning_curve.save(groups, path, f"{cfg.experiment.name}: validation vocal SDR (mean over seeds, band: lowest to highest)")
    return pd.DataFrame(rows), path


def report(cfg: Config, sets: list[dict], models: dict[str, str], scores: pd.DataFrame, improvements: pd.DataFrame,
           validation: pd.DataFrame, curves: pd.DataFrame, plots: list[Path], chosen: str, out: Path) -> Path:
    """``<out>/report.html``: the tables, the plots and, per test set, excerpts separated by every
    arm's first seed's model, the songs picked by the arm chosen on validation (mean over seeds)."""
    from semisep.evaluation import html_report
    from semisep.evaluation.comparison import method_summary
    from semisep.evaluation.evaluate import listening_excerpts
    from semisep.training.checkpoint import load_model

    e = cfg.experiment
    seed = int(e.seeds[0])
    arms_first = [chosen, *[a for a in e.arms if a != chosen]]
    loaded = {arm: load_model(models[f"{arm}-seed{seed}"]) for arm in arms_first}
    excerpts = []
    for s in sets:
        set_cfg = Config.from_dict(cfg.to_dict())
        set_cfg.eval.corpus, set_cfg.eval.split = s["corpus"], s["split"]
        mine = scores[(scores.test_set == s["name"]) & (scores.method == chosen) & (scores.target == "vocals")]
        excerpts += listening_excerpts(set_cfg, loaded, mine.groupby("track").sdr.mean(), s["name"])
    summary = method_summary(scores).pivot_table(index=["test_set", "method"], columns="target", values=["median", "mean"],
                                                 sort=False)
    summary.columns = [f"{target} {stat}" for stat, target in summary.columns]
    summary = summary.reset_index()[["test_set", "method", "vocals median", "vocals mean", "accompaniment median",
                                     "accompaniment mean"]]
    diffs = improvements.assign(per_seed=improvements.per_seed.map(lambda v: ", ".join(f"{x:+.2f}" for x in v)),
                                ci=[f"[{lo:+.2f}, {hi:+.2f}]" for lo, hi in zip(improvements.ci_low, improvements.ci_high)])
    diffs = diffs[["test_set", "target", "comparison", "per_seed", "mean", "ci", "p_value", "tracks"]]
    by_arm = validation.groupby("arm", sort=False).agg(val_sdr=("val_sdr", "mean"), val_loss=("val_loss", "mean"),
                                                      best_step=("best_step", "mean")).reset_index()
    seeds = ", ".join(map(str, e.seeds))
    return html_report.write(
        out / "report.html", f"semisep experiment: {e.name}",
        f"{len(e.arms)} arms x {len(e.seeds)} seeds ({seeds}); BSS Eval v4 through museval, dB: per-track median over "
        f"1 s frames, averaged over seeds; intervals are 95% t-intervals over tracks. Chosen on validation: {chosen}.",
        [("Results", [html_report.table(summary, "SDR (dB): median and mean over tracks"),
                      *[html_report.figure(p, p.stem.replace("_", " ")) for p in plots[:1]],
                      html_report.table(diffs, "Differences (dB): per-seed, mean over tracks with a 95% CI, Wilcoxon p"),
                      html_report.table(by_arm, "Validation (what chooses): mean over seeds at each model's best step")])],
        excerpts, f"{chosen} (the arm chosen on validation; every arm's seed-{seed} model separates)",
        after=[("Plots", [html_report.figure(p, p.stem.replace("_", " ")) for p in plots[1:]]),
               ("Learning curves", [html_report.table(curves, "What the last quarter of each training's steps gained "
                                                              "in validation vocal SDR (dB)")])])


def curves_markdown(curves: pd.DataFrame) -> str:
    """Per arm: steps run, best step, and what the last quarter of the steps gained (mean and
    largest over seeds); "rising" when any seed gained at least FLAT_DB there."""
    from semisep.training.learning_curve import FLAT_DB

    lines = ["", f"Learning curves (learning_curves.png): what the last quarter of each training's steps gained in "
             f"validation vocal SDR (best overall minus best by 3/4 of its steps); under {FLAT_DB} dB counts as flat.",
             "| arm | steps (mean) | best step (mean) | last-quarter gain, mean | largest | curve |",
             "|---|---:|---:|---:|---:|---|"]
    for arm, g in curves.groupby("arm", sort=False):
        rising = bool((g.last_quarter_gain >= FLAT_DB).any())
        lines.append(f"| {arm} | {g.steps.mean():.0f} | {g.best_step.mean():.0f} | {g.last_quarter_gain.mean():+.2f} "
                     f"| {g.last_quarter_gain.max():+.2f} | {'still rising' if rising else 'flat'} |")
    return "\n".join(lines) + "\n"


def _split_label(label: str) -> tuple[str, int]:
    arm, seed = label.rsplit("-seed", 1)
    return arm, int(seed)


def run_experiment(cfg: Config, say=print, progress: bool = True, trial_lines: bool = True) -> ExperimentResult:
    from semisep.evaluation.bss_eval import track_frame_medians
    from semisep.evaluation.evaluate import evaluate
    from semisep.pipeline.ingest import format_report, ingest
    from semisep.pipeline.ray_session import ensure_ray
    from semisep.evaluation.registry import local_model_dir
    from semisep.training.tracking import client, start_run

    e = cfg.experiment
    sets = test_sets(cfg)
    labels = [a["label"] for a in arms(cfg)]
    out = Path(cfg.data.workdir) / "experiment" / e.name
    out.mkdir(parents=True, exist_ok=True)
    if e.generate_demo:
        from semisep.pipeline.demo_corpus import generate

        root = Path(cfg.data.workdir) / "demo_corpus"
        say(f"[1/4] {cfg.demo.generator} corpus in {root}")
        generate(root, cfg.demo, progress=progress)
    say("[2/4] ingesting (incremental)")
    ensure_ray(cfg)
    ingested = ingest(cfg, progress=progress)
    say(format_report(ingested))
    params = {k: cfg.to_dict()[k] for k in ("experiment", "train", "model", "transform")}
    parent = start_run(cfg.tracking_uri, cfg.mlflow.experiment, f"experiment-{e.name}", params,
                       {"semisep.kind": "experiment", "semisep.dataset_version": ingested.dataset_version})
    mlflow = client(cfg.tracking_uri)
    try:
        phases = rounds(cfg, arms(cfg))
        say(f"[3/4] training {sum(map(len, phases))} models ({len(e.seeds)} seeds x {', '.join(e.arms)}) as Ray Tune "
            f"trials{f', in {len(phases)} phases (teachers first)' if len(phases) > 1 else ''}")
        runs = {}
        for k, phase in enumerate(phases, start=1):
            if k > 1:
                phase = _pseudo_label(cfg, phase, runs, out, say)
            runs |= _train_all(cfg, parent, phase, k, say, trial_lines)
        models = {label: local_model_dir(runs[label]["model_uri"], cfg.tracking_uri) for label in labels}
        say(f"[4/4] museval on {', '.join(s['name'] for s in sets)}")
        rows = []
        for s in sets:
            set_cfg = Config.from_dict(cfg.to_dict())
            set_cfg.eval.corpus, set_cfg.eval.split = s["corpus"], s["split"]
            result = evaluate(set_cfg, models, str(out / "eval" / s["name"]), progress=progress, report=False)
            for _, r in result.summary[result.summary.method.isin(labels)].iterrows():
                key = _metric_key(f"test_{s['name']}_{r.target}_{r.metric}")
                mlflow.log_metric(runs[r.method]["run_id"], f"{key}_median", float(r["median"]))
                mlflow.log_metric(runs[r.method]["run_id"], f"{key}_mean", float(r["mean"]))
            per_track = track_frame_medians(result.frames)
            for _, r in per_track[per_track.metric == "SDR"].iterrows():
                method, seed = _split_label(r.method) if r.method in labels else (r.method, 0)
                rows.append({"test_set": s["name"], "track": r.track, "target": r.target, "method": method,
                             "seed": seed, "sdr": float(r.score)})
        scores = pd.DataFrame(rows)
        order = {m: i for i, m in enumerate([*e.arms, *REFERENCE_ROWS])}
        scores = scores.sort_values("method", key=lambda col: col.map(order), kind="stable").reset_index(drop=True)
        improvements = improvement_stats(scores)
        validation = pd.DataFrame([{"arm": _split_label(label)[0], "seed": _split_label(label)[1],
                                    "val_sdr": runs[label]["val_sdr"], "val_loss": runs[label]["val_loss"],
                                    "best_step": runs[label]["best_step"]} for label in labels])
        curves, curve_png = learning_curves(cfg, mlflow, runs, labels, out)
        per_song = validation_per_song(cfg, models, labels)
        per_song.to_csv(out / "validation_per_song.csv", index=False)
        chosen, choice = choose_arm(per_song)
        table = markdown(scores, improvements, validation) + choice_markdown(chosen, choice) + curves_markdown(curves)
        curves.to_csv(out / "curves.csv", index=False)
        scores.to_csv(out / "scores.csv", index=False)
        improvements.to_csv(out / "improvements.csv", index=False)
        validation.to_csv(out / "validation.csv", index=False)
        (out / "results.md").write_text(table)
        plots = plot(scores, improvements, out)
        say(f"  listening excerpts for report.html ({len(sets)} test sets)")
        page = report(cfg, sets, models, scores, improvements, validation, curves, [*plots, curve_png], chosen, out)
        for path in [out / "results.md", out / "scores.csv", out / "improvements.csv", out / "validation.csv",
                     out / "validation_per_song.csv", out / "curves.csv", curve_png, *plots, page]:
            mlflow.log_artifact(parent, str(path), artifact_path="experiment")
        for _, r in improvements.iterrows():
            key = _metric_key(f"{r.test_set}_{r.target}_{r.comparison.replace(' - ', '_vs_')}")
            for stat in ("mean", "ci_low", "ci_high", "p_value"):
                if np.isfinite(r[stat]):
                    mlflow.log_metric(parent, f"{key}_{stat}", float(r[stat]))
        for arm, g in validation.groupby("arm"):
            mlflow.log_metric(parent, _metric_key(f"val_sdr_{arm}"), float(g.val_sdr.mean()))
        mlflow.set_tag(parent, "semisep.experiment_runs", json.dumps({k: v["run_id"] for k, v in runs.items()}))
        mlflow.set_tag(parent, "semisep.chosen_on_validation", chosen)
        mlflow.set_tag(parent, "semisep.report", str(page.resolve()))
    except BaseException:
        mlflow.set_terminated(parent, "FAILED")
        raise
    mlflow.set_terminated(parent, "FINISHED")
    return ExperimentResult(parent, scores, improvements, validation, table, str(out))
