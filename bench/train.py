"""Training speed: today's step against the 2026-11-27 step and against the full Ray Train job, in one run.

(a0) baseline: the step as it was on 2026-11-27 (bench/reference_step.py), on in-memory batches;
(a) plain: ``semisep.training.step.train_step`` on the same in-memory batches, no Ray, no data loading
    (torch + numpy only, so it also runs on a machine without Ray: ``--plain-only``); (a0) and
    (a) are timed in alternating slices (5 rounds of 2 x --seconds / 5 each), and (a)/(a0) is the
    median of the per-round ratios: a shared VM's speed drifts by 20% within a minute;
(b) ray: ``semisep train`` (Ray Train, 1 worker, the demo corpus's Parquet shards) with the same
    config: its steady-state rate is the median of the ``steps_per_s`` it reports per validation
    window after the first (validation and checkpointing excluded); its end-to-end rate counts
    everything; (b)/(a) divides by the mean of (a) before and after the job. Printed apart: Ray Train's start-up (driver call to the worker's first step) and
    the share of training time spent on validation, figures and checkpoints.

Then the precision question: (a) in fp32 and under bf16 autocast in alternating slices (steps/s
and their ratio), and ``--quality-steps`` supervised steps of ``semisep train`` on the demo corpus
in each precision for ``--quality-seeds``: the validation vocal SDR at the same step, beside the
seeds' own spread (bf16 must not cost more than seed noise).

Both for the supervised baseline and the semi-supervised model (n_critic critic updates per
separator step). bench/gpu.py is the GPU-box variant (torch + numpy only, paper config).

    .venv/bin/python bench/train.py                      # demo config, CPU: baseline, plain and Ray
    python bench/train.py --plain-only --paper --device cuda   # paper config on a GPU
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # the console keeps the table

import torch  # noqa: E402

from bench.step_timing import DEMO, PAPER, interleaved, interleaved_precisions, time_step, variant  # noqa: E402
from semisep.pipeline.config import Config  # noqa: E402
from semisep.training.step import native_bf16_cpu, resolve_precision  # noqa: E402


def ray_rates(cfg: Config, name: str) -> dict[str, float]:
    """Steady-state and end-to-end steps/s, start-up seconds and the validation share of a Ray job."""
    from mlflow import MlflowClient

    from semisep.training.train import train

    start = time.perf_counter()
    result = train(cfg, name)
    total = time.perf_counter() - start
    client = MlflowClient(cfg.tracking_uri)
    history = lambda key: [m.value for m in sorted(client.get_metric_history(result.run_id, key), key=lambda m: m.step)]  # noqa: E731
    windows = history("steps_per_s")[1:] or history("steps_per_s")
    train_s, overhead_s = sum(history("train_window_s")), sum(history("validation_overhead_s"))
    return {"steady": statistics.median(windows), "end_to_end": result.steps / total,
            "startup": history("ray_startup_s")[0], "validation_share": overhead_s / train_s}


def precision_quality(overrides: list[str], cfg: Config, steps: int, seeds: list[int]) -> dict[str, list[float]]:
    """Validation vocal SDR after ``steps`` steps of ``semisep train`` on the demo store, per
    precision (fp32, bf16), one training per seed: the seeds' spread is the noise a precision's
    difference is judged against."""
    from mlflow import MlflowClient

    from semisep.pipeline.config import load_config
    from semisep.training.train import train

    out: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for seed in seeds:
        for precision in out:
            run_cfg = load_config("configs/demo.yaml", overrides)
            for section in ("model", "train"):
                for k, v in cfg.to_dict()[section].items():
                    setattr(getattr(run_cfg, section), k, v)
            t = run_cfg.train
            t.precision, t.seed, t.max_steps, t.val_every, t.patience = precision, seed, steps, steps, 10**6
            result = train(run_cfg, f"bench-{precision}-seed{seed}")
            (last,) = MlflowClient(run_cfg.tracking_uri).get_metric_history(result.run_id, "val_sdr")
            out[precision].append(last.value)
    return out


def prepare_demo_store(workdir: Path, cpus: int, excerpt_frames: int) -> list[str]:
    """Demo corpus + shards for the Ray job (kept between runs); returns the config overrides."""
    from semisep.pipeline.config import load_config
    from semisep.pipeline.demo_corpus import generate_demo_corpus
    from semisep.pipeline.ingest import ingest

    corpus = workdir / "corpus"
    generate_demo_corpus(corpus, seed=0, track_seconds=20, paired_train=6, unpaired_per_role=6, valid=2, test=0,
                         test_in_domain=0, progress=False)
    overrides = [f"data.workdir={workdir / f'frames{excerpt_frames}'}", f"ray.num_cpus={cpus}",
                 "mlflow.experiment=bench-train", f"data.excerpt_frames={excerpt_frames}",
                 f"data.corpora=[{{name: paired, path: {corpus / 'paired'}}}, {{name: target, path: {corpus / 'target'}}},"
                 f" {{name: unpaired, path: {corpus / 'unpaired'}, format: folder, use: unpaired}}]"]
    ingest(load_config("configs/demo.yaml", overrides), progress=False)
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper", action="store_true", help="the paper's config (batch 64, 64 frames, 16 filters)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--plain-only", action="store_true", help="only (a0) and (a): torch + numpy, no Ray")
    parser.add_argument("--seconds", type=float, default=20.0, help="timing window of each plain step")
    parser.add_argument("--steps", type=int, default=200, help="separator steps of each Ray job")
    parser.add_argument("--val-every", type=int, default=25, help="validation interval of the Ray jobs (the demo's)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="precision of (a0), (a) and (b); the fp32-vs-bf16 table times both anyway")
    parser.add_argument("--quality-steps", type=int, default=300,
                        help="steps of each fp32 / bf16 training whose validation SDR is compared (0: none)")
    parser.add_argument("--quality-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--compile", action="store_true", help="torch.compile the separator")
    parser.add_argument("--rounds", type=int, default=5, help="alternating slices of each timing (fewer: a smoke run)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--batch-size", type=int, default=None,
                        help="another batch than the config's (a smoke run: CI's test uses 4; figures use the config's)")
    parser.add_argument("--workdir", default="work/bench/train")
    args = parser.parse_args()

    base = PAPER if args.paper else DEMO
    extra = {"train": {"precision": args.precision, "compile": args.compile, "cpus_per_worker": args.cpus}}
    if args.batch_size:
        extra["train"]["batch_size"] = args.batch_size
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {args.cpus} threads"
    torch.set_num_threads(args.cpus)
    rows = []
    overrides = None
    for semi in (False, True):
        cfg = variant(base, semi, extra)
        kind = "semi-supervised" if semi else "supervised"
        timed = interleaved(cfg, args.device, 2 * args.seconds, rounds=args.rounds)
        _, memory = time_step(cfg, args.device, 1.0, "current") if args.device.startswith("cuda") else (0, 0.0)
        row = {"kind": kind, "baseline": timed["reference"], "plain": timed["current"], "speedup": timed["ratio"],
               "memory": memory, "batch": cfg.train.batch_size}
        if not args.plain_only:
            from semisep.pipeline.config import load_config

            overrides = overrides or prepare_demo_store(Path(args.workdir), args.cpus, cfg.data.excerpt_frames)
            ray_cfg = load_config("configs/demo.yaml", overrides)
            for section in ("model", "train"):  # transform: the same in both
                for k, v in cfg.to_dict()[section].items():
                    setattr(getattr(ray_cfg, section), k, v)
            ray_cfg.train.max_steps, ray_cfg.train.val_every, ray_cfg.train.patience = args.steps, args.val_every, 10**6
            ray_cfg.train.use_gpu = args.device.startswith("cuda")
            row |= ray_rates(ray_cfg, f"bench-{kind}")
            # the plain step again right after the Ray job: (b)/(a) against the mean of both
            after = interleaved(cfg, args.device, args.seconds, rounds=2)["current"]
            row["plain_ray"] = (row["plain"] + after) / 2
        row["precisions"] = interleaved_precisions(cfg, args.device, 2 * args.seconds, rounds=args.rounds)
        rows.append(row)
    quality = None
    if not args.plain_only and args.quality_steps:
        overrides = overrides or prepare_demo_store(Path(args.workdir), args.cpus, base["data"]["excerpt_frames"])
        quality = precision_quality(overrides, variant(base, False, extra), args.quality_steps, args.quality_seeds)

    print(f"\ntraining benchmark: {'paper' if args.paper else 'demo'} config on {device_name}, "
          f"{args.precision}{', compiled' if args.compile else ''}, {time.strftime('%Y-%m-%d')}")
    print("| step | (a0) 2026-11-27 step/s | (a) plain steps/s | (a)/(a0) | samples/s | (b) Ray steps/s | (b)/(a) "
          "| Ray end-to-end | GPU GiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ray_cols = (f"{r['steady']:.2f} | {r['steady'] / r['plain_ray']:.2f} | {r['end_to_end']:.2f}"
                    if "steady" in r else "- | - | -")
        print(f"| {r['kind']} | {r['baseline']:.2f} | {r['plain']:.2f} | {r['speedup']:.2f} "
              f"| {r['plain'] * r['batch']:.0f} | {ray_cols} | {r['memory']:.2f} |")
    for r in rows:
        if "startup" in r:
            print(f"{r['kind']}: Ray Train start-up {r['startup']:.1f} s; validation, figures and checkpoints every "
                  f"{args.val_every} steps: {100 * r['validation_share']:.1f}% of the training time")
    print("samples/s: paired excerpts per second (the semi-supervised step also reads "
          "(n_critic + 1) x batch unpaired excerpts per role)")
    print(f"\nprecision: the current step in fp32 and under bf16 autocast, alternating slices; this processor "
          f"{'has' if native_bf16_cpu() else 'has no'} native bf16 (AVX512-BF16/AMX), so train.precision: auto "
          f"picks {resolve_precision('auto', args.device.split(':')[0])} here")
    print("| step | fp32 steps/s | bf16 steps/s | bf16 / fp32 |")
    print("|---|---:|---:|---:|")
    for r in rows:
        p = r["precisions"]
        print(f"| {r['kind']} | {p['fp32']:.2f} | {p['bf16']:.2f} | {p['ratio']:.2f} |")
    if quality:
        fp32, bf16 = quality["fp32"], quality["bf16"]
        diffs = [b - f for f, b in zip(fp32, bf16)]
        print(f"validation vocal SDR after {args.quality_steps} supervised steps (semisep train, demo corpus), "
              f"seeds {args.quality_seeds}: fp32 {', '.join(f'{v:.2f}' for v in fp32)} (mean {statistics.mean(fp32):.2f}); "
              f"bf16 {', '.join(f'{v:.2f}' for v in bf16)} (mean {statistics.mean(bf16):.2f}); bf16 - fp32 per seed "
              f"{', '.join(f'{d:+.2f}' for d in diffs)}; seed spread in fp32 {max(fp32) - min(fp32):.2f} dB")


if __name__ == "__main__":
    main()
