"""A real Ray Train run (1 CPU worker) logging to a real MLflow SQLite store."""

import os

import pytest

from semisep.training.checkpoint import load_model
from semisep.evaluation.registry import local_model_dir

pytestmark = pytest.mark.slow


def test_ray_train_runs_and_logs_to_mlflow(trained):
    from mlflow import MlflowClient

    cfg, results = trained
    assert cfg.tracking_uri.startswith("sqlite:///")
    client = MlflowClient(cfg.tracking_uri)
    for name, result in results.items():
        run = client.get_run(result.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params["train.n_critic"] == "2"
        assert run.data.tags["semisep.dataset_version"]
        (dataset,) = [d.dataset for d in run.inputs.dataset_inputs]  # the run names the data it saw
        assert dataset.digest == run.data.tags["semisep.dataset_version"] and dataset.name == "semisep-shards"
        history = client.get_metric_history(result.run_id, "val_loss")
        assert [m.step for m in history] == [2, 4]
        assert client.get_metric_history(result.run_id, "loss_s")
        assert "checkpoint" in {a.path for a in client.list_artifacts(result.run_id)}
        # train.checkpoint_every_s (30 s) had not passed at step 2: one checkpoint, the last
        run_dir = os.path.dirname(result.checkpoint_dir)
        assert sorted(d for d in os.listdir(run_dir) if d.startswith("step_")) == ["step_0000004"]
        card = run.data.tags["mlflow.note.content"]  # the run page's description, in words
        assert f"**{name} separator**" in card and "Best validation vocal SDR" in card and result.run_id in card
        assert "soundfile.read" in card and "(samples, channels)" in card  # the usage line names the layouts
        model, transform, meta = load_model(result.model_dir)
        assert meta["info"]["run_id"] == result.run_id and transform == cfg.transform
        # the run's logged pyfunc holds the same model
        logged = local_model_dir(run.data.tags["semisep.model_uri"], cfg.tracking_uri)
        assert load_model(logged)[2]["info"]["run_id"] == result.run_id
    semi = client.get_run(results["semi-supervised"].run_id)
    assert "wasserstein_vocals" in semi.data.metrics and "loss_u" in semi.data.metrics
    assert "loss_u" not in client.get_run(results["supervised"].run_id).data.metrics


def test_early_stopping_keeps_the_best_checkpoint(ingested):
    from mlflow import MlflowClient

    from semisep.training.train import train

    cfg, _ = ingested
    cfg = type(cfg).from_dict(cfg.to_dict())
    cfg.train.alpha = cfg.train.beta = 0.0
    # lr 0: the validation loss never improves after the first validation
    cfg.train.lr, cfg.train.max_steps, cfg.train.val_every, cfg.train.patience = 0.0, 20, 1, 2
    result = train(cfg, "stops-early")
    assert result.early_stopped and result.steps == 3 and result.best_step == 1
    client = MlflowClient(cfg.tracking_uri)
    assert {m.step: m.value for m in client.get_metric_history(result.run_id, "early_stopped")} == {1: 0.0, 2: 0.0, 3: 1.0}
    assert client.get_run(result.run_id).data.tags["semisep.best_step"] == "1"


class _TakenPort:
    """A Ray Train callback that, on the first report, does what rank 0 does when another program
    took the port Ray picked for it: a real torch TCPStore asked to listen on a port already in use
    (torch raises DistNetworkError EADDRINUSE; Ray Train wraps it as a ControllerError)."""

    def __new__(cls, error=None):
        import ray.train

        class Callback(ray.train.UserCallback):
            def after_report(self, *args, **kwargs):
                if error is not None:
                    raise error
                import socket

                from torch.distributed import TCPStore

                with socket.socket() as held:
                    held.bind(("127.0.0.1", 0))
                    held.listen()
                    TCPStore("127.0.0.1", held.getsockname()[1], is_master=True, wait_for_workers=False)

        return Callback()


def test_a_process_group_whose_port_was_taken_is_started_again(ray_session, tmp_path):
    """Two `semisep train` on one machine: Ray picks a free port for torch's process group, and the
    other run's Ray can bind it before rank 0 listens (CI saw EADDRINUSE). That start is retried
    with a new trainer; any other failure is raised at once."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from semisep.training.train import fit_retrying_port_races

    def loop():
        ray.train.report({"step": 1})
        return "trained"

    def factory(callbacks):
        made = []

        def make():
            made.append(1)
            cb = callbacks[len(made) - 1] if len(made) <= len(callbacks) else None
            return TorchTrainer(loop, scaling_config=ray.train.ScalingConfig(num_workers=1),
                                run_config=ray.train.RunConfig(name=f"port-{len(made)}", storage_path=str(tmp_path),
                                                               failure_config=ray.train.FailureConfig(max_failures=0),
                                                               callbacks=[cb] if cb else None))
        return make, made

    said = []
    make, made = factory([_TakenPort()])
    result = fit_retrying_port_races(make, said.append)
    assert result.error is None and result.return_value == "trained"
    assert len(made) == 2 and len(said) == 1 and "taken by another program" in said[0]

    make, made = factory([_TakenPort(ValueError("not a port")), None])
    with pytest.raises(ray.train.ControllerError, match="not a port"):
        fit_retrying_port_races(make, said.append)
    assert len(made) == 1 and len(said) == 1


def test_an_unreachable_tracking_server_is_reported_before_ray_starts(ingested, tmp_path):
    """`semisep train` asks MLflow for its run before it starts a local Ray: a wrong URL or a refused
    login is reported without Ray's start-up first (and nothing of Ray is left running)."""
    import subprocess
    import sys

    from tests.conftest import free_port

    cfg, _ = ingested
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    script = f"""
import ray
from semisep.pipeline.config import Config
from semisep.pipeline.errors import SemisepError
from semisep.training.train import train
cfg = Config.from_dict({cfg.to_dict()!r})
cfg.mlflow.tracking_uri = {url!r}
cfg.data.workdir, cfg.data.store = {str(tmp_path)!r}, {cfg.data.shards_dir!r}
try:
    train(cfg, "no-server")
except SemisepError as exc:
    print("REFUSED", exc)
print("RAY STARTED", ray.is_initialized())
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS"))}
    env |= {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert f"REFUSED MLflow tracking server {url}: cannot start the run" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    assert "RAY STARTED False" in out.stdout
