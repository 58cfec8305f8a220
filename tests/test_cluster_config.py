"""cluster.yaml and its companions, checked offline: Ray's own cluster-config schema validation,
and that the resources the configs ask for are ones the node types advertise."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _prepared(raw: dict) -> dict:
    # what `ray up` does before it touches a cloud: fill defaults, then validate against ray-schema.json
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(raw)
    validate_config(config)
    return config


def test_cluster_yaml_passes_rays_schema_validation():
    config = _prepared(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    types = config["available_node_types"]
    assert config["head_node_type"] == "head" and set(types) == {"head", "cpu_worker", "gpu_worker"}
    assert types["gpu_worker"]["resources"].get("GPU", 0) >= 1
    assert "GPU" not in types["head"]["resources"] and "GPU" not in types["cpu_worker"]["resources"]


def test_schema_validation_refuses_a_misspelt_key():
    import jsonschema

    raw = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    raw["available_node_types"]["gpu_worker"]["resourcez"] = raw["available_node_types"]["gpu_worker"].pop("resources")
    with pytest.raises(jsonschema.ValidationError, match="resourcez"):
        _prepared(raw)


def test_cluster_config_sends_training_to_gpu_nodes_and_ingestion_to_cpu_workers():
    from semisep.pipeline.config import load_config

    types = yaml.safe_load((ROOT / "cluster.yaml").read_text())["available_node_types"]
    cfg = load_config(str(ROOT / "configs" / "cluster.yaml"))
    advertise = {name: set(t["resources"]) for name, t in types.items()}
    train_needs = set(cfg.train.worker_resources) | ({"GPU"} if cfg.train.use_gpu else set())
    assert train_needs and [n for n, r in advertise.items() if train_needs <= r] == ["gpu_worker"]
    ingest_needs = set(cfg.data.task_resources)
    assert ingest_needs and [n for n, r in advertise.items() if ingest_needs <= r] == ["cpu_worker"]
    for location in (cfg.data.store, cfg.data.storage_path):
        assert location.startswith("s3://")


def test_kubernetes_cronjob_submits_the_nightly_job():
    job = yaml.safe_load((ROOT / "deploy" / "k8s-nightly-cronjob.yaml").read_text())
    assert job["kind"] == "CronJob" and job["spec"]["concurrencyPolicy"] == "Forbid"
    container = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    command = " ".join(container["args"])
    assert "ray job submit" in command and "semisep nightly --config configs/cluster.yaml" in command


def test_mlflow_server_runs_behind_basic_auth_with_the_shipped_login():
    raw = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    head = " ".join(raw["head_start_ray_commands"])
    assert "mlflow server --app-name basic-auth" in head and "MLFLOW_AUTH_CONFIG_PATH=$HOME/semisep/deploy/mlflow-auth.ini" in head
    assert "~/.semisep/mlflow.env" in raw["file_mounts"]
    for commands in (raw["head_start_ray_commands"], raw["worker_start_ray_commands"]):
        ray_start = next(c for c in commands if "ray start" in c)
        assert ". ~/.semisep/mlflow.env" in ray_start  # drivers and workers carry the login
    import configparser

    ini = configparser.ConfigParser()
    ini.read(ROOT / "deploy" / "mlflow-auth.ini")
    assert ini["mlflow"]["default_permission"] == "NO_PERMISSIONS"
