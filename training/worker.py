"""The training loop, and the Ray Train worker that runs it on its share of the data.

``run`` is the loop every training runs, a Ray Train worker (``semisep train``) or a Tune trial
(``semisep tune``, ``semisep experiment``): train steps, metrics every ``log_every`` steps, and
every ``val_every`` steps a validation on rank 0, the early-stopping decision (rank 0's,
broadcast to every worker so all stop together) and the caller's ``on_validation`` (checkpoint,
report). ``train_loop_per_worker`` is Ray Train's entry point around it.
"""

from __future__ import annotations

import tempfile
import time
from typing import Callable

import torch

from semisep.pipeline.config import Config
from semisep.training.batches import Batches
from semisep.training.checkpoint import load_training_state, save_training_state
from semisep.training.coverage import Coverage
from semisep.training.data import ValidationSet, load_training_data
from semisep.training.early_stopping import keep_best, new_best
from semisep.training.step import Models, as_floats, broadcast_parameters, build_models, train_step
from semisep.training.validation import selection_score, validate


def _broadcast_flags(flags: tuple[bool, ...], device) -> tuple[bool, ...]:
    """Rank 0's decisions on every worker (a near-tie, or a clock, must not leave one rank in the
    next collective while the others report)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flags
    value = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.broadcast(value, src=0)
    return tuple(bool(v) for v in value.tolist())


def reseed(seed: int, rank: int, step: int) -> None:
    """Random draws after ``step`` (gradient-penalty interpolation) depend on (seed, rank, step)
    only, so a run resumed from a checkpoint at ``step`` draws exactly what a straight run does."""
    torch.manual_seed((seed * 1_000_003 + rank) * 1_000_003 + step)


def run(cfg: Config, models: Models, batches: Batches, valid: ValidationSet | None, *, step: int, best: dict,
        on_validation: Callable[[int, dict, bool, bool], None], log: Callable[[dict, int], None] | None = None,
        rank: int = 0, device="cpu", started_at: float | None = None) -> int:
    """Train from ``step`` to ``train.max_steps`` or an early stop; returns the last step.

    ``on_validation(step, report, stop, checkpoint)`` runs on every rank after each validation
    (rank 0's report holds the validation figures, the others' only the step); ``checkpoint`` says
    whether this validation is one to save (``train.checkpoint_every_s``; always the last);
    ``log(metrics, step)`` gets the losses every ``log_every`` steps and the time spent around
    validation (rank 0 only), and ``first_step_s``, the seconds from ``started_at`` (a
    ``time.time()``) to the end of the first step, data reading included.
    """
    t = cfg.train
    next_unpaired = batches.unsupervised if t.semi_supervised else None
    window_start, window_steps = time.perf_counter(), 0
    last_checkpoint = time.monotonic()
    while step < t.max_steps:
        lr_factor = models.schedule.apply(models.optimizers, step) if models.schedule is not None else 1.0
        metrics = train_step(models, batches.supervised, next_unpaired, cfg)
        step += 1
        window_steps += 1
        if log and started_at is not None:
            log({"first_step_s": time.time() - started_at}, step)
            started_at = None
        if log and step % t.log_every == 0:
            log(as_floats(metrics) | {"lr": t.lr * lr_factor}, step)
        if step % t.val_every and step != t.max_steps:
            continue
        train_seconds = time.perf_counter() - window_start
        started = time.perf_counter()
        stop, cut, report = False, False, {"step": step}
        if rank == 0:
            val, weights = validate_weights(models, valid, t, device)
            score = selection_score(val, t.select_on)
            stop = keep_best(best, score, step, weights, t.patience, val, t.min_delta)
            cut = models.schedule is not None and models.schedule.observe(score)
            report = {**val, "score": score, "step": step, "best_step": best["step"],
                      "best_score": best["score"], "best_val_sdr": best["val"]["val_sdr"],
                      "best_val_loss": best["val"]["val_loss"], "steps_per_s": window_steps / train_seconds,
                      "early_stopped": float(stop)}
        save = stop or step >= t.max_steps or time.monotonic() - last_checkpoint >= t.checkpoint_every_s
        stop, save, cut = _broadcast_flags((stop, save, cut), device)
        if cut:
            models.schedule.reduce()
        on_validation(step, report, stop, save)
        if save:
            last_checkpoint = time.monotonic()
        if log:
            log({"validation_overhead_s": time.perf_counter() - started, "train_window_s": train_seconds}, step)
        reseed(t.seed, rank, step)
        window_start, window_steps = time.perf_counter(), 0
        if stop:
            break
    return step


def validate_weights(models: Models, valid: ValidationSet, t, device) -> tuple[dict, torch.nn.Module]:
    """Validate the separator and, with ``train.ema_decay``, its weights' moving average; returns
    the better one's figures and weights (what early stopping keeps and the run ships). The
    figures say which (``val_ema``: 1 for the average) and hold both scores."""
    val = validate(models.separator, valid, t.batch_size, device)
    if models.ema is None:
        return val, models.separator
    averaged = validate(models.ema.module, valid, t.batch_size, device)
    both = {"val_sdr_raw": val["val_sdr"], "val_sdr_ema": averaged["val_sdr"]}
    if selection_score(averaged, t.select_on) > selection_score(val, t.select_on):
        return averaged | both | {"val_ema": 1.0}, models.ema.module
    return val | both | {"val_ema": 0.0}, models.separator


def make_batches(cfg: Config, sources: dict, rank: int, world: int, count: int, device) -> Batches:
    """This worker's batches: its share of the global batch, its own seeds."""
    return Batches.from_sources(sources, cfg, cfg.train.batch_size // world, cfg.train.seed * 1000 + rank,
                                count, device)


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train's worker: restore or start, run the loop, checkpoint and report each validation."""
    import logging

    import ray.train
    import ray.train.torch

    from semisep.training.spectrogram_plot import validation_figure
    from semisep.training.tracking import MetricLogger, use_mlflow_environment

    # Ray Train 2.60 logs every report at INFO from a logger named by its file path; semisep logs
    # its own progress to MLflow. The worker's root logger keeps warnings and errors.
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    cfg = Config.from_dict(loop_config["cfg"])
    use_mlflow_environment(cfg)
    t = cfg.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(t.cpus_per_worker)))
    torch.manual_seed(t.seed)
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # safe with data parallelism: rank 0 decides early stopping
    models = build_models(cfg, device)
    broadcast_parameters(models)
    step, best, saved = 0, new_best(), {}
    checkpoint = ray.train.get_checkpoint()  # after a worker failure or a resize: Ray's latest
    if checkpoint is None and loop_config.get("resume_from"):
        checkpoint = ray.train.Checkpoint.from_directory(loop_config["resume_from"])
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            step, best, saved = load_training_state(d, models)
    reseed(t.seed, rank, step)
    # every rank's data state of the run that wrote the checkpoint: re-split when the world changed
    sources, valid = load_training_data(cfg, rank, world, {r: v["streams"] for r, v in saved.items()},
                                        validation=rank == 0)
    batches = make_batches(cfg, sources, rank, world, int(saved.get("0", {}).get("batches", 0)), device)
    logger = MetricLogger(loop_config["tracking_uri"], loop_config["run_id"]) if rank == 0 and loop_config.get("run_id") else None
    if logger:
        import matplotlib.backends.backend_agg  # noqa: F401 - the end-of-run figure's ~0.3 s import, paid at start-up
        import matplotlib.figure  # noqa: F401
    nodes = _worker_nodes()
    coverage = Coverage(sources)
    progress = loop_config.get("progress") if rank == 0 else None

    def tell(record: dict) -> None:
        """Progress for the driver's console; never waits and never fails the training."""
        if progress is not None:
            try:
                progress.put_nowait(record | {"max_steps": t.max_steps})
            except Exception:  # noqa: BLE001 - a full queue or a gone driver
                pass

    def log(metrics: dict, at: int) -> None:
        if logger:
            logger.log(metrics, at)
        if "loss" in metrics:
            tell({"kind": "losses", "step": at, **metrics})
    if logger:
        logger.set_tag("semisep.worker_nodes", ",".join(nodes))
        # from the driver's train() call to here: Ray Train's start-up and the data plan
        logger.log({"ray_startup_s": time.time() - loop_config.get("submitted_at", time.time()),
                    "world_size": world}, step)
        if step:
            logger.log({"resumed_at_step": step}, step)
        if saved and len(saved) != world:
            print(f"semisep: continuing at step {step} with {world} workers instead of {len(saved)}; "
                  "the data streams are re-split over them", flush=True)

    def on_validation(at: int, report: dict, stop: bool, save: bool) -> None:
        checked = coverage.check(_gather(coverage.drawn(), world))  # every rank takes part
        tell({"kind": "validation", **report})
        if logger:
            logger.log({k: v for k, v in report.items() if k != "step"} | checked, at, now=True)
            if stop or at >= t.max_steps:  # one picture, of the model the run keeps (drawing costs ~0.3 s)
                logger.log_figure(validation_figure(_best_separator(cfg, best, device), valid, best["step"]),
                                  f"validation/best_step_{best['step']:07d}.png")
        if not save:
            return
        every = _gather(batches.state(), world)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                save_training_state(tmp, models, at, best, cfg, every, loop_config.get("run_id") or "")
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(report, checkpoint=ckpt, checkpoint_dir_name=f"step_{at:07d}")

    run(cfg, models, batches, valid, step=step, best=best, on_validation=on_validation,
        log=log if rank == 0 else None, rank=rank, device=device,
        started_at=None if step else loop_config.get("submitted_at"))
    batches.close()
    if logger and not logger.flush():
        print(f"semisep: warning: MLflow at {logger.tracking_uri} unreachable ({logger.last_error}); "
              f"{len(logger.pending)} metric values were not logged", flush=True)


def _best_separator(cfg: Config, best: dict, device):
    from semisep.training.step import build_separator

    separator = build_separator(cfg).to(device)
    separator.load_state_dict(best["state"])
    return separator


def _gather(mine: dict, world: int) -> dict[str, dict]:
    """Every rank's ``mine``, by rank (e.g. the data states rank 0 writes into the checkpoint)."""
    import torch.distributed as dist

    if world == 1 or not (dist.is_available() and dist.is_initialized()):
        return {"0": mine}
    every: list = [None] * world
    dist.all_gather_object(every, mine)
    return {str(r): p for r, p in enumerate(every)}


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

