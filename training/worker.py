"""The Ray Train worker loop: feeds ``train_step`` from the dataset shards, validates, checkpoints.

Validation runs on the whole validation split on every worker (same weights, same data, so every
worker takes the same early-stopping decision); rank 0 writes checkpoints and MLflow metrics.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time

import numpy as np
import torch

from pipeline.config import Config
from training.checkpoint import safe_load
from training.step import Models, batches_from_arrays, broadcast_parameters, build_models, train_step
from training.spectrogram_plot import validation_figure
from training.tracking import MetricLogger


@torch.no_grad()
def validate(separator, valid: dict[str, torch.Tensor], batch_size: int) -> dict[str, float]:
    """Validation loss (L_s) and a fast magnitude-domain SDR per source, over the whole split."""
    separator.eval()
    sq_err = 0.0
    energy = torch.zeros(2, dtype=torch.float64)
    err = torch.zeros(2, dtype=torch.float64)
    n = valid["mixture"].shape[0]
    for i in range(0, n, batch_size):
        est = separator(valid["mixture"][i:i + batch_size])
        ref = torch.stack([valid["vocals"][i:i + batch_size], valid["accompaniment"][i:i + batch_size]], 1)
        sq_err += ((est - ref) ** 2).sum().item()
        m_est, m_ref = torch.expm1(est).double(), torch.expm1(ref).double()
        energy += (m_ref ** 2).sum(dim=(0, 2, 3))
        err += ((m_ref - m_est) ** 2).sum(dim=(0, 2, 3))
    separator.train()
    sdr = 10 * torch.log10(energy / err.clamp_min(1e-12))
    return {"val_loss": sq_err / (n * 2 * valid["mixture"][0].numel()),
            "val_spec_sdr_vocals": sdr[0].item(), "val_spec_sdr_accompaniment": sdr[1].item()}


def new_best() -> dict:
    """The early-stopping record before any validation (checkpointed with the training state)."""
    return {"val_loss": math.inf, "step": 0, "bad_evals": 0, "state": None}


def keep_best(best: dict, val_loss: float, step: int, separator, patience: int) -> bool:
    """Keep a copy of ``separator`` in ``best`` when ``val_loss`` beats it; True when ``patience``
    validations in a row brought no improvement (time to stop early)."""
    if val_loss < best["val_loss"]:
        best.update(val_loss=val_loss, step=step, bad_evals=0,
                    state={k: v.detach().cpu().clone() for k, v in separator.state_dict().items()})
    else:
        best["bad_evals"] += 1
    return best["bad_evals"] >= patience


def _to_tensors(batch: dict, device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v).to(device, non_blocking=True) for k, v in batch.items() if k != "key"}


class StreamFeeder:
    """Endless batches from a worker's Ray Data shard, counting time spent waiting for data.

    in_memory: read the shard once, sort its rows (so the order does not depend on how Ray read
    the files) and draw batches that depend only on (seed, position): a checkpoint stores
    ``position`` and a resumed run continues the same sequence. Otherwise stream the shard from
    Parquet every epoch through a local shuffle buffer (not reproducible on resume).
    """

    def __init__(self, shard, batch_size: int, shuffle_buffer: int, seed: int, device, in_memory: bool,
                 start: int = 0):
        self.shard, self.batch_size, self.buffer, self.seed, self.device = shard, batch_size, shuffle_buffer, seed, device
        self.wait = 0.0
        self.position = start
        self._it = self._from_memory(start) if in_memory else self._streamed()

    def _from_memory(self, start: int):
        arrays = {k: torch.from_numpy(v.astype(np.float16)) for k, v in _read_all(self.shard).items() if k != "key"}
        rows = next(iter(arrays.values())).shape[0] if arrays else 0
        if rows < self.batch_size:
            from pipeline.errors import SemisepError

            raise SemisepError(f"a training stream has {rows} rows on this worker, fewer than its batch of {self.batch_size}")
        for batch in batches_from_arrays(arrays, self.batch_size, self.seed, start):
            yield {k: v.float() for k, v in batch.items()}

    def _streamed(self):
        epoch = 0
        while True:
            got = False
            for batch in self.shard.iter_batches(batch_size=self.batch_size, batch_format="numpy", drop_last=True,
                                                 local_shuffle_buffer_size=self.buffer,
                                                 local_shuffle_seed=self.seed + epoch, prefetch_batches=2):
                got = True
                yield batch
            epoch += 1
            if not got:
                from pipeline.errors import SemisepError

                raise SemisepError(f"a training stream has fewer rows than train.batch_size={self.batch_size}")

    def __call__(self) -> dict[str, torch.Tensor]:
        t = time.perf_counter()
        batch = next(self._it)
        self.wait += time.perf_counter() - t
        self.position += 1
        return _to_tensors(batch, self.device)


class UnpairedFeeder:
    """One batch of unpaired mixtures, vocals and accompaniment, each from its own stream."""

    def __init__(self, feeders: dict[str, StreamFeeder]):
        self.feeders = feeders

    def __call__(self) -> dict[str, torch.Tensor]:
        return {role: f()[role] for role, f in self.feeders.items()}


def _read_all(shard) -> dict[str, np.ndarray]:
    """Every row of a worker's dataset shard sorted by ``key``, column -> (rows, F, T); {} if none."""
    parts = list(shard.iter_batches(batch_size=1024, batch_format="numpy"))
    if not parts:
        return {}
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if "key" in out:
        order = np.argsort(out["key"], kind="stable")
        out = {k: v[order] for k, v in out.items()}
    return out


def _load_valid(shard, device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).to(device) for k, v in _read_all(shard).items() if k != "key"}


