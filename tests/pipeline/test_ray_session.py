"""A local Ray as semisep starts it: its own dashboard, printed once, and the workers' environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

CHILD = r"""
import json, os, ray
from semisep.pipeline.config import Config
from semisep.pipeline.ray_session import ensure_ray
cfg = Config()
cfg.ray.num_cpus = 1
ensure_ray(cfg)

@ray.remote
def worker_env():
    return {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")}

print("ENV " + json.dumps(ray.get(worker_env.remote())))
print("API " + os.environ.get("RAY_API_SERVER_ADDRESS", ""))
ray.shutdown()
"""


def test_local_ray_prints_its_dashboard_and_sets_the_workers_allocator(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "OMP_NUM_THREADS")}
    env["MALLOC_TRIM_THRESHOLD_"] = "1234"  # the user's own setting wins
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    worker = json.loads(next(line for line in lines if line.startswith("ENV "))[4:])
    assert worker == {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": "1234", "OMP_NUM_THREADS": "1"}
    dashboard = [line for line in proc.stderr.splitlines() if line.startswith("Ray dashboard: http://127.0.0.1:")]
    api = next(line for line in lines if line.startswith("API "))[4:]
    assert len(dashboard) == 1 and dashboard[0].endswith(api)
