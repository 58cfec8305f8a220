"""MLflow model registry against a real `mlflow server` (loopback, SQLite backend): pyfunc models,
the promotion gate, rollback, concurrent promotions, and checkpoints that try to run code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
import torch

from semisep.pipeline.config import Config
from semisep.pipeline.errors import SemisepError
from tests.conftest import mlflow_server_process

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    with mlflow_server_process(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


def _fit(cfg: Config, steps: int) -> dict:
    """A supervised separator trained for ``steps`` plain-torch steps on the paired shards."""
    from semisep.training.batches import Batches
    from semisep.training.data import read_stream, stream_files
    from semisep.training.step import build_models, separator_update

    paired = read_stream(list(stream_files(cfg)["paired"].paths), ["mixture", "vocals", "accompaniment"], cfg)
    torch.manual_seed(0)
    models = build_models(cfg)
    batches = Batches.from_arrays({"paired": paired}, cfg, 8, seed=0)
    for _ in range(steps):
        separator_update(models, batches.supervised(), None, 0.0, 0.0)
    return models.separator.state_dict()


def _logged_run(cfg: Config, state: dict, label: str, tmp_path) -> str:
    """A finished MLflow run holding ``state`` as a logged pyfunc, as `semisep train` leaves it."""
    from mlflow import MlflowClient

    from semisep.training.checkpoint import save_model
    from semisep.evaluation.registry import log_model
    from semisep.training.tracking import start_run

    run_id = start_run(cfg.tracking_uri, cfg.mlflow.experiment, label, {"label": label},
                       {"semisep.dataset_version": "test-version", "semisep.git_commit": "abc", "semisep.config_hash": "h"})
    model_dir = save_model(tmp_path / label, state, cfg, {"name": label})
    MlflowClient(cfg.tracking_uri).set_tag(run_id, "semisep.model_uri", log_model(cfg.tracking_uri, run_id, model_dir))
    return run_id


@pytest.fixture(scope="module")
def registry(ingested, mlflow_server, tmp_path_factory):
    """Config pointing at the server, and five registered versions of three runs: untrained, trained,
    trained-but-swapped, and the trained run's model twice more (trained-a, trained-b)."""
    from semisep.evaluation.registry import register
    from semisep.training.step import build_separator

    base, _ = ingested
    tmp = tmp_path_factory.mktemp("registry")
    cfg = Config.from_dict(base.to_dict())
    cfg.mlflow.tracking_uri = mlflow_server
    cfg.mlflow.registered_model = "separator-under-test"
    cfg.promote.floor_db = -100.0
    torch.manual_seed(1)
    untrained = build_separator(cfg).state_dict()
    trained = _fit(cfg, 150)
    swapped = {k: v.clone() for k, v in trained.items()}
    for k in ("head.weight", "head.bias"):  # vocals <-> accompaniment: a model that is confidently wrong
        swapped[k] = swapped[k].flip(0)
    runs = {label: _logged_run(cfg, state, label, tmp)
            for label, state in (("untrained", untrained), ("trained", trained), ("swapped", swapped))}
    runs["trained-a"] = runs["trained-b"] = runs["trained"]  # two more versions of the trained run's model
    versions = {label: register(cfg.tracking_uri, cfg.mlflow.registered_model, run_id, {"semisep.label": label})
                for label, run_id in runs.items()}
    return cfg, versions, tmp


def _aliases(cfg):
    from mlflow import MlflowClient

    return dict(MlflowClient(cfg.tracking_uri).get_registered_model(cfg.mlflow.registered_model).aliases)


def _tags(cfg, version):
    from mlflow import MlflowClient

    return MlflowClient(cfg.tracking_uri).get_model_version(cfg.mlflow.registered_model, version).tags


