"""One command for a lent accelerator: the training step and separation at the paper's size.

Needs torch and numpy only (Ray, MLflow, librosa, soundfile and soxr may be missing; only 64 MiB
of the tree travels), so it is what a GPU box runs; ``--device cpu`` runs the same at the demo's
size (CI runs it, so it cannot rot between GPU runs). Prints one table:

- steps/s and paired samples/s of the semi-supervised and the supervised step in fp32, bf16
  (autocast), compiled (torch.compile of the separator) and replayed as one CUDA graph, with peak
  GPU memory, and the 2026-11-27 step (bench/reference_step.py) in fp32 as the named baseline;
- ``separate`` of a 3-minute 44.1 kHz stereo song: seconds and times real time;
- numerics: one semi-supervised step on the device against the same step on the CPU from the
  same weights and batches (largest relative difference of the losses, largest parameter change
  difference), TF32 off.

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


def numerics_row(base: dict, device: str) -> dict:
    """One semi-supervised step on ``device`` and on the CPU from the same weights, batches and
    gradient-penalty draws: largest relative loss difference, largest parameter-update difference."""
    from bench.step_timing import random_batches
    from semisep.training.step import as_floats, build_models, critic_update, separator_update

    if not device.startswith("cuda"):
        return {"note": "n/a (no CUDA device)"}
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    cfg = variant(base, True)
    t = cfg.train
    g = torch.Generator().manual_seed(5)
    eps = [{s: torch.rand(t.batch_size, 1, 1, generator=g) for s in ("vocals", "accompaniment")} for _ in range(t.n_critic)]
    out = {}
    for where in ("cpu", device):
        torch.manual_seed(0)
        models = build_models(cfg, where)
        batches = random_batches(cfg, where, seed=1)
        sup, uns = batches.supervised(), [batches.unsupervised() for _ in range(t.n_critic + 1)]
        modules = {"separator": models.separator, **models.critics}
        before = {f"{m}.{k}": v.detach().cpu().clone() for m, mod in modules.items() for k, v in mod.state_dict().items()}
        losses = {}
        for i in range(t.n_critic):
            losses |= as_floats(critic_update(models, uns[i], t.gp_lambda, eps={s: e.to(where) for s, e in eps[i].items()}))
        losses |= as_floats(separator_update(models, sup, uns[-1], t.alpha, t.beta))
        after = {f"{m}.{k}": v.detach().cpu() for m, mod in modules.items() for k, v in mod.state_dict().items()}
        out[where] = (losses, {k: after[k] - before[k] for k in after})
    (cpu_loss, cpu_delta), (dev_loss, dev_delta) = out["cpu"], out[device]
    loss_rel = max(abs(dev_loss[k] - cpu_loss[k]) / max(1e-6, abs(cpu_loss[k])) for k in cpu_loss)
    update = max(float((dev_delta[k] - cpu_delta[k]).abs().max()) for k in cpu_delta)
    scale = max(float(cpu_delta[k].abs().max()) for k in cpu_delta)
    return {"loss_rel": loss_rel, "update_diff": update, "update_scale": scale,
            "note": "every loss, and the parameter updates of separator and critics (Adam)"}


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
        print(f"| numerics | {args.device} vs CPU, one semi-supervised step | loss rel. diff {num['loss_rel']:.1e} | "
              f"update diff {num['update_diff']:.1e} of {num['update_scale']:.1e} | | | {num['note']} |")
    else:
        print(f"| numerics | | | | | | {num['note']} |")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
