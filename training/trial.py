"""One training run on one device, in-process, as a Ray Tune function trainable.

Sweeps (``semisep tune``) and experiments (``semisep experiment``) run their trials through
``trial``: the training step, validation, patience and MLflow logging of ``semisep train``, on
one device (a GPU or a GPU fraction, or CPUs), the shards streamed (train.reader), each validation
reported with ``tune.report``. The trial's best separator is logged to its MLflow child run as a
pyfunc (tag ``semisep.model_uri``) before the last report, since a scheduler may end the trial
as soon as it sees that report.

``cfg`` (the Config as a dict) comes through ``tune.with_parameters`` (``trainable(cfg)``), so
Tune's per-trial config table shows only what varies. ``config`` (Tune's param space) holds
``parent_run_id``, ``sweep`` (the group's name), and the train settings to change: any of ``SEARCHED`` at the top
level (a sweep's sampled values) and/or an ``arm`` dict (an experiment's method and seed, with an
optional ``label`` for the run name, and a student's ``model`` settings, if it has its own).
"""

from __future__ import annotations

from semisep.pipeline.config import Config

SEARCHED = ("alpha", "beta", "n_critic", "lr", "critic_lr")


def trial_settings(config: dict) -> tuple[dict, str | None]:
    """(train settings to apply, label) from a trial's param space."""
    arm = dict(config.get("arm") or {})
    label = arm.pop("label", None)
    return {k: config[k] for k in SEARCHED if k in config} | arm, label


def trainable(cfg: Config, resources: dict, log_model=None):
    """``trial`` with ``cfg`` attached (paths made absolute and the tracking store resolved, since
    trials run in Ray workers with another working directory) and ``resources`` per trial.
    ``log_model(tracking_uri, run_id, model_dir) -> URI`` packages each trial's best model in its
    run (the entry points pass semisep.evaluation.registry.log_model). The store's version is
    pinned here, once for all trials (and their restarts)."""
    from ray import tune

    from semisep.training.data import pin_version

    shipped = pin_version(cfg).shipped().to_dict()
    return tune.with_resources(tune.with_parameters(trial, cfg=shipped, log_model=log_model), resources)


def trial(config: dict, cfg: dict, log_model=None) -> None:
    import torch
    from mlflow import MlflowClient
    from ray import tune

    from semisep.training.data import load_training_data
    from semisep.training.early_stopping import new_best
    from semisep.training.step import build_models
    from semisep.training.tracking import (
        MetricLogger, log_pseudo_labels, run_kind, run_tags, start_run, use_mlflow_environment)
    from semisep.training.worker import make_batches, reseed, run

    cfg = Config.from_dict(cfg)
    use_mlflow_environment(cfg)
    t = cfg.train
    settings, label = trial_settings(config)
    for key, value in settings.items():
        if key == "model":  # a student's own size or dropout (pseudo.student_channels, student_dropout)
            for k, v in value.items():
                setattr(cfg.model, k, type(getattr(cfg.model, k))(v))
        else:
            setattr(t, key, type(getattr(t, key))(value))
    trial_id = tune.get_context().get_trial_id()
    parent = config["parent_run_id"]
    client = MlflowClient(cfg.tracking_uri)
    # a trial restarted by --resume replaces its unfinished child run instead of adding a second one
    for old in client.search_runs([client.get_run(parent).info.experiment_id],
                                  f"tags.semisep.trial_id = '{trial_id}' and tags.mlflow.parentRunId = '{parent}'"):
        client.delete_run(old.info.run_id)
    version = str(cfg.data.version)  # pinned by the sweep's driver (trainable): every trial reads one version
    name = f"{config['sweep']}-{label}" if label else f"{config['sweep']}-{trial_id}"
    run_id = start_run(cfg.tracking_uri, cfg.mlflow.experiment, name, cfg.to_dict(),
                       run_tags(cfg, version) | {"mlflow.parentRunId": parent, "semisep.trial_id": trial_id,
                                                 "semisep.sweep": config["sweep"]})
    log_pseudo_labels(cfg, run_id)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(max(1, int(t.cpus_per_worker)))
    sources, valid = load_training_data(cfg)
    # the separator is built first, so the same seed gives every arm the same starting weights
    torch.manual_seed(t.seed)
    models = build_models(cfg, device)
    reseed(t.seed, 0, 0)
    batches = make_batches(cfg, sources, 0, 1, 0, device)
    logger = MetricLogger(cfg.tracking_uri, run_id)
    best = new_best()

    def on_validation(step: int, report: dict, stop: bool, save: bool) -> None:
        logger.log({k: v for k, v in report.items() if k != "step"}, step, now=True)
        if stop or step >= t.max_steps:
            # finish before the last report: the scheduler ends the trial as soon as it sees it
            _finish(cfg, client, logger, run_id, best, log_model,
                    {"name": name, "run_id": run_id, "kind": run_kind(cfg), "dataset_version": version,
                     "best_step": best["step"], "best_val": best["val"]})
        tune.report(report)  # ASHA may stop the trial here

    run(cfg, models, batches, valid, step=0, best=best, on_validation=on_validation, log=logger.log, device=device)
    batches.close()
    if not logger.flush():  # what the loop logged after the last report (the last validation's timings)
        print(f"semisep: warning: MLflow at {logger.tracking_uri} unreachable ({logger.last_error}); "
              f"{len(logger.pending)} metric values of trial run {run_id} were not logged", flush=True)


def _finish(cfg: Config, client, logger, run_id: str, best: dict, log_model, info: dict) -> None:
    """Send every buffered metric, package the best separator of a trial in its run (``log_model``)
    and close the run. Metrics still buffered (the server failed in the last back-off interval)
    are sent now, or the trial fails naming the server: a trial whose last figures are missing
    would be read as NaN, or its earlier figures taken for its last."""
    import tempfile

    from semisep.pipeline.errors import SemisepError
    from semisep.training.checkpoint import save_model

    if not logger.flush():
        raise SemisepError(f"MLflow at {logger.tracking_uri} unreachable at the end of trial run {run_id} "
                           f"({logger.last_error}); {len(logger.pending)} metric values were not logged")
    client.set_tag(run_id, "semisep.best_step", str(best["step"]))
    if log_model is not None:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = save_model(tmp, best["state"], cfg, info)
            client.set_tag(run_id, "semisep.model_uri", log_model(cfg.tracking_uri, run_id, model_dir))
    client.set_terminated(run_id, "FINISHED")
