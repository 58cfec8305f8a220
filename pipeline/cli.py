"""The ``semisep`` command: one sub-command per stage, all driven by one YAML config.

Errors a user can fix end as one line ``semisep: error: <file or setting>: <problem>`` with a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.errors import AudioError, SemisepError

EXIT_ERROR = 1
EXIT_INGEST_FAILURES = 3

EPILOG = """Settings come from --config (YAML) and --set overrides, e.g.
  semisep train --config configs/demo.yaml --set train.alpha=0 --set train.beta=0
See configs/demo.yaml for every section (transform, data, model, train, eval, mlflow, ray, demo)."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=None, help="YAML config file (default: built-in defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set train.max_steps=200 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semisep", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Semi-supervised adversarial singing-voice separation (Stoller et al., ICASSP 2018): "
                    "Ray Data ingestion, Ray Train training, museval evaluation, MLflow tracking.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="run every stage on generated demo audio and print an SDR table",
                       description="Generate the demo corpus, ingest it with Ray Data, train the supervised "
                                   "baseline and the semi-supervised model with Ray Train, evaluate both with "
                                   "museval, log everything to MLflow and print the results table.")
    _common(p)
    p.set_defaults(config_default="configs/demo.yaml")

    p = sub.add_parser("generate-demo", help="write the demo corpus only",
                       description="Write the synthetic two-domain demo corpus to DEST (deterministic by demo.seed).")
    _common(p)
    p.add_argument("dest", help="folder to write the corpus into")

    p = sub.add_parser("ingest", help="audio corpora -> Parquet spectrogram shards (Ray Data)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Scan data.corpora (layouts: musdb18, musdb18hq, dsd100, medleydb, ccmixter, "
                                   "ikala, folder), compute log-magnitude excerpts with the shared transform and\n"
                                   "write one Parquet shard per track under <workdir>/shards, plus manifest.parquet "
                                   "(one row per source file).\n\n"
                                   "Incremental: files unchanged since the last run (size, mtime) are not read again; "
                                   "changed files get new shards,\nand shards of changed or deleted files are removed "
                                   "after the new manifest is written. Bad files are recorded with\ntheir reason and "
                                   "skipped. One ingestion per store at a time (lock file).\n\n"
                                   "Exit status: 0 every valid file ingested; "
                                   f"{EXIT_INGEST_FAILURES} more than data.max_failed_share of the files failed;\n"
                                   f"{EXIT_ERROR} a configuration error or the store is locked by another ingestion.")
    _common(p)

    p = sub.add_parser("train", help="train a separator with Ray Train, tracked in MLflow",
                       description="Train on the shards with Ray Train (train.num_workers workers). alpha = beta = 0 "
                                   "is the supervised baseline. The best model (lowest validation loss) is written "
                                   "to <workdir>/models/<name>.")
    _common(p)
    p.add_argument("--name", default=None, help="run and model name (default: 'supervised' or 'semi-supervised')")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint of this run name")

    p = sub.add_parser("evaluate", help="score models on the test split with museval (BSS Eval v4)",
                       description="Separate eval.split of eval.corpus with each model, score with museval, write "
                                   "per-track JSON, summary.csv, results.md and a boxplot PNG per metric.")
    _common(p)
    p.add_argument("models", nargs="+", metavar="LABEL=MODEL_DIR", help="models to score, e.g. semi=work/models/semi-supervised")
    p.add_argument("-o", "--out", default=None, help="output folder (default: <workdir>/eval)")
    p.add_argument("--no-references", action="store_true", help="skip the oracle IRM and mixture rows")

    p = sub.add_parser("separate", help="split songs into vocals.wav and accompaniment.wav",
                       description="Write OUT/<name>/vocals.wav and accompaniment.wav for each input file (or every "
                                   "audio file in an input folder), at the input's rate, channels and length.")
    p.add_argument("inputs", nargs="+", help="audio files or folders")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--model", required=True, help="model folder written by `semisep train`")
    p.add_argument("--device", default=None,
                   help="where the model runs: cpu, cuda, cuda:1 ... (default: cuda when available, else cpu)")
    p.add_argument("--post-filter", choices=("softmask", "wiener"), default="softmask",
                   help="softmask (default): the model's soft mask on each channel's full-rate STFT; wiener: "
                        "multichannel Wiener filter (norbert, EM) started from the soft-mask estimates, uses the "
                        "stereo image; slower")
    p.add_argument("--mask-power", type=float, default=1.0,
                   help="softmask exponent p in V^p/(V^p+A^p): 1 ratio mask (default), 2 Wiener-like, larger is harder")
    p.add_argument("--wiener-iterations", type=int, default=1, help="EM iterations of the wiener post-filter (default 1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except SemisepError as exc:
        print(f"semisep: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("semisep: interrupted", file=sys.stderr)
        return 130


def _config(args):
    from pipeline.config import load_config

    path = args.config or getattr(args, "config_default", None)
    return load_config(path, args.overrides)


def cmd_generate(args) -> int:
    from pipeline.demo_corpus import generate_demo_corpus

    d = _config(args).demo
    info = generate_demo_corpus(args.dest, d.seed, d.track_seconds, d.paired_train, d.unpaired_per_role,
                                d.valid, d.test, d.test_in_domain)
    print(f"demo corpus at {args.dest}: {info['songs']} songs ({info['written']} written now)")
    return 0


def cmd_ingest(args) -> int:
    from pipeline.ingest import format_report, ingest

    cfg = _config(args)
    report = ingest(cfg)
    print(format_report(report))
    if report.failed_share > cfg.data.max_failed_share:
        print(f"semisep: error: {len(report.failed)} of {len(report.manifest)} files failed "
              f"(more than data.max_failed_share={cfg.data.max_failed_share})", file=sys.stderr)
        return EXIT_INGEST_FAILURES
    return 0


def cmd_train(args) -> int:
    from training.train import train

    cfg = _config(args)
    name = args.name or ("semi-supervised" if cfg.train.semi_supervised else "supervised")
    result = train(cfg, name, resume=args.resume)
    print(f"{name}: best validation loss {result.best_val_loss:.4f} at step {result.best_step} of {result.steps}"
          f"{' (early stopped)' if result.early_stopped else ''}; model in {result.model_dir}; MLflow run {result.run_id}")
    return 0


def cmd_evaluate(args) -> int:
    from evaluation.evaluate import evaluate

    cfg = _config(args)
    models = {}
    for item in args.models:
        label, _, path = item.rpartition("=")
        models[label or Path(path).name] = path
    out = args.out or os.path.join(cfg.data.workdir, "eval")
    result = evaluate(cfg, models, out, references=not args.no_references)
    print(result.table)
    print(f"per-track museval JSON, summary.csv, results.md and plots in {out}")
    return 0


def cmd_separate(args) -> int:
    from pipeline.audio import AUDIO_EXTENSIONS, load_audio
    from evaluation.separate import EstimateWriter, separate
    from training.checkpoint import load_model

    import torch
    from tqdm import tqdm

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, transform, _ = load_model(args.model)
    files = []
    for item in args.inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS and not f.name.startswith("."))
        else:
            files.append(p)
    failed = 0
    bar = tqdm(files, desc="songs", unit="song", disable=len(files) < 2)
    for path in bar:
        is_stem = path.name.endswith(".stem.mp4")
        name = path.name[: -len(".stem.mp4")] if is_stem else path.stem
        writer = None
        try:
            # a MUSDB18 .stem.mp4 holds the mixture as its first stream
            audio, sr = load_audio(path, stream=0 if is_stem else None)
            writer = EstimateWriter(Path(args.out) / name, audio, sr)
            separate(model, transform, audio, sr, power=args.mask_power, device=device, progress=True,
                     post_filter=args.post_filter, wiener_iterations=args.wiener_iterations, sink=writer)
            writer.close()
        except (AudioError, SemisepError) as exc:
            if writer is not None:
                writer.abort()
            where, reason = (exc.path, exc.reason) if isinstance(exc, AudioError) else (path, exc)
            bar.write(f"semisep: error: {where}: {reason}", file=sys.stderr)
            failed += 1
            continue
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        bar.write(f"{path} -> {Path(args.out) / name}/{{vocals,accompaniment}}.wav")
    return EXIT_ERROR if failed else 0


def cmd_demo(args) -> int:
    from evaluation.evaluate import evaluate
    from pipeline.demo_corpus import generate_demo_corpus
    from pipeline.ingest import format_report, ingest
    from training.train import train

    cfg = _config(args)
    d = cfg.demo
    corpus_root = Path(cfg.data.workdir) / "demo_corpus"
    print(f"[1/5] generating demo corpus in {corpus_root}")
    generate_demo_corpus(corpus_root, d.seed, d.track_seconds, d.paired_train, d.unpaired_per_role,
                         d.valid, d.test, d.test_in_domain)
    print("[2/5] ingesting with Ray Data")
    print(format_report(ingest(cfg)))
    results = {}
    for step, (label, alpha, beta) in enumerate((("supervised", 0.0, 0.0),
                                                 ("semi-supervised", cfg.train.alpha, cfg.train.beta)), start=3):
        print(f"[{step}/5] training {label} (alpha={alpha}, beta={beta}) with Ray Train")
        run_cfg = _config(args)
        run_cfg.train.alpha, run_cfg.train.beta = alpha, beta
        results[label] = train(run_cfg, label)
        r = results[label]
        print(f"  best validation loss {r.best_val_loss:.4f} at step {r.best_step} of {r.steps}")
    print("[5/5] evaluating on the out-of-domain test set with museval")
    out = os.path.join(cfg.data.workdir, "eval")
    result = evaluate(cfg, {k: v.model_dir for k, v in results.items()}, out,
                      run_ids={k: v.run_id for k, v in results.items()})
    print()
    print(f"BSS Eval v4 ({cfg.eval.protocol} protocol), dB, median over 1 s frames then median/mean over tracks:")
    print(result.table)
    print(f"\nmuseval JSON, results.md and boxplots: {out}")
    print(f"models: {os.path.join(cfg.data.workdir, 'models')}")
    print(f"look at the runs: .venv/bin/mlflow ui --backend-store-uri {cfg.tracking_uri}")
    return 0


COMMANDS = {"demo": cmd_demo, "generate-demo": cmd_generate, "ingest": cmd_ingest, "train": cmd_train,
            "evaluate": cmd_evaluate, "separate": cmd_separate}

if __name__ == "__main__":
    sys.exit(main())
