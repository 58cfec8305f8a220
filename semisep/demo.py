"""``semisep demo``: every stage once on generated audio, through the functions the commands call.

generate (``semisep generate-demo``) -> ingest (``semisep ingest``) -> train the supervised
baseline and the default model of the config (``semisep train``) -> score both with museval
beside the references (``semisep evaluate``) -> register the default model and put it through
the promotion gate (``semisep promote``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from semisep.pipeline.config import Config


@dataclass
class DemoResult:
    table: str
    version: str
    decision: object  # semisep.evaluation.promote.Decision


def baseline_of(cfg: Config) -> Config:
    """The supervised baseline of a config: no critics, no remix, everything else the same."""
    base = Config.from_dict(cfg.to_dict())
    base.train.alpha = base.train.beta = base.train.remix = 0.0
    return base


def run_demo(cfg: Config, say=print) -> DemoResult:
    from semisep.evaluation.evaluate import evaluate
    from semisep.evaluation.promote import promote
    from semisep.evaluation.registry import log_model, register
    from semisep.pipeline.demo_corpus import generate
    from semisep.pipeline.ingest import format_report, ingest
    from semisep.progress import TrainProgress
    from semisep.training.tracking import run_kind
    from semisep.training.train import train

    corpus_root = Path(cfg.data.workdir) / "demo_corpus"
    say(f"[1/6] generating the {cfg.demo.generator} demo corpus in {corpus_root}")
    generate(corpus_root, cfg.demo, progress=False)
    say("[2/6] ingesting with Ray Data")
    say(format_report(ingest(cfg, progress=False)))
    runs = {"supervised": baseline_of(cfg), run_kind(cfg): cfg}
    results = {}
    for step, (label, run_cfg) in enumerate(runs.items(), start=3):
        t = run_cfg.train
        say(f"[{step}/6] training {label} (alpha {t.alpha:g}, beta {t.beta:g}, remix {t.remix:g}) with Ray Train")
        # a live bar on a terminal; in a log, the demo's console stays its own lines
        progress = TrainProgress(label, t.max_steps, "bar" if sys.stdout.isatty() else "off")
        try:
            results[label] = train(run_cfg, label, log_model=log_model, on_progress=progress)
        finally:
            progress.close()
        say(f"  {results[label].summary()}")
    say(f"[5/6] evaluating on {cfg.eval.corpus}/{cfg.eval.split} with museval")
    out = os.path.join(cfg.data.workdir, "eval")
    scored = evaluate(cfg, {k: v.model_dir for k, v in results.items()}, out,
                      run_ids={k: v.run_id for k, v in results.items()}, progress=False,
                      excerpts_by=run_kind(cfg))  # the excerpts are those of the model the demo registers
    say("")
    say(f"BSS Eval v4 ({cfg.eval.protocol} protocol), dB, median over 1 s frames then median/mean over tracks:")
    say(scored.table)
    say(f"museval JSON, results.md, boxplots and report.html: {out}")
    chosen = results[run_kind(cfg)]
    page = os.path.abspath(os.path.join(out, "report.html"))
    version = register(cfg.tracking_uri, cfg.mlflow.registered_model, chosen.run_id, report=page)
    say(f"[6/6] registered {run_kind(cfg)} as {cfg.mlflow.registered_model} version {version}; promotion gate "
        f"(candidate and champion measured on {cfg.eval.corpus}/{cfg.promote.split}):")
    decision = promote(cfg, version)
    say(decision.summary())
    say(f"separate your songs with it: .venv/bin/semisep separate song.wav -o separated")
    say(f"look at the runs: .venv/bin/mlflow ui --backend-store-uri {cfg.tracking_uri}")
    say(f"read, look and listen (tables, plots, excerpts of every model): {page}")
    return DemoResult(scored.table, version, decision)