def save_training_state(directory: str, models: Models, step: int, best: dict, cfg: Config,
                        positions: dict[str, int]) -> None:
    """Models, optimisers, best separator, step and stream positions: all a resume needs."""
    torch.save({"models": models.state_dict(), "step": step, "best_separator": best["state"]},
               os.path.join(directory, "state.pt"))
    meta = {"step": step, "best_step": best["step"], "best_val_loss": best["val_loss"],
            "bad_evals": best["bad_evals"], "positions": positions, "config": cfg.to_dict(),
            "transform": cfg.transform.to_dict()}
    with open(os.path.join(directory, "meta.json"), "w") as fh:
        json.dump(meta, fh, indent=2)


def _reseed(seed: int, rank: int, step: int) -> None:
    """Random draws after ``step`` (gradient-penalty interpolation) depend on (seed, rank, step)
    only, so a run resumed from a checkpoint at ``step`` draws exactly what a straight run does."""
    torch.manual_seed((seed * 1_000_003 + rank) * 1_000_003 + step)


def _restore(loop_config: dict, models: Models) -> tuple[int, dict, dict[str, int]]:
    """Step, best-so-far and stream positions from Ray's checkpoint (after a worker failure) or
    from the one ``--resume`` asked for; a fresh start when there is neither."""
    import ray.train

    best = new_best()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and loop_config.get("resume_from"):
        checkpoint = ray.train.Checkpoint.from_directory(loop_config["resume_from"])
    if checkpoint is None:
        return 0, best, {}
    with checkpoint.as_directory() as d:
        state = safe_load(os.path.join(d, "state.pt"))
        meta = json.load(open(os.path.join(d, "meta.json")))
    models.load_state_dict(state["models"])
    best = {"val_loss": meta["best_val_loss"], "step": meta["best_step"], "bad_evals": meta["bad_evals"],
            "state": state["best_separator"]}
    return meta["step"], best, meta.get("positions", {})


def _worker_nodes() -> list[str]:
    """The Ray node id of every worker, by rank (tagged on the run: where did the workers land)."""
    import ray
    import torch.distributed as dist

    node = ray.get_runtime_context().get_node_id()
    if not (dist.is_available() and dist.is_initialized()):
        return [node]
    nodes: list = [None] * dist.get_world_size()
    dist.all_gather_object(nodes, node)
    return nodes


def train_loop_per_worker(loop_config: dict) -> None:
    import logging

    import ray.train
    import ray.train.torch

    # Ray Train 2.60 logs every report at INFO from a logger named by its file path, so neither
    # RunConfig's logging_config nor the ray.train logger's level holds it back; semisep logs its
    # own progress to MLflow. The worker's root logger keeps warnings and errors.
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    cfg = Config.from_dict(loop_config["cfg"])
    t = cfg.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, loop_config.get("threads", 1)))
    torch.manual_seed(t.seed)
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    models = build_models(cfg, device)
    broadcast_parameters(models)
    step, best, positions = _restore(loop_config, models)
    _reseed(t.seed, rank, step)

    per_worker = t.batch_size // world
    seed = t.seed * 1000 + rank

    def feeder(stream: str, offset: int) -> StreamFeeder:
        return StreamFeeder(ray.train.get_dataset_shard(stream), per_worker, cfg.data.shuffle_buffer, seed + offset,
                            device, cfg.data.in_memory, positions.get(stream, 0))

    feeders = {"paired": feeder("paired", 0)}
    unpaired = None
    if t.semi_supervised:
        feeders.update({r: feeder(r, 7 * (i + 1)) for i, r in enumerate(("mixture", "vocals", "accompaniment"))})
        unpaired = UnpairedFeeder({r: feeders[r] for r in ("mixture", "vocals", "accompaniment")})
    paired = feeders["paired"]
    valid = _load_valid(ray.train.get_dataset_shard("valid"), device)
    logger = MetricLogger(loop_config["tracking_uri"], loop_config["run_id"]) if rank == 0 and loop_config.get("run_id") else None
    nodes = _worker_nodes()
    if logger:
        logger.client.set_tag(logger.run_id, "semisep.worker_nodes", ",".join(nodes))
    if logger and step:
        logger.log({"resumed_at_step": step}, step)

    window_start, window_steps = time.perf_counter(), 0
    wait_start = 0.0
    while step < t.max_steps:
        metrics = train_step(models, paired, unpaired, cfg)
        step += 1
        window_steps += 1
        if logger and (step % t.log_every == 0):
            logger.log(metrics, step)
        if step % t.val_every and step != t.max_steps:
            continue
        elapsed = time.perf_counter() - window_start
        waited = sum(f.wait for f in feeders.values())
        val = validate(models.separator, valid, per_worker)
        stop = keep_best(best, val["val_loss"], step, models.separator, t.patience)
        report = {**val, "step": step, "best_step": best["step"], "best_val_loss": best["val_loss"],
                  "steps_per_s": window_steps / elapsed, "data_wait_share": (waited - wait_start) / elapsed,
                  "early_stopped": float(stop)}
        if logger:
            logger.log({k: v for k, v in report.items() if k != "step"}, step)
            logger.log_figure(validation_figure(models.separator, valid, step), f"validation/step_{step:07d}.png")
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                save_training_state(tmp, models, step, best, cfg, {k: f.position for k, f in feeders.items()})
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(report, checkpoint=ckpt, checkpoint_dir_name=f"step_{step:07d}")
        _reseed(t.seed, rank, step)
        window_start, window_steps, wait_start = time.perf_counter(), 0, waited
        if stop:
            break
