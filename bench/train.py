"""Training speed: the plain torch step against the full Ray Train job, in one run.

(a) plain: ``training.step.train_step`` on in-memory batches, no Ray, no data loading
    (torch + numpy only, so it also runs on a machine without Ray: ``--plain-only``);
(b) ray: ``semisep train`` (Ray Train, 1 worker, Parquet shards through Ray Data) with the same
    config; its steady-state rate is the median of the ``steps_per_s`` it reports per validation
    window (validation and checkpointing excluded), its end-to-end rate counts everything.

Both for the supervised baseline and the semi-supervised model (n_critic critic updates per
separator step). Prints separator steps/s, paired samples/s, the ratio (b)/(a), and peak GPU memory
on CUDA.

    .venv/bin/python bench/train.py                      # demo config, CPU, plain and Ray
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

import torch  # noqa: E402

from pipeline.config import Config  # noqa: E402

# The paper's setting (configs/paper.yaml), as plain values so no YAML reader is needed.
PAPER = {"transform": {"sample_rate": 8192, "n_fft": 512, "hop_length": 256, "freq_bins": 256},
         "data": {"excerpt_frames": 64},
         "model": {"depth": 4, "base_channels": 16, "critic_channels": 16, "critic_layers": 4},
         "train": {"batch_size": 64, "n_critic": 5, "lr": 5e-5, "critic_lr": 5e-5, "alpha": 0.001, "beta": 0.001}}
# configs/demo.yaml's model and batch: what the CPU demo trains
DEMO = {"transform": PAPER["transform"], "data": {"excerpt_frames": 32},
        "model": {"depth": 4, "base_channels": 8, "critic_channels": 8, "critic_layers": 4},
        "train": {"batch_size": 16, "n_critic": 5, "lr": 1e-3, "critic_lr": 1e-3, "alpha": 0.001, "beta": 0.001}}


def variant(base: dict, semi: bool, extra: dict | None = None) -> Config:
    raw = {k: dict(v) for k, v in base.items()}
    if not semi:
        raw["train"].update(alpha=0.0, beta=0.0)
    for section, values in (extra or {}).items():
        raw.setdefault(section, {}).update(values)
    return Config.from_dict(raw)


def plain_rate(cfg: Config, device: str, seconds: float, threads: int) -> tuple[float, float]:
    """Separator steps per second of the bare step; and peak GPU memory in GiB (0 on CPU)."""
    from training.step import batches_from_arrays, build_models, train_step

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    models = build_models(cfg, device)
    shape = (max(256, cfg.train.batch_size * 4), cfg.transform.freq_bins, cfg.data.excerpt_frames)
    data = {k: (torch.rand(shape) * 2).to(device) for k in ("mixture", "vocals", "accompaniment")}
    batches = batches_from_arrays(data, cfg.train.batch_size, seed=0)
    step = lambda: train_step(models, lambda: next(batches), lambda: next(batches), cfg)  # noqa: E731
    for _ in range(3):  # warm-up: allocator, cudnn autotuning, compile
        step()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    sync()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 5:
        step()
        n += 1
    sync()
    rate = n / (time.perf_counter() - start)
    memory = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else 0.0
    return rate, memory


def ray_rates(cfg: Config, name: str) -> tuple[float, float]:
    """(median steady-state steps/s over validation windows after the first, end-to-end steps/s)."""
    from mlflow import MlflowClient

    from training.train import train

    start = time.perf_counter()
    result = train(cfg, name)
    total = time.perf_counter() - start
    history = MlflowClient(cfg.tracking_uri).get_metric_history(result.run_id, "steps_per_s")
    windows = [m.value for m in sorted(history, key=lambda m: m.step)][1:] or [history[0].value]
    return statistics.median(windows), result.steps / total


def prepare_demo_store(workdir: Path, cpus: int, excerpt_frames: int) -> list[str]:
    """Demo corpus + shards for the Ray job (kept between runs); returns the config overrides."""
    from pipeline.config import load_config
    from pipeline.demo_corpus import generate_demo_corpus
    from pipeline.ingest import ingest

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
    parser.add_argument("--plain-only", action="store_true", help="only (a): needs torch + numpy, no Ray")
    parser.add_argument("--seconds", type=float, default=20.0, help="timing window of the plain step")
    parser.add_argument("--steps", type=int, default=150, help="separator steps of each Ray job")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--compile", action="store_true", help="torch.compile the separator")
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--workdir", default="work/bench/train")
    args = parser.parse_args()

    base = PAPER if args.paper else DEMO
    extra = {"train": {"precision": args.precision, "compile": args.compile}}
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {args.cpus} threads"
    rows = []
    overrides = None
    for semi in (False, True):
        cfg = variant(base, semi, extra)
        kind = "semi-supervised" if semi else "supervised"
        plain, memory = plain_rate(cfg, args.device, args.seconds, args.cpus)
        row = {"kind": kind, "plain": plain, "memory": memory, "batch": cfg.train.batch_size}
        if not args.plain_only:
            from pipeline.config import load_config

            overrides = overrides or prepare_demo_store(Path(args.workdir), args.cpus, cfg.data.excerpt_frames)
            ray_cfg = load_config("configs/demo.yaml", overrides)
            for section in ("model", "train"):  # transform: the same in both
                for k, v in cfg.to_dict()[section].items():
                    setattr(getattr(ray_cfg, section), k, v)
            ray_cfg.train.max_steps, ray_cfg.train.val_every, ray_cfg.train.patience = args.steps, 25, 10**6
            ray_cfg.train.use_gpu = args.device.startswith("cuda")
            row["steady"], row["end_to_end"] = ray_rates(ray_cfg, f"bench-{kind}")
        rows.append(row)

    print(f"\ntraining benchmark: {'paper' if args.paper else 'demo'} config on {device_name}, "
          f"{args.precision}{', compiled' if args.compile else ''}")
    print(f"{'':16} {'plain steps/s':>14} {'samples/s':>10} {'Ray steps/s':>12} {'ratio':>6} {'Ray end-to-end':>15} {'GPU GiB':>8}")
    for r in rows:
        ray_cols = (f"{r['steady']:12.2f} {r['steady'] / r['plain']:6.2f} {r['end_to_end']:15.2f}"
                    if "steady" in r else f"{'-':>12} {'-':>6} {'-':>15}")
        print(f"{r['kind']:16} {r['plain']:14.2f} {r['plain'] * r['batch']:10.0f} {ray_cols} {r['memory']:8.2f}")
    print("samples/s: paired excerpts per second (the semi-supervised step also reads "
          "(n_critic + 1) x batch unpaired excerpts per role)")


if __name__ == "__main__":
    main()
