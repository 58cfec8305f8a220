"""One command for a lent accelerator: the training step and separation at the paper's size.

Needs torch and numpy only (Ray, MLflow, librosa, soundfile and soxr may be missing; only 64 MiB
of the tree travels), so it is what a GPU box runs; ``--device cpu`` runs the same at the demo's
size (CI runs it, so it cannot rot between GPU runs). Prints one table:

- steps/s and paired samples/s of the semi-supervised and the supervised step in fp32, bf16
  (autocast), compiled (torch.compile of the separator) and replayed as one CUDA graph, with peak
  GPU memory, and the 2026-11-27 step (bench/reference_step.py) in fp32 as the named baseline;
- ``separate`` of a 3-minute 44.1 kHz stereo song: seconds and times real time;
- numerics: a critic update and a separator update on the device against the same on the CPU
  from the same weights and batches, TF32 off: the largest relative difference of the losses
  and of each parameter's gradient before the optimiser; the command fails (exit status 1) past
  the tolerance.

    bash bench/gpu.sh                 # on a CUDA machine, about 5 minutes on an H100
    python bench/gpu.py --device cpu  # small sizes, a minute or two
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.step_timing import DEMO, PAPER, time_step, variant  # noqa: E402


def step_rows(base: dict, device: str, seconds: float) -> list[dict]:
    cuda = device.startswith("cuda")
    modes = [("fp32 (2026-11-27 step)", "reference", {}, False), ("fp32", "current", {}, False)]
    if cuda:
        modes += [("bf16", "current", {"precision": "bf16"}, False),
                  ("compiled", "current", {"compile": True}, False),
                  ("CUDA graph", "current", {}, True)]
    else:
        modes += [("compiled", "current", {"compile": True}, False)]
    rows = []
    for label, implementation, train, graph in modes:
        for semi in (True, False):
            cfg = variant(base, semi, {"train": train})
            kind = "semi-supervised" if semi else "supervised"
            try:
                rate, memory = time_step(cfg, device, seconds, implementation, graph)
                rows.append({"step": kind, "mode": label, "steps/s": rate, "samples/s": rate * cfg.train.batch_size,
                             "GiB": memory, "note": ""})
            except Exception as exc:  # noqa: BLE001 - one mode failing must not lose the others' figures
                rows.append({"step": kind, "mode": label, "steps/s": float("nan"), "samples/s": float("nan"),
                             "GiB": float("nan"), "note": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"})
                traceback.print_exc()
    return rows


def separate_row(base: dict, device: str, seconds: float) -> dict:
    """Seconds to separate a generated stereo 44.1 kHz song of ``seconds``, model in eval mode."""
    from semisep.evaluation.separate import separate
    from semisep.training.step import build_separator

    cfg = variant(base, True)
    torch.manual_seed(0)
    model = build_separator(cfg).eval()
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 44100)) / 44100
    song = np.stack([0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size),
                     0.3 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(t.size)]).astype(np.float32)
    separate(model, cfg.transform, song[:, :44100 * 5], 44100, device=device, window_frames=cfg.data.excerpt_frames)
    start = time.perf_counter()
    separate(model, cfg.transform, song, 44100, device=device, window_frames=cfg.data.excerpt_frames)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    return {"seconds": wall, "x_real_time": seconds / wall}


LOSS_TOLERANCE = 1e-4  # relative, per loss
GRAD_TOLERANCE = 1e-3  # per tensor, relative to its largest CPU value (fp32, TF32 off)


def numerics_row(base: dict, device: str) -> dict:
    """The same critic update and separator update on ``device`` and on the CPU, from the same
    weights, batches and gradient-penalty draws, TF32 off: every loss and every parameter's
    gradient before the optimiser (each update from the initial weights, so no Adam step in
    between can amplify rounding). ``ok`` is False past LOSS_TOLERANCE or GRAD_TOLERANCE."""
    from bench.step_timing import random_batches
    from semisep.training.step import SOURCES, as_floats, build_models, critic_update, separator_update

    if not device.startswith("cuda"):
        return {"note": "n/a (no CUDA device)"}
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    cfg = variant(base, True)
    t = cfg.train
    eps = {s: torch.rand(t.batch_size, 1, 1, generator=torch.Generator().manual_seed(5)) for s in SOURCES}
    out = {}
    for where in ("cpu", device):
        losses, grads = {}, {}
        for update in ("critics", "separator"):
            torch.manual_seed(0)
            models = build_models(cfg, where)
            batches = random_batches(cfg, where, seed=1)
            sup, uns = batches.supervised(), batches.unsupervised()
            if update == "critics":
                losses |= as_floats(critic_update(models, uns, t.gp_lambda, eps={s: e.to(where) for s, e in eps.items()}))
                modules = models.critics
            else:
                losses |= as_floats(separator_update(models, sup, uns, t.alpha, t.beta))
                modules = {"separator": models.separator}
            grads |= {f"{m}.{k}": p.grad.detach().cpu().double() for m, mod in modules.items()
                      for k, p in mod.named_parameters() if p.grad is not None}
        out[where] = (losses, grads)
    (cpu_loss, cpu_grad), (dev_loss, dev_grad) = out["cpu"], out[device]
    loss_rel = max(abs(dev_loss[k] - cpu_loss[k]) / max(1e-6, abs(cpu_loss[k])) for k in cpu_loss)
    grad_rel = {k: float((dev_grad[k] - g).abs().max()) / max(1e-12, float(g.abs().max())) for k, g in cpu_grad.items()}
    worst = max(grad_rel, key=grad_rel.get)
    ok = loss_rel <= LOSS_TOLERANCE and grad_rel[worst] <= GRAD_TOLERANCE and cpu_grad.keys() == dev_grad.keys()
    return {"loss_rel": loss_rel, "grad_rel": grad_rel[worst], "worst": worst, "ok": ok,
            "note": (f"every loss and {len(cpu_grad)} gradient tensors; tolerance {LOSS_TOLERANCE:g} / {GRAD_TOLERANCE:g}"
                     + ("" if ok else f": FAILED (worst {worst})"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=None, help="timing window per row (default 20 on CUDA, 3 on CPU)")
    parser.add_argument("--song-seconds", type=float, default=180.0, help="length of the separated song")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    base = PAPER if cuda else DEMO
    seconds = args.seconds or (20.0 if cuda else 3.0)
    name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    started = time.perf_counter()
    rows = step_rows(base, args.device, seconds)
    sep = separate_row(base, args.device, args.song_seconds)
    num = numerics_row(base, args.device)
    size = "paper config (batch 64, 256 x 64, U-Net 16, critics 16, n_critic 5)" if cuda else \
        "demo config (batch 16, 256 x 32, U-Net 8, critics 8, n_critic 5)"
    print(f"\nbench/gpu.py on {name}, torch {torch.__version__}, {size}, {time.strftime('%Y-%m-%d')}")
    print(f"| step | mode | steps/s | paired samples/s | peak GPU GiB | x baseline | note |")
    print("|---|---|---:|---:|---:|---:|---|")
    baseline = {r["step"]: r["steps/s"] for r in rows if r["mode"].startswith("fp32 (")}
    for r in rows:
        ratio = r["steps/s"] / baseline[r["step"]] if baseline.get(r["step"]) else float("nan")
        print(f"| {r['step']} | {r['mode']} | {r['steps/s']:.2f} | {r['samples/s']:.0f} | {r['GiB']:.2f} | {ratio:.2f} | {r['note']} |")
    print(f"| separate | {args.song_seconds:.0f} s stereo 44.1 kHz song | {sep['seconds']:.2f} s | "
          f"{sep['x_real_time']:.0f}x real time | | | |")
    if "loss_rel" in num:
        print(f"| numerics | {args.device} vs CPU, a critic and a separator update | loss rel. diff {num['loss_rel']:.1e} | "
              f"gradient rel. diff {num['grad_rel']:.1e} | | | {num['note']} |")
    else:
        print(f"| numerics | | | | | | {num['note']} |")
    print(f"total {time.perf_counter() - started:.0f} s")
    if not num.get("ok", True):
        sys.exit(f"bench/gpu.py: {args.device} and CPU differ beyond tolerance (losses {num['loss_rel']:.1e}, "
                 f"gradients {num['grad_rel']:.1e} in {num['worst']})")


if __name__ == "__main__":
    main()
