"""Timing the bare training step (torch + numpy only): shared by bench/train.py and bench/gpu.py.

Batches come from ``semisep.training.batches.Batches`` over random STFT planes already in memory (no Ray,
no Parquet), so what is timed is the step: the current one (training/step.py) or the baseline
kept in bench/reference_step.py, optionally replayed as one CUDA graph.
"""

from __future__ import annotations

import time

import torch

from semisep.pipeline.config import Config

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


def random_batches(cfg: Config, device: str, seed: int = 0):
    """A Batches over random planes: 256 rows (or 4 batches) per stream, kept on the host."""
    from semisep.training.batches import Batches

    g = torch.Generator().manual_seed(seed)
    rows = max(256, 4 * cfg.train.batch_size)
    shape = (rows, 2, cfg.transform.freq_bins, cfg.data.excerpt_frames)
    planes = lambda: (torch.randn(shape, generator=g) * 2).half()  # noqa: E731
    streams = {"paired": {k: planes() for k in ("mixture", "vocals", "accompaniment")}}
    for role in ("mixture", "vocals", "accompaniment"):
        streams[role] = {role: planes()}
    return Batches.from_arrays(streams, cfg, cfg.train.batch_size, seed, device=device)


def build(cfg: Config, device: str, implementation: str):
    """(models, step function) of the current step or the 2026-11-27 reference."""
    if implementation == "reference":
        import bench.reference_step as reference

        return reference.build_models(cfg, device), reference.train_step
    from semisep.training.step import build_models, train_step

    return build_models(cfg, device), train_step


def time_step(cfg: Config, device: str, seconds: float, implementation: str = "current",
              graph: bool = False) -> tuple[float, float]:
    """(separator steps per second, peak GPU memory in GiB; 0 on CPU) after 3 warm-up steps."""
    torch.manual_seed(0)
    models, step_fn = build(cfg, device, implementation)
    batches = random_batches(cfg, device)
    unpaired = batches.unsupervised if cfg.train.semi_supervised else None
    step = lambda: step_fn(models, batches.supervised, unpaired, cfg)  # noqa: E731
    cuda = device.startswith("cuda")
    if graph:
        step = cuda_graph_step(models, batches, cfg, step_fn)
    for _ in range(3):  # warm-up: allocator, cudnn autotuning, compilation, graph capture
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 5:
        step()
        n += 1
    if cuda:
        torch.cuda.synchronize()
    rate = n / (time.perf_counter() - start)
    return rate, (torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0)


def interleaved(cfg: Config, device: str, seconds: float, rounds: int = 5) -> dict[str, float]:
    """Steps/s of the 2026-11-27 reference step and the current one, timed in alternating slices
    of ``seconds / rounds`` each (a shared VM's speed drifts by 20% over a minute; slices side by
    side see the same machine): median rate of each, and the median of the per-round ratios."""
    runners = {implementation: _runner(cfg, device, implementation) for implementation in ("reference", "current")}
    return alternate(runners, device, seconds, rounds, baseline="reference", other="current")


def interleaved_precisions(cfg: Config, device: str, seconds: float, rounds: int = 5) -> dict[str, float]:
    """Steps/s of the current step in fp32 and under bf16 autocast, in alternating slices as
    ``interleaved``: the median rate of each, and the median per-round ratio bf16 / fp32."""
    runners = {precision: _runner(Config.from_dict(cfg.to_dict() | {"train": cfg.to_dict()["train"] | {"precision": precision}}),
                                  device, "current") for precision in ("fp32", "bf16")}
    out = alternate(runners, device, seconds, rounds, baseline="fp32", other="bf16")
    return {"fp32": out["fp32"], "bf16": out["bf16"], "ratio": out["ratio"]}


def _runner(cfg: Config, device: str, implementation: str):
    """One step of ``implementation`` on its own models and random batches, warmed up."""
    torch.manual_seed(0)
    models, step_fn = build(cfg, device, implementation)
    batches = random_batches(cfg, device)
    unpaired = batches.unsupervised if cfg.train.semi_supervised else None
    run = lambda: step_fn(models, batches.supervised, unpaired, cfg)  # noqa: E731
    for _ in range(3):
        run()
    return run


def alternate(runners: dict, device: str, seconds: float, rounds: int, baseline: str, other: str) -> dict[str, float]:
    """Time each runner in turn for ``seconds / rounds``, ``rounds`` times: the median rate of
    each (by name) and ``ratio``, the median of the per-round ratios other / baseline."""
    import statistics

    rates = {k: [] for k in runners}
    for _ in range(rounds):
        for name, step in runners.items():
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / rounds or n < 3:
                step()
                n += 1
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            rates[name].append(n / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()} | {
        "ratio": statistics.median(o / b for o, b in zip(rates[other], rates[baseline]))}


def cuda_graph_step(models, batches, cfg: Config, step_fn):
    """The whole step (n_critic critic updates and the separator update) captured as one CUDA
    graph and replayed: fresh batches are copied into the graph's input tensors first. Needs
    capturable optimisers (Adam(capturable=True)) and no host syncs inside the step."""
    for opt in filter(None, [models.opt_separator, models.opt_critics]):
        for group in opt.param_groups:
            group["capturable"] = True
    semi = cfg.train.semi_supervised
    n_batches = cfg.train.n_critic + 1 if semi else 0
    static_sup = batches.supervised()
    static_uns = [batches.unsupervised() for _ in range(n_batches)]
    feed = {"i": 0}

    def next_unsupervised():
        out = static_uns[feed["i"]]
        feed["i"] += 1
        return out

    def body():
        feed["i"] = 0
        return step_fn(models, lambda: static_sup, next_unsupervised if semi else None, cfg)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            body()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()

    def replay():
        fresh = batches.supervised()
        for k, v in fresh.items():
            static_sup[k].copy_(v, non_blocking=True)
        for target in static_uns:
            for k, v in batches.unsupervised().items():
                target[k].copy_(v, non_blocking=True)
        graph.replay()

    return replay