def test_register_promote_refuse_rollback_and_load_by_alias(registry, tmp_path):
    import mlflow

    from semisep.evaluation.promote import promote, rollback

    cfg, v, _ = registry
    assert _tags(cfg, v["trained"])["semisep.dataset_version"] == "test-version"
    first = promote(cfg, v["untrained"])  # no champion yet: the floor decides
    assert first.promoted and _aliases(cfg) == {"champion": v["untrained"]}

    better = promote(cfg, v["trained"])
    assert better.promoted, better.summary()
    assert _tags(cfg, v["trained"])["semisep.promotion.eval_split"] == f"{cfg.eval.corpus}/gate"  # not valid, not test
    from mlflow import MlflowClient

    card = MlflowClient(cfg.tracking_uri).get_model_version(cfg.mlflow.registered_model, v["trained"]).description
    assert "Registered from run" in card and "**Promotion gate**" in card and "PROMOTED to champion" in card
    assert not list(Path(cfg.data.workdir).glob("promote-v*"))  # no evaluation folders left behind
    assert better.scores["candidate"]["vocals"] > better.scores["champion"]["vocals"] + cfg.promote.margin_db
    assert _aliases(cfg) == {"champion": v["trained"], "previous": v["untrained"]}

    worse = promote(cfg, v["swapped"])
    assert not worse.promoted
    tags = _tags(cfg, v["swapped"])
    assert tags["semisep.promotion.decision"] == "refused"
    assert tags["semisep.promotion.champion_before"] == v["trained"]
    assert "below the required" in tags["semisep.promotion.reasons"]
    assert "candidate" in tags["semisep.promotion.scores"] and "champion" in tags["semisep.promotion.scores"]
    assert _aliases(cfg)["champion"] == v["trained"]

    # the champion loads by alias through MLflow and separates audio by itself
    from semisep.evaluation.registry import tracking

    with tracking(cfg.tracking_uri):
        model = mlflow.pyfunc.load_model(f"models:/{cfg.mlflow.registered_model}@champion")
    audio = (0.1 * np.random.default_rng(0).standard_normal((2, 22050))).astype(np.float32)
    out = model.predict(audio, params={"sample_rate": 22050})
    assert out["vocals"].shape == audio.shape
    assert np.abs(out["vocals"] + out["accompaniment"] - audio).max() < 1e-5
    # what soundfile.read (and musdb) give: (samples, channels), float64; the estimates come back so
    import soundfile as sf

    sf.write(tmp_path / "read.wav", audio.T, 22050, subtype="FLOAT")
    x, sr = sf.read(tmp_path / "read.wav")
    assert x.shape == (22050, 2)
    read = model.predict(x, params={"sample_rate": sr})
    assert read["vocals"].shape == x.shape and np.abs(read["vocals"] - out["vocals"].T).max() < 1e-5

    # `semisep separate --model models:/...@champion` uses the same model
    song = tmp_path / "song.wav"
    import soundfile as sf

    sf.write(song, audio.T, 22050, subtype="FLOAT")
    proc = subprocess.run([sys.executable, "-m", "semisep.cli", "separate", str(song), "-o", str(tmp_path / "out"),
                           "--model", f"models:/{cfg.mlflow.registered_model}@champion",
                           "--set", f"mlflow.tracking_uri={cfg.tracking_uri}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    vocals, _ = sf.read(tmp_path / "out" / "song" / "vocals.wav", dtype="float32")
    assert np.abs(vocals.T - out["vocals"]).max() < 1e-5

    assert rollback(cfg) == (v["untrained"], v["trained"])
    assert "MLFLOW_TRACKING_URI" not in os.environ  # the server does not leak into later tests' stores
    assert _aliases(cfg) == {"champion": v["untrained"], "previous": v["trained"]}


def test_concurrent_promotions_leave_one_consistent_champion(registry):
    """Two identical candidates, both better than the champion, promoted at once from two processes
    that share no file (own workdirs, as on two machines), only the tracking server: the registry's
    lease serialises them, so the second meets the first and 'previous' is not lost."""
    import yaml

    cfg, v, tmp = registry
    before = _aliases(cfg)["champion"]
    configs = []
    for label in ("a", "b"):
        own = Config.from_dict(cfg.to_dict())
        own.data.workdir = str(tmp / f"node-{label}")
        configs.append(tmp / f"config-{label}.yaml")
        configs[-1].write_text(yaml.safe_dump(own.to_dict()))
    procs = [subprocess.Popen([sys.executable, "-m", "semisep.cli", "promote", "--config", str(config),
                               "--candidate", v[label]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for config, label in zip(configs, ("trained-a", "trained-b"))]
    codes = [p.wait(600) for p in procs]
    assert sorted(codes) == [0, 4], [p.stderr.read()[-2000:] for p in procs]
    winner, loser = (v["trained-a"], v["trained-b"]) if codes[0] == 0 else (v["trained-b"], v["trained-a"])
    assert _aliases(cfg) == {"champion": winner, "previous": before}
    assert _tags(cfg, winner)["semisep.promotion.champion_before"] == before
    # the loser was measured against the winner, not against the champion both started from
    assert _tags(cfg, loser)["semisep.promotion.champion_before"] == winner
    assert _tags(cfg, loser)["semisep.promotion.decision"] == "refused"


def test_a_checkpoint_that_runs_code_when_unpickled_is_refused(tmp_path):
    from semisep.training.checkpoint import MODEL_WEIGHTS, load_model, save_model
    from semisep.pipeline.config import load_config
    from semisep.training.step import build_separator

    cfg = load_config(None, ["model.base_channels=4"])
    model_dir = save_model(tmp_path / "model", build_separator(cfg).state_dict(), cfg, {"name": "x"})
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(model_dir / MODEL_WEIGHTS, "wb") as fh:
        pickle.dump({"head.weight": Payload()}, fh)
    with pytest.raises(SemisepError, match="refused to load"):
        load_model(model_dir)
    assert not marker.exists()
    proc = subprocess.run([sys.executable, "-m", "semisep.cli", "separate", str(tmp_path / "none.wav"), "-o",
                           str(tmp_path / "out"), "--model", str(model_dir)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "refused to load" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()


def test_separate_without_model_uses_the_champion_then_the_newest_model_then_says_how(trained, tmp_path):
    import shutil

    import soundfile as sf
    from mlflow import MlflowClient

    from semisep.evaluation.registry import log_model, register
    from semisep.training.tracking import start_run

    base, results = trained
    song = tmp_path / "song.wav"
    sf.write(song, (0.1 * np.random.default_rng(0).standard_normal((22050, 2))).astype(np.float32), 22050)

    def separate(workdir):
        return subprocess.run([sys.executable, "-m", "semisep.cli", "separate", str(song), "-o", str(tmp_path / "out"),
                               "--set", f"data.workdir={workdir}"], capture_output=True, text=True, timeout=300)

    empty = separate(tmp_path / "empty")  # no store, no models: one line saying how to get one
    assert empty.returncode == 1 and "Traceback" not in empty.stderr
    (line,) = empty.stderr.strip().splitlines()
    assert "no model to separate with" in line and "make demo" in line and "semisep train" in line
    assert not (tmp_path / "empty" / "mlflow.db").exists()  # looking did not create a store

    local = tmp_path / "local"
    shutil.copytree(results["supervised"].model_dir, local / "models" / "supervised")
    newest = separate(local)
    assert newest.returncode == 0, newest.stderr[-2000:]
    assert f"model: {local / 'models' / 'supervised'} (the newest model in {local / 'models'}" in newest.stdout

    champion = tmp_path / "registry"
    cfg = type(base).from_dict(base.to_dict())
    cfg.data.workdir, cfg.mlflow.tracking_uri = str(champion), ""
    run_id = start_run(cfg.tracking_uri, "tests", "for-the-champion", {}, {})
    MlflowClient(cfg.tracking_uri).set_tag(run_id, "semisep.model_uri",
                                           log_model(cfg.tracking_uri, run_id, results["semi-supervised"].model_dir))
    version = register(cfg.tracking_uri, cfg.mlflow.registered_model, run_id)
    MlflowClient(cfg.tracking_uri).set_registered_model_alias(cfg.mlflow.registered_model, "champion", version)
    shutil.copytree(results["supervised"].model_dir, champion / "models" / "supervised")  # the champion comes first
    chosen = separate(champion)
    assert chosen.returncode == 0, chosen.stderr[-2000:]
    assert (f"model: models:/{cfg.mlflow.registered_model}@champion (the registry's champion, "
            f"{cfg.mlflow.registered_model} version {version}") in chosen.stdout
    assert (tmp_path / "out" / "song" / "vocals.wav").is_file()


def test_a_failed_champion_read_stops_promotion_and_moves_nothing(registry, monkeypatch):
    """An HTTP 503 while reading the champion is not 'no champion yet': promoting on the floor
    alone would replace the champion and leave 'previous' empty."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from semisep.evaluation.promote import promote
    from semisep.nightly import nightly_versions

    cfg, v, _ = registry
    before, tags_before = _aliases(cfg), _tags(cfg, v["trained-a"])

    def unavailable(*args, **kwargs):
        raise MlflowException("503 Service Unavailable", error_code="TEMPORARILY_UNAVAILABLE")

    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", unavailable)
    with pytest.raises(SemisepError, match=f"MLflow at {cfg.tracking_uri}: cannot read alias 'champion'.*nothing was changed"):
        promote(cfg, v["trained-a"])
    monkeypatch.setattr(MlflowClient, "search_model_versions", unavailable)
    with pytest.raises(SemisepError, match="cannot read the versions"):  # not "no nightly model": no retraining
        nightly_versions(cfg, "any-version")
    monkeypatch.undo()
    assert _aliases(cfg) == before and "previous" in before
    assert _tags(cfg, v["trained-a"]) == tags_before  # no decision was recorded


def test_promote_with_the_server_down_exits_non_zero_and_moves_no_alias(ingested, tmp_path):
    import time

    import yaml

    from semisep.evaluation.registry import register
    from semisep.training.step import build_separator

    base, _ = ingested
    root = tmp_path / "server"
    root.mkdir()
    cfg = Config.from_dict(base.to_dict())
    cfg.mlflow.registered_model = "down-test"
    with mlflow_server_process(root) as url:
        cfg.mlflow.tracking_uri = url
        version = register(url, "down-test", _logged_run(cfg, build_separator(cfg).state_dict(), "down", tmp_path))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "semisep.cli", "promote", "--config", str(config), "--candidate", version],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and time.time() - started < 90, (proc.returncode, time.time() - started)
    assert f"MLflow at {url}" in proc.stderr and "Traceback" not in proc.stderr
    assert "no version" not in proc.stderr  # version 1 exists; the server is what is missing
    with mlflow_server_process(root) as url:  # the same store, served again: nothing moved
        from mlflow import MlflowClient

        assert dict(MlflowClient(url).get_registered_model("down-test").aliases) == {}
