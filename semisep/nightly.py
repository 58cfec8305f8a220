"""The nightly job: ingest what is new, train when the data changed, put the model through the gate.

``nightly(cfg)`` is what cron (or a Kubernetes CronJob) runs through ``ray job submit``:

1. incremental ingestion (``pipeline/ingest.py``); too many failed files stop the night here;
2. if no nightly model of the resulting dataset version exists in the registry, train one with
   the config's ``train`` section (Ray Train) and register it, tagged ``semisep.nightly``;
3. promote it through the gate (``evaluation/promote.py``) unless the gate has already ruled on it.

Every step is idempotent, so a night that crashed half way finishes on the next run without
training twice: a registered but ungated version is gated, a gated one ends the night.
"""

from __future__ import annotations

from dataclasses import dataclass

from semisep.pipeline.config import Config

NIGHTLY_TAG = "semisep.nightly"


@dataclass
class NightlyReport:
    dataset_version: str
    ingest_summary: str
    trained_run_id: str | None = None
    version: str | None = None
    decision: object | None = None  # semisep.evaluation.promote.Decision
    failed_ingestion: bool = False


def nightly_versions(cfg: Config, dataset_version: str, pseudo_version: str = "") -> list:
    """Registered nightly versions of ``mlflow.registered_model`` trained on ``dataset_version`` of
    this store (its table id: a store made anew counts its versions from 0 again) and, with
    pseudo-labels, on the label set ``pseudo_version``."""
    from semisep.pipeline.table import table_id

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from semisep.evaluation.registry import is_absent, registry_error

    client = MlflowClient(tracking_uri=cfg.tracking_uri)
    try:
        found = client.search_model_versions(f"name='{cfg.mlflow.registered_model}'")
    except MlflowException as exc:
        if is_absent(exc):
            return []
        # not "no nightly model": that would train again; the registry could not be read
        raise registry_error(cfg.tracking_uri, f"the versions of {cfg.mlflow.registered_model!r}", exc) from None
    store = table_id(cfg.data.shards_dir)
    return sorted((v for v in found if v.tags.get(NIGHTLY_TAG) == "true"
                   and v.tags.get("semisep.dataset_version") == dataset_version
                   and v.tags.get("semisep.store_id", store) == store
                   and v.tags.get("semisep.pseudo_version", "") == pseudo_version), key=lambda v: int(v.version))


def refresh_pseudo_labels(cfg: Config, say=print) -> tuple[Config, str]:
    """With train.pseudo > 0: label the unpaired mixtures with the current teacher (the champion by
    default), relabelling everything when the teacher changed and only new mixtures otherwise.
    Returns the config to train with (no pseudo-labels while there is no champion yet) and the
    label set's version."""
    from semisep.evaluation.pseudo_labels import label_mixtures, resolve_teacher
    from semisep.evaluation.registry import champion_version

    if cfg.train.pseudo <= 0:
        return cfg, ""
    name = cfg.mlflow.registered_model
    if cfg.pseudo.teacher == "champion" and champion_version(cfg.tracking_uri, name) is None:
        say(f"  no champion to pseudo-label with yet: training this night without pseudo-labels ({name!r} "
            f"has no champion in {cfg.tracking_uri})")
        plain = Config.from_dict(cfg.to_dict())
        plain.train.pseudo = 0.0
        return plain, ""
    teacher, model_dir, run_id = resolve_teacher(cfg)
    report = label_mixtures(cfg, model_dir, teacher, run_id, say=lambda line: say(f"  {line}"))
    return cfg, report.version


def nightly(cfg: Config, say=print) -> NightlyReport:
    from semisep.evaluation.promote import TAG, promote
    from semisep.pipeline.ingest import format_report, ingest, vacuum
    from semisep.evaluation.registry import register
    from semisep.evaluation.registry import log_model
    from semisep.progress import TrainProgress, console_mode
    from semisep.training.train import train

    say("[1/3] ingest")
    ingested = ingest(cfg, progress=False)
    report = NightlyReport(ingested.dataset_version, format_report(ingested))
    say(report.ingest_summary)
    if ingested.failed_share > cfg.data.max_failed_share:
        report.failed_ingestion = True
        say(f"stopping: {ingested.failed_tracks} of {ingested.tracks} tracks failed (more than "
            f"data.max_failed_share={cfg.data.max_failed_share}); fix or remove them, then rerun")
        return report

    deleted = vacuum(cfg)
    if any(deleted.values()):
        say(f"  vacuum: {', '.join(f'{len(v)} {k} files' for k, v in deleted.items())} no version younger than "
            f"data.retention_days={cfg.data.retention_days:g} needs, deleted")
    cfg, pseudo_version = refresh_pseudo_labels(cfg, say)
    version = ingested.dataset_version
    existing = nightly_versions(cfg, version, pseudo_version)
    gated = [v for v in existing if v.tags.get(TAG + "decision")]
    if gated:
        v = gated[-1]
        say(f"[2/3] no new data: dataset version {version} was already trained (run {v.tags.get('semisep.run_id')}) "
            f"and gated as {cfg.mlflow.registered_model} version {v.version} "
            f"({v.tags[TAG + 'decision']} on {v.tags.get(TAG + 'evaluated_at', '?')}); nothing to train")
        report.version = v.version
        return report
    if existing:
        report.version = existing[-1].version
        say(f"[2/3] dataset version {version}: version {report.version} was trained and registered by an earlier "
            "run that stopped before the gate; gating it now")
    else:
        name = f"nightly-{version[:8]}"
        say(f"[2/3] dataset version {version} has no nightly model: training {name}")
        progress = TrainProgress(name, cfg.train.max_steps, console_mode(False))  # a line per validation in the log
        try:
            result = train(cfg, name, tags={NIGHTLY_TAG: "true"}, log_model=log_model, on_progress=progress)
        finally:
            progress.close()
        report.trained_run_id = result.run_id
        say(f"  {result.summary()}; "
            f"MLflow run {result.run_id}")
        report.version = register(cfg.tracking_uri, cfg.mlflow.registered_model, result.run_id, {NIGHTLY_TAG: "true"})
        say(f"  registered as {cfg.mlflow.registered_model} version {report.version}")
    say("[3/3] promotion gate")
    report.decision = promote(cfg, report.version)
    say(report.decision.summary())
    return report
