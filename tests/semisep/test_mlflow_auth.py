"""The registry is the release gate: a tracking server behind MLflow's basic-auth app (as cluster.yaml
runs it) refuses every request without the login, and semisep with the login works."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from semisep.pipeline.config import Config
from tests.conftest import mlflow_server_process

pytestmark = pytest.mark.slow
LOGIN = {"username": "semisep", "password": "correct-horse-battery"}


def _run(args, config, login: bool):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    if login:
        env |= {"MLFLOW_TRACKING_USERNAME": LOGIN["username"], "MLFLOW_TRACKING_PASSWORD": LOGIN["password"]}
    return subprocess.run([sys.executable, "-m", "semisep.cli", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=600, env=env)


def test_unauthenticated_writes_and_promotions_are_refused(ingested, tmp_path):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    base, _ = ingested
    with mlflow_server_process(tmp_path, auth=LOGIN) as url:
        cfg = Config.from_dict(base.to_dict())
        cfg.mlflow.tracking_uri, cfg.mlflow.registered_model = url, "guarded"
        cfg.data.workdir, cfg.data.store = str(tmp_path / "work"), base.data.shards_dir
        cfg.train.alpha = cfg.train.beta = 0.0
        cfg.promote.floor_db = -100.0
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(cfg.to_dict()))

        anonymous = _run(["train", "--register"], config, login=False)
        assert anonymous.returncode == 1, anonymous.stderr[-2000:]
        assert f"MLflow tracking server {url}" in anonymous.stderr and "Traceback" not in anonymous.stderr

        with_login = _run(["train", "--register"], config, login=True)
        assert with_login.returncode == 0, with_login.stderr[-3000:]
        assert "registered as guarded version 1" in with_login.stdout

        refused = _run(["promote", "--candidate", "1"], config, login=False)
        assert refused.returncode == 1 and f"MLflow at {url}" in refused.stderr, refused.stderr[-2000:]
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
        anonymous_client = MlflowClient(url)
        with pytest.raises(MlflowException):
            anonymous_client.set_registered_model_alias("guarded", "champion", "1")
        with pytest.raises(MlflowException):
            anonymous_client.search_experiments()

        promoted = _run(["promote", "--candidate", "1"], config, login=True)
        assert promoted.returncode == 0, promoted.stderr[-2000:]
        os.environ |= {"MLFLOW_TRACKING_USERNAME": LOGIN["username"], "MLFLOW_TRACKING_PASSWORD": LOGIN["password"]}
        try:
            assert MlflowClient(url).get_model_version_by_alias("guarded", "champion").version == "1"
        finally:
            os.environ.pop("MLFLOW_TRACKING_USERNAME")
            os.environ.pop("MLFLOW_TRACKING_PASSWORD")
