"""Where the semi-supervised step spends its time: torch.profiler over the 2026-11-27 step and today's.

Runs ``--steps`` steps of each (after 3 warm-up steps) under ``torch.profiler`` and prints, for
both, the wall time per step and the operators that take the most self time, side by side
(torch + numpy only, like bench/gpu.py). On a GPU add ``--device cuda``: the table then shows
CUDA time too.

    .venv/bin/python bench/profile_step.py                 # demo config, CPU
    python bench/profile_step.py --paper --device cuda     # the paper's config on a GPU
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

from bench.step_timing import DEMO, PAPER, build, random_batches, variant  # noqa: E402


def profiled(cfg, device: str, implementation: str, steps: int):
    torch.manual_seed(0)
    models, step_fn = build(cfg, device, implementation)
    batches = random_batches(cfg, device)
    unpaired = batches.unsupervised if cfg.train.semi_supervised else None
    for _ in range(3):
        step_fn(models, batches.supervised, unpaired, cfg)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            with record_function("step"):
                step_fn(models, batches.supervised, unpaired, cfg)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        per_step = (time.perf_counter() - start) / steps
    return per_step, prof.key_averages()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper", action="store_true", help="the paper's config (batch 64, 64 frames, 16 filters)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    cfg = variant(PAPER if args.paper else DEMO, semi=True)
    results = {impl: profiled(cfg, args.device, impl, args.steps) for impl in ("reference", "current")}
    key = "self_device_time_total" if args.device.startswith("cuda") else "self_cpu_time_total"
    print(f"semi-supervised step, {'paper' if args.paper else 'demo'} config, {args.device}, "
          f"{torch.get_num_threads()} threads, {args.steps} steps each")
    for impl, (per_step, _) in results.items():
        print(f"{impl}: {per_step * 1e3:.1f} ms per step (under the profiler)")
    tables = {impl: {e.key: (getattr(e, key), e.count) for e in events if e.key != "step"}
              for impl, (_, events) in results.items()}
    ops = sorted(set(tables["reference"]) | set(tables["current"]),
                 key=lambda k: -max(tables["reference"].get(k, (0, 0))[0], tables["current"].get(k, (0, 0))[0]))
    print(f"\n| operator | 2026-11-27 step ms/step | calls/step | today's step ms/step | calls/step |")
    print("|---|---:|---:|---:|---:|")
    for op in ops[:args.top]:
        cells = []
        for impl in ("reference", "current"):
            us, count = tables[impl].get(op, (0, 0))
            cells += [f"{us / 1e3 / args.steps:.2f}", f"{count / args.steps:.0f}"]
        print(f"| `{op}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
