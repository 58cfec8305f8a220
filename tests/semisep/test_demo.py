"""`semisep demo` on a tiny config: every stage runs through the commands' own functions, and the
console shows semisep's lines only (Ray's internals go to Ray's log files)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

RAY_NOISE = ("Execution plan of Dataset", "Starting execution of Dataset", "RayDeprecationWarning", "(raylet)",
             "Progress bars disabled", "PreemptionWatcher", "INFO ", "core_worker")


def test_demo_console_is_semiseps_own(tmp_path):
    # relative paths, as configs/demo.yaml has them: Ray's workers run in other directories
    overrides = ["data.workdir=work", "demo.track_seconds=4", "demo.paired_train=2",
                 "demo.unpaired_per_role=2", "demo.valid=1", "demo.test=2", "demo.test_in_domain=0",
                 "model.base_channels=4", "model.critic_channels=4", "model.critic_layers=3", "train.batch_size=4",
                 "train.max_steps=4", "train.val_every=2", "train.n_critic=1", "ray.num_cpus=2",
                 "mlflow.experiment=demo-test"]
    args = [sys.executable, "-m", "semisep.cli", "demo", "--config", str(ROOT / "configs" / "demo.yaml")]
    args += [a for o in overrides for a in ("--set", o)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console[-3000:]
    for noise in RAY_NOISE:
        assert noise not in console, noise
    lines = [line for line in console.splitlines() if line.strip()]
    for own in ("[1/6] generating", "[2/6] ingesting", "[5/6] evaluating", "[6/6] registered", "BSS Eval v4",
                "| supervised |", "| oracle_irm |", "Ray dashboard: http://127.0.0.1:", "semisep separate song.wav"):
        assert any(own in line for line in lines), own
    assert any(line.startswith("candidate version 1: ") for line in lines)
    assert len(lines) <= 40, "\n".join(lines)
    assert (tmp_path / "work" / "models" / "supervised+remix" / "model.json").is_file()
