"""Data parallel training is the same maths as one worker; resume and worker failure lose nothing.

All with real Ray Train (gloo on CPU) and a real MLflow SQLite store.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import sys
import tempfile
import threading
import time

import pytest
import torch

from semisep.pipeline.config import Config, load_config

pytestmark = pytest.mark.slow

# parameters after 3 steps of Adam at lr 1e-3, in float64: in float32 one gradient element near zero
# can flip its sign between 1 and 2 workers (rounding) and Adam turns that into a full lr-sized step
TOLERANCE = 1e-9


def _equivalence_loop(config: dict) -> None:
    """k semi-supervised steps on a fixed global batch sequence, each worker taking its slice."""
    import ray.train

    from semisep.training.step import broadcast_parameters, build_models, critic_update, separator_update

    cfg = Config.from_dict(config["cfg"])
    t = cfg.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(1)
    torch.manual_seed(rank)  # different init on each rank: broadcast must make them equal
    models = build_models(cfg)
    for module in (models.separator, *models.critics.values()):
        module.double()  # in place: the optimisers keep their parameters
    broadcast_parameters(models)
    per = t.batch_size // world
    mine = slice(rank * per, (rank + 1) * per)
    g = torch.Generator().manual_seed(123)
    shape = (t.batch_size, cfg.transform.freq_bins, cfg.data.excerpt_frames)

    def batch(names):
        return {n: torch.rand(shape, generator=g, dtype=torch.float64) * 3 for n in names}

    roles = ("mixture", "vocals", "accompaniment")
    for _ in range(config["steps"]):
        for _ in range(t.n_critic):
            unpaired = batch(roles)
            eps = {s: torch.rand(t.batch_size, 1, 1, generator=g, dtype=torch.float64)[mine]
                   for s in ("vocals", "accompaniment")}
            critic_update(models, {k: v[mine] for k, v in unpaired.items()}, t.gp_lambda, eps=eps)
        paired, unpaired = batch(roles), batch(roles)
        separator_update(models, {k: v[mine] for k, v in paired.items()}, {k: v[mine] for k, v in unpaired.items()},
                         t.alpha, t.beta)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            torch.save(models.state_dict(), os.path.join(tmp, "models.pt"))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({"done": 1}, checkpoint=checkpoint)


def _run_equivalence(cfg: Config, workers: int, storage: str) -> dict:
    import ray.cloudpickle
    import ray.train
    from ray.train.torch import TorchTrainer

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    trainer = TorchTrainer(_equivalence_loop, train_loop_config={"cfg": cfg.to_dict(), "steps": 3},
                           scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=False),
                           run_config=ray.train.RunConfig(name=f"equivalence-{workers}", storage_path=storage))
    result = trainer.fit()
    with result.checkpoint.as_directory() as d:
        return torch.load(os.path.join(d, "models.pt"), weights_only=True)


def _flat(state: dict) -> dict[str, torch.Tensor]:
    """Parameters of separator and critics by name (optimiser state left out)."""
    out = {f"separator.{k}": v for k, v in state["separator"].items()}
    for name, critic in state["critics"].items():
        out.update({f"critic_{name}.{k}": v for k, v in critic.items()})
    return out


def test_two_gloo_workers_equal_one_worker_on_the_same_global_batch(ray_session, tmp_path):
    cfg = load_config(None, ["data.excerpt_frames=32", "model.depth=2", "model.base_channels=4",
                             "model.critic_channels=4", "model.critic_layers=3", "train.batch_size=4",
                             "train.n_critic=2", "train.lr=0.001", "train.critic_lr=0.001",
                             "train.alpha=0.1", "train.beta=0.1"])
    one = _flat(_run_equivalence(cfg, 1, str(tmp_path)))
    two = _flat(_run_equivalence(cfg, 2, str(tmp_path)))
    torch.manual_seed(0)
    from semisep.training.step import build_models

    init = _flat(build_models(cfg).state_dict())
    assert one.keys() == two.keys() and any(k.startswith("critic_vocals") for k in one)
    diffs = {k: (one[k] - two[k]).abs().max().item() for k in one}
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] < TOLERANCE, sorted(diffs.items(), key=lambda kv: -kv[1])[:8]
    # and the runs did move the weights, far more than the tolerance
    moved = max((one[k] - init[k]).abs().max().item() for k in one if k in init and one[k].is_floating_point())
    assert moved > 100 * TOLERANCE, moved


def _history(client, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def test_resume_gives_the_losses_of_a_straight_run(trained):
    from mlflow import MlflowClient

    from semisep.training.train import train

    base, runs = trained
    straight = runs["semi-supervised"]  # 4 straight steps, validation every 2, with these settings
    cfg = type(base).from_dict(base.to_dict())
    cfg.train.alpha = cfg.train.beta = 0.001
    assert (cfg.train.max_steps, cfg.train.val_every, cfg.train.log_every) == (4, 2, 1)
    cfg.train.max_steps = 2
    first = train(cfg, "halves")
    cfg.train.max_steps = 4
    resumed = train(cfg, "halves", resume=True)
    assert straight.steps == resumed.steps == 4
    client = MlflowClient(cfg.tracking_uri)
    for key in ("loss_s", "loss_u", "loss_add", "critic_loss_vocals", "gradient_penalty_accompaniment"):
        want = _history(client, straight.run_id, key)
        got = _history(client, resumed.run_id, key)
        assert sorted(got) == [3, 4], (key, got)
        for step in (3, 4):
            assert got[step] == pytest.approx(want[step], rel=1e-5, abs=1e-7), (key, step)
    assert _history(client, resumed.run_id, "resumed_at_step") == {2: 2.0}
    # the registry's lineage covers every step: the resumed run names the run it continues
    tags = client.get_run(resumed.run_id).data.tags
    assert tags["semisep.resumed_from_run"] == first.run_id and tags["semisep.resumed_from_step"] == "2"


def test_two_workers_repeat_their_losses_and_resume_where_they_stopped(ingested):
    """2 gloo workers: rows are dealt to workers by position, so a second run with the same seed
    sees the same batches (steps 1-2 of the halves run equal the straight run's), and a resumed
    run continues the same sequence (steps 3-4 equal too)."""
    from mlflow import MlflowClient

    from semisep.training.train import train

    base, _ = ingested
    cfg = type(base).from_dict(base.to_dict())
    cfg.train.num_workers, cfg.train.batch_size = 2, 4
    cfg.train.max_steps, cfg.train.val_every, cfg.train.log_every = 4, 2, 1
    straight = train(cfg, "two-workers")
    cfg.train.max_steps = 2
    train(cfg, "two-workers-halves")
    cfg.train.max_steps = 4
    resumed = train(cfg, "two-workers-halves", resume=True)
    client = MlflowClient(cfg.tracking_uri)
    for key in ("loss_s", "loss_u", "critic_loss_vocals", "val_loss", "val_sdr"):
        want = _history(client, straight.run_id, key)
        first = _history(client, _run_id(client, cfg, "two-workers-halves", first=True), key)
        got = _history(client, resumed.run_id, key)
        for step, value in (first | got).items():
            assert value == pytest.approx(want[step], rel=1e-5, abs=1e-7), (key, step)
        assert set(first | got) == set(want), key
    assert len(set(client.get_run(straight.run_id).data.tags["semisep.worker_nodes"].split(","))) == 1


def _run_id(client, cfg, name: str, first: bool) -> str:
    exp = client.get_experiment_by_name(cfg.mlflow.experiment).experiment_id
    runs = client.search_runs([exp], f"attributes.run_name = '{name}'", order_by=["attributes.start_time ASC"])
    return runs[0 if first else -1].info.run_id


def _train_worker_pids() -> list[int]:
    """Ray Train workers of this test's own local Ray (descendants of this process), never another's."""
    import psutil

    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if any("RayTrainWorker" in part for part in p.cmdline()):
                out.append(p.pid)
        except psutil.Error:
            pass
    return out


def test_killed_worker_restarts_from_the_last_checkpoint(ingested):
    from mlflow import MlflowClient

    from semisep.training.train import train

    cfg, _ = ingested
    cfg = type(cfg).from_dict(cfg.to_dict())
    cfg.train.alpha = cfg.train.beta = 0.0
    cfg.train.max_steps, cfg.train.val_every, cfg.train.log_every, cfg.train.patience = 200, 10, 10, 1000
    cfg.train.checkpoint_every_s = 0  # a checkpoint at every validation
    storage = os.path.join(cfg.data.workdir, "ray_results")
    killed = []

    def registered_step() -> int:
        """Step of the latest checkpoint Ray Train has registered (its manager's snapshot file)."""
        for path in glob.glob(os.path.join(storage, "killable-*", "checkpoint_manager_snapshot.json")):
            latest = json.load(open(path)).get("latest_checkpoint_result") or {}
            name = latest.get("checkpoint_dir_name") or ""
            if name.startswith("step_"):
                return int(name[5:])
        return 0

    def kill_after_a_registered_checkpoint():
        deadline = time.time() + 240
        while time.time() < deadline:
            if registered_step() and _train_worker_pids():
                killed.append((_train_worker_pids()[0], registered_step()))
                os.kill(killed[0][0], signal.SIGKILL)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_after_a_registered_checkpoint, daemon=True)
    killer.start()
    result = train(cfg, "killable")
    killer.join()
    assert killed, "no training worker was found to kill"
    assert result.steps == 200
    client = MlflowClient(cfg.tracking_uri)
    resumed = _history(client, result.run_id, "resumed_at_step")
    # continued from the checkpoint registered before the kill (or a later one), not from zero
    assert len(resumed) == 1 and killed[0][1] <= min(resumed.values()) < 200, (resumed, killed)
    assert max(_history(client, result.run_id, "val_loss")) == 200
