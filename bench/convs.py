"""Per-layer convolution speed: torch's kernels against the phase form of training/convs.py.

For every stride-2 layer of the demo config's U-Net and critics, at the batch the semi-supervised
step runs it with, prints milliseconds and GFLOP/s of the forward pass, the input gradient
(a transposed convolution) with torch's kernel and with the phase form, and the weight gradient;
then the step's fixed cost: the semi-supervised step on tiny tensors (batch 1, 16 x 16 excerpts),
where the arithmetic is nil and what is left is per-call overhead (torch + numpy only).

    .venv/bin/python bench/convs.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.step_timing import DEMO, build, random_batches, variant  # noqa: E402
from semisep.training.convs import transposed_s2  # noqa: E402

# (name, batch, in channels, out channels, kernel, padding, input height, input width)
LAYERS = [("U-Net down 1", 32, 1, 8, 5, 2, 256, 32), ("U-Net down 2", 32, 8, 16, 5, 2, 128, 16),
          ("U-Net down 3", 32, 16, 32, 5, 2, 64, 8), ("U-Net down 4", 32, 32, 64, 5, 2, 32, 4),
          ("critic 1", 32, 1, 8, 4, 1, 256, 32), ("critic 2", 32, 8, 16, 4, 1, 128, 16),
          ("critic 3", 32, 16, 32, 4, 1, 64, 8), ("critic 4", 32, 32, 64, 4, 1, 32, 4)]


def best_ms(fn, repeats: int = 5, calls: int = 20) -> float:
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e3


def layer_rows() -> list[str]:
    rows = []
    for name, batch, c_in, c_out, k, p, h, w in LAYERS:
        x = torch.randn(batch, c_in, h, w)
        weight = torch.randn(c_out, c_in, k, k)
        g = torch.randn(batch, c_out, h // 2, w // 2)
        gflop = 2 * batch * c_out * c_in * k * k * (h // 2) * (w // 2) / 1e9
        forward = best_ms(lambda: F.conv2d(x, weight, stride=2, padding=p))
        native_dx = best_ms(lambda: F.conv_transpose2d(g, weight, stride=2, padding=p, output_padding=2 + 2 * p - k))
        phase_dx = best_ms(lambda: transposed_s2(g, weight, p))
        dw = best_ms(lambda: torch.ops.aten.convolution_backward(
            g, x, weight, None, [2, 2], [p, p], [1, 1], False, [0, 0], 1, [False, True, False]))
        rate = lambda ms: gflop / ms * 1e3  # noqa: E731
        rows.append(f"| {name} | {batch}x{c_in}x{h}x{w} -> {c_out} | {forward:.2f} ({rate(forward):.0f}) "
                    f"| {native_dx:.2f} ({rate(native_dx):.0f}) | {phase_dx:.2f} ({rate(phase_dx):.0f}) "
                    f"| {dw:.2f} ({rate(dw):.0f}) |")
    return rows


def fixed_cost_ms(implementation: str, steps: int = 40) -> float:
    cfg = variant(DEMO, semi=True, extra={"transform": {"freq_bins": 16}, "data": {"excerpt_frames": 16},
                                          "train": {"batch_size": 1}})
    torch.manual_seed(0)
    models, step_fn = build(cfg, "cpu", implementation)
    batches = random_batches(cfg, "cpu")
    return best_ms(lambda: step_fn(models, batches.supervised, batches.unsupervised, cfg), repeats=3, calls=steps // 3)


def main() -> None:
    print(f"convolutions of the demo config, CPU, {torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}: "
          "ms (GFLOP/s)")
    print("| layer | input -> channels | forward | input gradient, torch | input gradient, phase form "
          "| weight gradient |")
    print("|---|---|---:|---:|---:|---:|")
    print("\n".join(layer_rows()))
    print(f"\nfixed cost of a semi-supervised step (batch 1, 16 x 16 excerpts): 2026-11-27 step "
          f"{fixed_cost_ms('reference'):.1f} ms, today's {fixed_cost_ms('current'):.1f} ms")


if __name__ == "__main__":
    main()
