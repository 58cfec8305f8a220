"""Promotion through the MLflow model registry: measured, recorded, one at a time.

``promote`` evaluates the candidate version and the current ``champion`` in one evaluation run,
on the same test tracks (listed, hashed and tagged), with the current dataset version recorded;
numbers logged earlier are not trusted. It measures on ``promote.split`` of ``eval.corpus``
(``gate``: songs no training, validation, sweep or experiment reads, so the candidate's luck on
the songs that chose it does not count). The gate (``promote`` config section) decides; the
decision, both models' numbers and the reasons become tags of the candidate version. Only a
passing candidate moves ``champion`` (the old champion becomes ``previous``). Promotions hold a
lease in the registry itself (evaluation/lease.py) from reading the champion to moving the
aliases, so two at once, from any machines, are serialised: the second is measured against
whatever the first left as champion.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field

from semisep.pipeline.config import Config
from semisep.pipeline.errors import SemisepError

CHAMPION, PREVIOUS = "champion", "previous"
TAG = "semisep.promotion."


@dataclass
class Decision:
    version: str
    champion_before: str | None
    promoted: bool
    reasons: list[str]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # label -> {vocals, accompaniment}

    def summary(self) -> str:
        verdict = "PROMOTED to champion" if self.promoted else "REFUSED"
        lines = [f"candidate version {self.version}: {verdict}"
                 f" (champion before: {'version ' + self.champion_before if self.champion_before else 'none'})"]
        for label, s in self.scores.items():
            lines.append(f"  {label:9s} vocals SDR {s['vocals']:6.2f} dB   accompaniment SDR {s['accompaniment']:6.2f} dB"
                         " (median over tracks)")
        lines += [f"  - {r}" for r in self.reasons]
        return "\n".join(lines)


def registry_lease(cfg: Config, client, say=None):
    """Exclusive and blocking, for every process that reaches the registry: a second promotion
    waits for the first (a holder that died loses it after promote.lease_seconds)."""
    from semisep.evaluation.lease import registry_lease as lease

    return lease(client, cfg.tracking_uri, cfg.mlflow.registered_model, cfg.promote.lease_seconds,
                 say=say or (lambda line: print(line, flush=True)))


def _client(cfg: Config):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=cfg.tracking_uri)


def _alias(cfg: Config, client, name: str, alias: str) -> str | None:
    """The version ``alias`` points at; None only when the registry says there is none. Any other
    failure (server down, refused, HTTP 503) stops the promotion: taking it for "no champion"
    would let the floor alone decide and replace the champion."""
    from mlflow.exceptions import MlflowException

    from semisep.evaluation.registry import is_absent, registry_error

    try:
        return client.get_model_version_by_alias(name, alias).version
    except MlflowException as exc:
        if is_absent(exc):
            return None
        raise registry_error(cfg.tracking_uri, f"alias {alias!r} of {name!r}", exc) from None


def resolve_candidate(cfg: Config, candidate: str) -> str:
    """A version number, or a training run id (its version, registering the run's model if needed)."""
    from mlflow.exceptions import MlflowException

    from semisep.evaluation.registry import is_absent, register, registry_error

    client, name = _client(cfg), cfg.mlflow.registered_model
    if candidate.isdigit():
        try:
            return client.get_model_version(name, candidate).version
        except MlflowException as exc:
            if is_absent(exc):
                raise SemisepError(f"--candidate {candidate}: no version {candidate} of registered model {name!r}") from None
            raise registry_error(cfg.tracking_uri, f"version {candidate} of {name!r}", exc) from None
    try:
        client.get_run(candidate)
        found = [mv.version for mv in client.search_model_versions(f"name='{name}' and run_id='{candidate}'")]
    except MlflowException as exc:
        if is_absent(exc):
            raise SemisepError(f"--candidate {candidate}: neither a version of {name!r} nor an MLflow run id") from None
        raise registry_error(cfg.tracking_uri, f"run {candidate}", exc) from None
    return max(found, key=int) if found else register(cfg.tracking_uri, name, candidate)


def _median_sdr(summary, label: str) -> dict[str, float]:
    rows = summary[(summary.method == label) & (summary.metric == "SDR")].set_index("target")["median"]
    return {t: float(rows[t]) for t in ("vocals", "accompaniment")}


def gate(cfg: Config, cand: dict[str, float], champ: dict[str, float] | None) -> tuple[bool, list[str]]:
    """The decision and its reasons, from median vocal / accompaniment SDR."""
    p = cfg.promote
    if champ is None:
        ok = cand["vocals"] >= p.floor_db
        return ok, [f"no champion yet: vocals SDR {cand['vocals']:.2f} dB {'>=' if ok else '<'} floor {p.floor_db:.2f} dB"]
    gain = cand["vocals"] - champ["vocals"]
    drop = champ["accompaniment"] - cand["accompaniment"]
    vocal_ok, acc_ok = gain >= p.margin_db, drop <= p.accompaniment_tolerance_db
    reasons = [f"vocals SDR {'+' if gain >= 0 else ''}{gain:.2f} dB vs champion "
               f"({'meets' if vocal_ok else 'below'} the required +{p.margin_db:.2f} dB)",
               f"accompaniment SDR {-drop:+.2f} dB vs champion "
               f"({'within' if acc_ok else 'beyond'} the tolerated -{p.accompaniment_tolerance_db:.2f} dB)"]
    return vocal_ok and acc_ok, reasons


def gate_config(cfg: Config) -> Config:
    """The config the gate measures with: ``eval.corpus`` at ``promote.split`` (``gate`` by default)."""
    gate_cfg = Config.from_dict(cfg.to_dict())
    gate_cfg.eval.split = cfg.promote.split
    return gate_cfg


def gate_tracks(cfg: Config) -> list[str]:
    """The gate's songs (``eval.corpus`` at ``promote.split``); an error that says how to make some."""
    from semisep.evaluation.evaluate import test_tracks

    try:
        return sorted(t.track_id for t in test_tracks(cfg))
    except SemisepError as exc:
        if "has no tracks in split" not in str(exc):
            raise
        raise SemisepError(f"{exc}: the promotion gate measures on songs of their own, which no training, "
                           f"validation, sweep or experiment reads; give corpus {cfg.eval.corpus!r} a "
                           f"{cfg.eval.split!r} split (a '{cfg.eval.split}' folder, or a partition weight, e.g. "
                           f"{{train: 1, valid: 1, test: 0.5, {cfg.eval.split}: 0.5}}), or choose another with "
                           "promote.split") from None


def promote(cfg: Config, candidate: str, out_dir: str | None = None) -> Decision:
    client, name = _client(cfg), cfg.mlflow.registered_model
    version = resolve_candidate(cfg, candidate)
    gate_cfg = gate_config(cfg)
    tracks = gate_tracks(gate_cfg)
    with registry_lease(cfg, client) as lease:
        champion = _alias(cfg, client, name, CHAMPION)  # read under the lease: nobody moves it meanwhile
        if champion == version:
            return Decision(version, champion, False, [f"version {version} is already the champion"])
        if out_dir:
            return _measure_and_decide(gate_cfg, client, name, version, champion, tracks, out_dir, lease)
        with tempfile.TemporaryDirectory(prefix=f"promote-v{version}-") as tmp:
            return _measure_and_decide(gate_cfg, client, name, version, champion, tracks, tmp, lease)


def _measure_and_decide(cfg: Config, client, name: str, version: str, champion: str | None, tracks: list[str],
                        out: str, lease) -> Decision:
    """Evaluate candidate and champion on the gate's tracks, tag the decision, move the aliases."""
    from semisep.evaluation.evaluate import evaluate
    from semisep.pipeline.manifest import read_manifest
    from semisep.evaluation.registry import local_model_dir

    models = {"candidate": local_model_dir(f"models:/{name}/{version}", cfg.tracking_uri)}
    if champion:
        models["champion"] = local_model_dir(f"models:/{name}/{champion}", cfg.tracking_uri)
    result = evaluate(cfg, models, out, references=False, progress=False)
    scores = {label: _median_sdr(result.summary, label) for label in models}
    passed, reasons = gate(cfg, scores["candidate"], scores.get("champion"))
    _, dataset_version = read_manifest(cfg.data.shards_dir, missing_ok=True)
    tags = {
        "decision": "promoted" if passed else "refused",
        "reasons": "; ".join(reasons),
        "champion_before": champion or "none",
        "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "eval_protocol": cfg.eval.protocol,
        "eval_split": f"{cfg.eval.corpus}/{cfg.eval.split}",
        "eval_tracks_hash": hashlib.sha256("\n".join(tracks).encode()).hexdigest()[:16],
        "eval_tracks": str(len(tracks)),
        "dataset_version": dataset_version or "none",
        "scores": json.dumps({k: {t: round(v, 3) for t, v in s.items()} for k, s in scores.items()}),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, TAG + key, value)
    _describe_decision(client, name, version, passed, champion, reasons, scores, cfg)
    client.set_model_version_tag(name, version, "semisep.eval_protocol", cfg.eval.protocol)
    client.set_model_version_tag(name, version, "semisep.eval_summary", json.dumps(
        {f"{t}_SDR_median": round(v, 3) for t, v in scores["candidate"].items()}))
    if passed:
        from semisep.evaluation.lease import lease_lost

        lease.prove(f"the move of {CHAMPION!r} to version {version}")  # held, with promote.lease_seconds / 3 in hand
        if champion:
            client.set_registered_model_alias(name, PREVIOUS, champion)
        client.set_registered_model_alias(name, CHAMPION, version)
        if not lease.still_held():
            raise lease_lost(lease, f"the move of {CHAMPION!r} to version {version}")
    return Decision(version, champion, passed, reasons, scores)


def _describe_decision(client, name: str, version: str, passed: bool, champion: str | None, reasons: list[str],
                       scores: dict, cfg: Config) -> None:
    """The gate's decision and reasons, in words, at the end of the version's description (its model card)."""
    old = client.get_model_version(name, version).description or ""
    old = old.split("\n\n**Promotion gate**")[0].replace(
        f" Not yet through the promotion gate: `semisep promote --candidate {version}`.", "")
    measured = "; ".join(f"{label}: vocals {s['vocals']:.2f} dB, accompaniment {s['accompaniment']:.2f} dB"
                         for label, s in scores.items())
    verdict = "PROMOTED to champion" if passed else "REFUSED"
    text = (f"{old}\n\n**Promotion gate** ({time.strftime('%Y-%m-%d %H:%M')}, {cfg.eval.corpus}/{cfg.eval.split}, "
            f"median SDR over tracks, {cfg.eval.protocol} protocol): {verdict}; champion before: "
            f"{'version ' + champion if champion else 'none'}. Measured: {measured}. Why: {'; '.join(reasons)}.")
    client.update_model_version(name, version, description=text)


def rollback(cfg: Config) -> tuple[str, str]:
    """Move ``champion`` back to ``previous`` (and ``previous`` to the demoted version). Returns (new, demoted)."""
    client, name = _client(cfg), cfg.mlflow.registered_model
    with registry_lease(cfg, client) as lease:
        champion, previous = _alias(cfg, client, name, CHAMPION), _alias(cfg, client, name, PREVIOUS)
        if previous is None or champion is None:
            raise SemisepError(f"registered model {name!r} has no {'previous' if champion else 'champion'} "
                               "version to roll back to")
        lease.prove(f"the rollback of {CHAMPION!r} to version {previous}")
        client.set_registered_model_alias(name, CHAMPION, previous)
        client.set_registered_model_alias(name, PREVIOUS, champion)
        client.set_model_version_tag(name, champion, TAG + "rolled_back_at", time.strftime("%Y-%m-%dT%H:%M:%S"))
    return previous, champion
