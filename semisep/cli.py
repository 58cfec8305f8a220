"""The ``semisep`` command: one sub-command per stage, all driven by one YAML config.

Errors a user can fix end as one line ``semisep: error: <file or setting>: <problem>`` with a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from semisep.pipeline.errors import AudioError, SemisepError

EXIT_ERROR = 1
EXIT_INGEST_FAILURES = 3
EXIT_REFUSED = 4

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
                                   "write one Parquet shard per track under data.store (default <workdir>/shards): a Delta Lake "
                                   "table whose version is the\ndataset version, plus its manifest (one row per source "
                                   "file, the _sources table).\n\n"
                                   "Incremental: files unchanged since the last run (size, mtime) are not read again; "
                                   "changed files get new shards.\nA run that changes anything is one commit (a new "
                                   "version): training runs pin a version and keep reading it;\nshards of changed or "
                                   "deleted files leave the new version and stay on disk until `semisep vacuum` (run by\n"
                                   "the nightly job) deletes them after data.retention_days. Bad files are recorded "
                                   "with their reason and\nskipped. One ingestion per store at a time (lock file).\n\n"
                                   "Exit status: 0 every valid file ingested; "
                                   f"{EXIT_INGEST_FAILURES} more than data.max_failed_share of the tracks failed;\n"
                                   f"{EXIT_ERROR} a configuration error or the store is locked by another ingestion.")
    _common(p)

    p = sub.add_parser("vacuum", help="delete shard files no version younger than data.retention_days needs",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Every ingest and relabel is a new version of the store's Delta tables; files a "
                                   "newer version replaced stay\non disk so that runs pinned to older versions keep "
                                   "reading them. This deletes the files of versions replaced\nmore than "
                                   "data.retention_days (default 7) ago, in the shard store and the pseudo-label store. "
                                   "A run pinned\nto such a version (data.version=N) is then refused with a message "
                                   "naming it. The nightly job runs it.\n\n"
                                   "Example:\n  semisep vacuum --config configs/demo.yaml --set data.retention_days=3")
    _common(p)

    p = sub.add_parser("convert-store", help="turn a shard store made before versioned tables into one (no re-decoding)",
                       description="A store written by semisep before 2026-12-07 has manifest.parquet and no "
                                   "_delta_log; every command refuses it, naming this one. This commits its shards "
                                   "as version 0 of a Delta table and its manifest as the _sources table.")
    _common(p)

    p = sub.add_parser("train", help="train a separator with Ray Train, tracked in MLflow",
                       description="Train on the shards with Ray Train (train.num_workers workers). alpha = beta = 0 "
                                   "is the supervised baseline. The best model (lowest validation loss) is written "
                                   "to <workdir>/models/<name>.")
    _common(p)
    p.add_argument("--name", default=None, help="run and model name (default: 'supervised' or 'semi-supervised')")
    p.add_argument("--register", action="store_true",
                   help="register the trained model as a new version of mlflow.registered_model (a candidate "
                        "for `semisep promote`)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint of this run name")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="print only the final line (default: a live progress bar on a terminal, else one line "
                        "per validation: step, steps/s, time left, losses, validation SDR)")

    p = sub.add_parser("evaluate", help="score models on the test split with museval (BSS Eval v4)",
                       description="Separate eval.split of eval.corpus with each model, score with museval, write "
                                   "per-track JSON, summary.csv, results.md and a boxplot PNG per metric.")
    _common(p)
    p.add_argument("models", nargs="+", metavar="LABEL=MODEL_DIR", help="models to score, e.g. semi=work/models/semi-supervised")
    p.add_argument("-o", "--out", default=None, help="output folder (default: <workdir>/eval)")
    p.add_argument("--no-references", action="store_true", help="skip the oracle IRM and mixture rows")
    p.add_argument("--excerpts-by", metavar="LABEL", default=None,
                   help="report.html's excerpts to listen to are the median and worst songs of this model "
                        "(default: the first model given)")

    p = sub.add_parser("separate", help="split songs into vocals.wav and accompaniment.wav",
                       description="Write OUT/<name>/vocals.wav and accompaniment.wav for each input file (or every "
                                   "audio file in an input folder, named by its path there; MUSDB-style <track>/mixture.wav "
                                   "keeps the track's name), at the input's rate, channels and length. Exit status: 0 every "
                                   "song separated, 1 some failed (each said in one line) or an error.")
    p.add_argument("inputs", nargs="+", help="audio files or folders")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--model", default=None,
                   help="model folder written by `semisep train`, or an MLflow model URI: models:/NAME@champion, "
                        "models:/NAME/VERSION, runs:/RUN_ID/separator (tracking URI from --config, "
                        "$MLFLOW_TRACKING_URI or <workdir>/mlflow.db). Default: the registry's champion "
                        "(mlflow.registered_model@champion), else the newest model under <workdir>/models")
    _common(p)
    p.add_argument("--device", default=None,
                   help="where the model runs: cpu, cuda, cuda:1 ... (default: cuda when available, else cpu)")
    p.add_argument("--post-filter", choices=("softmask", "wiener"), default="softmask",
                   help="softmask (default): the model's soft mask on each channel's full-rate STFT; wiener: "
                        "multichannel Wiener filter (norbert, EM) started from the soft-mask estimates, uses the "
                        "stereo image; slower")
    p.add_argument("--mask-power", type=float, default=1.0,
                   help="softmask exponent p in V^p/(V^p+A^p): 1 ratio mask (default), 2 Wiener-like, larger is harder")
    p.add_argument("--wiener-iterations", type=int, default=1, help="EM iterations of the wiener post-filter (default 1)")

    p = sub.add_parser("tune", help="Ray Tune sweep over alpha, beta, n_critic and learning rates, tracked in MLflow",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Sweep the `tune` section's ranges with Ray Tune: the supervised baseline "
                                   "(alpha = beta = 0) first, then tune.points,\nthen samples from Optuna's TPE; "
                                   "ASHA stops trials whose validation score (SDR by default) lags. Each trial runs the training loop of `semisep train` on one device and is\n"
                                   "an MLflow child run of the sweep's parent run, which gets the summary table and a "
                                   "plot of the best validation vocal SDR\nagainst alpha and beta. The best finished trial is "
                                   "registered as a candidate version of mlflow.registered_model\n(promote it with "
                                   "`semisep promote --candidate VERSION`). Ctrl-C stops the sweep; --resume continues "
                                   "it without\nrerunning finished trials.")
    _common(p)
    p.add_argument("--num-samples", type=int, default=None,
                   help="trials drawn by the searcher, after the baseline and tune.points (default: tune.num_samples)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep named tune.name")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress lines (default: one line per trial and validation: step, steps/s, time left, "
                        "best validation SDR)")

    p = sub.add_parser("pseudo-label", help="pseudo-label the unpaired mixtures with a teacher (noisy self-training)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Separate every unpaired mixture shard with a teacher model and store its estimates "
                                   "as pseudo-labelled\npairs (the most confident pseudo.keep of each song's excerpts), "
                                   "with the teacher in their manifest,\nin the pseudo-label store (train.pseudo_labels, "
                                   "default <data.store>/pseudo). Training with train.pseudo > 0\nmixes them into its "
                                   "batches and records the teacher. Unchanged mixtures keep their labels; another\n"
                                   "teacher relabels everything. The nightly job runs this when the champion changes.\n"
                                   "With several pseudo.repet_weights, the teacher's mask is blended with REPET-SIM's at "
                                   "the weight that\nseparates the validation songs best (each weight's figure is "
                                   "printed), and with several\npseudo.vocal_scales its vocal mask is scaled by "
                                   "the one that does (a teacher trained on other music can\ngive the voice too "
                                   "much), e.g.\n  semisep pseudo-label --set \"pseudo.repet_weights=[0, 0.25, 0.5, "
                                   "0.75, 1]\" --set \"pseudo.vocal_scales=[1, 0.85, 0.7]\"")
    _common(p)
    p.add_argument("--teacher", default=None, metavar="champion|MODEL",
                   help="the registry's champion (default: pseudo.teacher), or a model folder / runs:/ / models:/ URI")

    p = sub.add_parser("promote", help="gate a registered model into the 'champion' alias, or roll back",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Evaluate the candidate and the current champion of mlflow.registered_model in "
                                   "one museval run on the gate's\nsongs (promote.split of eval.corpus: songs no "
                                   "training, validation, sweep or experiment reads), apply\nthe gate in the config's "
                                   "`promote` section, tag the candidate with the decision, both models'\nnumbers and "
                                   "the reasons, and move 'champion' only if it passes (the old champion becomes\n"
                                   "'previous'). Promotions from any machines are serialised by a lease held in the "
                                   "registry\n(<registered model>.lease).\n\nExit status: 0 promoted or rolled back; "
                                   f"{EXIT_REFUSED} refused by the gate; {EXIT_ERROR} an error.")
    _common(p)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--candidate", metavar="VERSION|RUN_ID",
                       help="a version number of the registered model, or a training run id (registered if needed)")
    group.add_argument("--rollback", action="store_true", help="move 'champion' back to 'previous'")

    p = sub.add_parser("nightly", help="ingest new audio, train if the data changed, promote through the gate",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="The scheduled job (cron or a Kubernetes CronJob, through `ray job submit`):\n"
                                   "  1. incremental ingestion of data.corpora into data.store;\n"
                                   "  2. if the registry holds no nightly model of the new dataset version, train one "
                                   "(train section,\n     Ray Train) and register it as a version of "
                                   "mlflow.registered_model tagged semisep.nightly;\n"
                                   "  3. `semisep promote` that version through the gate.\n"
                                   "A night with no new or changed audio trains nothing and says so. Each step is "
                                   "idempotent: a night that\nstopped half way is finished by the next run.\n\n"
                                   "Exit status: 0 the night ran (promoted, refused by the gate, or nothing to do); "
                                   f"{EXIT_INGEST_FAILURES} more than\ndata.max_failed_share of the tracks failed "
                                   f"(nothing trained); {EXIT_ERROR} an error.")
    _common(p)

    p = sub.add_parser("experiment", help="baseline vs semi-supervised over several seeds, with CIs and a paired test",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="The paper's comparison as one command (semisep/experiment.py):\n"
                                   "  1. (experiment.generate_demo) write the demo corpus; ingest incrementally;\n"
                                   "  2. for each of experiment.seeds, train the supervised baseline (alpha = beta = 0) "
                                   "and the\n     semi-supervised model with identical architecture, initial weights, "
                                   "data order, budget and\n     early stopping, as Ray Tune trials of one device each;\n"
                                   "  3. score every model with museval on every experiment.test_sets entry;\n"
                                   "  4. report per test set the median/mean vocal and accompaniment SDR of both, the "
                                   "per-seed\n     differences, the mean improvement with a 95% CI over tracks and a "
                                   "Wilcoxon signed-rank test.\n"
                                   "Writes <workdir>/experiment/<name>/{results.md,scores.csv,improvements.csv,"
                                   "improvement.png,\nvocals_per_track.png,learning_curves.png,curves.csv}, also logged to one MLflow parent run "
                                   "whose children are the trainings.\n\n"
                                   "Examples:\n"
                                   "  semisep experiment --config configs/experiment-demo.yaml\n"
                                   "  semisep experiment --config configs/experiment-paper.yaml --set experiment.seeds=[0,1,2,3,4]")
    _common(p)
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no line per trial and validation (the stage lines, one line per finished training and the "
                        "tables stay)")
    return parser


def _interrupted(signum, frame):
    """SIGTERM (a scheduler stopping the job, ``kill``) unwinds like Ctrl-C: runs end KILLED, not RUNNING."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupted)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per model fetch is noise
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow's INFO lines (schema migrations, signatures)
    try:
        return COMMANDS[args.command](args)
    except SemisepError as exc:
        print(f"semisep: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("semisep: interrupted", file=sys.stderr)
        return 130


def _config(args):
    from semisep.pipeline.config import load_config
    from semisep.training.tracking import use_mlflow_environment

    path = args.config or getattr(args, "config_default", None)
    cfg = load_config(path, args.overrides)
    use_mlflow_environment(cfg)  # MLflow's HTTP client reads these
    return cfg


def cmd_generate(args) -> int:
    from semisep.pipeline.demo_corpus import generate

    d = _config(args).demo
    info = generate(args.dest, d)
    print(f"demo corpus at {args.dest}: {info['songs']} songs ({info['written']} written now)")
    return 0


def cmd_ingest(args) -> int:
    from semisep.pipeline.ingest import format_report, ingest

    cfg = _config(args)
    report = ingest(cfg)
    print(format_report(report))
    if report.failed_share > cfg.data.max_failed_share:
        print(f"semisep: error: {report.failed_tracks} of {report.tracks} tracks failed "
              f"(more than data.max_failed_share={cfg.data.max_failed_share})", file=sys.stderr)
        return EXIT_INGEST_FAILURES
    return 0


def cmd_convert_store(args) -> int:
    from semisep.pipeline.ingest import convert_store

    print(convert_store(_config(args)))
    return 0


def cmd_vacuum(args) -> int:
    from semisep.pipeline.ingest import vacuum

    cfg = _config(args)
    deleted = vacuum(cfg)
    for kind, paths in deleted.items():
        print(f"{kind}: {len(paths)} files deleted (replaced more than data.retention_days={cfg.data.retention_days:g} "
              "days ago)")
    return 0


def cmd_train(args) -> int:
    from semisep.evaluation.registry import log_model
    from semisep.progress import TrainProgress, console_mode
    from semisep.training.train import train

    cfg = _config(args)
    if ":/" in cfg.train.init_model:  # a registry or run URI: the workers get its local folder
        from semisep.evaluation.registry import local_model_dir

        cfg.train.init_model = local_model_dir(cfg.train.init_model, cfg.tracking_uri)
    name = args.name or ("semi-supervised" if cfg.train.semi_supervised else "supervised")
    progress = TrainProgress(name, cfg.train.max_steps, console_mode(args.quiet))
    try:
        result = train(cfg, name, resume=args.resume, log_model=log_model, on_progress=progress,
                       say=(lambda line: None) if args.quiet else None)
    finally:
        progress.close()
    print(f"{name}: {result.summary()}; model in {result.model_dir}; learning curve {result.learning_curve}; "
          f"MLflow run {result.run_id}")
    if args.register:
        from semisep.evaluation.registry import register

        version = register(cfg.tracking_uri, cfg.mlflow.registered_model, result.run_id)
        print(f"registered as {cfg.mlflow.registered_model} version {version}; "
              f"next: semisep promote --candidate {version}")
    return 0


def cmd_tune(args) -> int:
    from semisep.tune import summary_markdown, sweep

    cfg = _config(args)
    result = sweep(cfg, args.num_samples, args.resume, say=None if args.quiet else (lambda line: print(line, flush=True)))
    print(summary_markdown(result.summary))
    if result.interrupted:
        print(f"sweep {cfg.tune.name!r} interrupted with {len(result.summary)} trials recorded; continue it with "
              f"`semisep tune --config ... --resume`", file=sys.stderr)
        return 130
    print(f"sweep {cfg.tune.name!r}: MLflow parent run {result.parent_run_id}; summary and plot in {result.path}")
    if result.candidate_version:
        print(f"best finished trial registered as {cfg.mlflow.registered_model} version {result.candidate_version}; "
              f"next: semisep promote --candidate {result.candidate_version}")
    return 0


def cmd_promote(args) -> int:
    from semisep.evaluation.promote import promote, rollback

    cfg = _config(args)
    name = cfg.mlflow.registered_model
    if args.rollback:
        new, demoted = rollback(cfg)
        print(f"{name}: champion is version {new} again (version {demoted} is now 'previous')")
        return 0
    decision = promote(cfg, args.candidate)
    print(decision.summary())
    return 0 if decision.promoted else EXIT_REFUSED


def cmd_nightly(args) -> int:
    from semisep.nightly import nightly

    report = nightly(_config(args), say=lambda line: print(line, flush=True))
    return EXIT_INGEST_FAILURES if report.failed_ingestion else 0


def cmd_experiment(args) -> int:
    from semisep.experiment import run_experiment

    cfg = _config(args)
    result = run_experiment(cfg, say=lambda line: print(line, flush=True), trial_lines=not args.quiet)
    print()
    print(result.table)
    print(f"tables, per-track scores and plots: {result.out_dir}; MLflow parent run {result.parent_run_id}")
    print(f"read, look and listen: {os.path.join(result.out_dir, 'report.html')}")
    return 0


def cmd_evaluate(args) -> int:
    from semisep.evaluation.evaluate import evaluate

    cfg = _config(args)
    models = {}
    for item in args.models:
        label, _, path = item.rpartition("=")
        models[label or Path(path).name] = path
    out = args.out or os.path.join(cfg.data.workdir, "eval")
    result = evaluate(cfg, models, out, references=not args.no_references, excerpts_by=args.excerpts_by)
    print(result.table)
    print(f"per-track museval JSON, summary.csv, results.md and plots in {out}")
    if os.path.isfile(os.path.join(out, "report.html")):
        print(f"read, look and listen: {os.path.join(out, 'report.html')}")
    return 0


def cmd_separate(args) -> int:
    import torch
    from tqdm import tqdm

    from semisep.evaluation.separate import EstimateWriter, collect_inputs, separate
    from semisep.pipeline.audio import load_audio, truncation
    from semisep.training.checkpoint import load_model
    from semisep.evaluation.registry import default_model, local_model_dir

    cfg = _config(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SemisepError(f"-o {out}: a file is there; give a folder for the estimates")
    spec, why = (args.model, "given with --model") if args.model else \
        default_model(cfg.tracking_uri, cfg.mlflow.registered_model, cfg.data.workdir)
    model, transform, meta = load_model(local_model_dir(spec, cfg.tracking_uri))
    print(f"model: {spec} ({why})")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    songs = collect_inputs(args.inputs)
    failed = 0
    # a bar on a terminal only: piped, its updates would garble the per-song lines
    bar = tqdm(songs, desc="songs", unit="song", disable=True if len(songs) < 2 else None)
    for path, name in bar:
        writer = None
        try:
            # a MUSDB18 .stem.mp4 holds the mixture as its first stream
            audio, sr = load_audio(path, stream=0 if path.name.endswith(".stem.mp4") else None)
            short = truncation(path)
            if short:
                bar.write(f"semisep: warning: {path}: {short}; separating the {audio.shape[1] / sr:.2f} s it holds",
                          file=sys.stderr)
            writer = EstimateWriter(out / name, audio, sr)
            separate(model, transform, audio, sr, power=args.mask_power, device=device, progress=True,
                     post_filter=args.post_filter, wiener_iterations=args.wiener_iterations, sink=writer,
                     window_frames=meta["window_frames"])
            writer.close()
        except (AudioError, SemisepError, OSError) as exc:
            if writer is not None:
                writer.abort(root=out)
            if isinstance(exc, AudioError):
                where, reason = exc.path, exc.reason
            else:
                where, reason = path, exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            bar.write(f"semisep: error: {where}: {reason}", file=sys.stderr)
            failed += 1
            continue
        except BaseException:
            if writer is not None:
                writer.abort(root=out)
            raise
        bar.write(f"{path} -> {out / name}/{{vocals,accompaniment}}.wav")
    print(f"separated {len(songs) - failed} of {len(songs)} songs into {out}" + (f"; {failed} failed" if failed else ""))
    return EXIT_ERROR if failed else 0


def cmd_pseudo_label(args) -> int:
    from semisep.evaluation.pseudo_labels import label_mixtures, resolve_teacher

    cfg = _config(args)
    teacher, model_dir, run_id = resolve_teacher(cfg, args.teacher)
    report = label_mixtures(cfg, model_dir, teacher, run_id, say=lambda line: print(line, flush=True))
    print(f"pseudo-label store: {report.directory}")
    return 0


def cmd_demo(args) -> int:
    from semisep.demo import run_demo

    run_demo(_config(args), say=lambda line: print(line, flush=True))
    return 0


COMMANDS = {"demo": cmd_demo, "generate-demo": cmd_generate, "ingest": cmd_ingest, "train": cmd_train,
            "evaluate": cmd_evaluate, "separate": cmd_separate, "tune": cmd_tune,
            "promote": cmd_promote, "nightly": cmd_nightly, "experiment": cmd_experiment,
            "pseudo-label": cmd_pseudo_label, "vacuum": cmd_vacuum, "convert-store": cmd_convert_store}

if __name__ == "__main__":
    sys.exit(main())
