"""`pip install .` puts one top-level module, semisep, beside other packages' pipeline, training and
evaluation: each keeps its own code, and the installed semisep runs from site-packages."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def run(args, cwd, **kwargs) -> str:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{args}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_installed_beside_modules_named_pipeline_training_and_evaluation(tmp_path):
    # a fresh venv that sees this one's dependencies (torch, ray, mlflow ...) through a .pth line,
    # so nothing is downloaded; none of this venv's own .pth files (its editable semisep) run there
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path)
    python = venv / "bin" / "python"
    purelib = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).strip())
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    other = tmp_path / "other"  # a project of someone else's with the three names
    for name in ("pipeline", "training", "evaluation"):
        (other / name).mkdir(parents=True)
        (other / name / "__init__.py").write_text(f"WHO = 'other {name}'\n")
    (other / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "other-stages"\nversion = "1.0"\n'
        '[tool.setuptools]\npackages = ["pipeline", "training", "evaluation"]\n')
    pip = [python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    run([*pip, other], tmp_path)
    # not editable: a wheel built from a copy of the checkout (setuptools builds in the source tree)
    source = tmp_path / "semisep-src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "work*", "build", "*.egg-info",
                                                                 "bench-scale", "__pycache__", ".pytest_cache"))
    run([*pip, source], tmp_path)

    where = run([python, "-c", "import semisep, semisep.pipeline.config, semisep.training.step, "
                 "semisep.evaluation.separate, pipeline, training, evaluation; "
                 "print(semisep.__file__); print(semisep.training.step.__file__); "
                 "print(pipeline.WHO, training.WHO, evaluation.WHO, sep='|')"], tmp_path).splitlines()
    assert where[0].startswith(str(purelib)) and where[1].startswith(str(purelib / "semisep" / "training"))
    assert where[2] == "other pipeline|other training|other evaluation"
    assert not (purelib / "pipeline" / "config.py").exists()  # semisep put nothing at the top level but itself

    assert "separate" in run([venv / "bin" / "semisep", "--help"], tmp_path)
    model = run([python, "-c", "from semisep.pipeline.config import load_config; "
                 "from semisep.training.step import build_separator; from semisep.training.checkpoint import save_model; "
                 f"print(save_model('{tmp_path / 'model'}', build_separator(load_config(None, ['model.base_channels=4']))"
                 ".state_dict(), load_config(None, ['model.base_channels=4']), {'name': 'x'}))"], tmp_path).strip()
    run([python, "-c", "import numpy as np, soundfile as sf; "
         f"sf.write('{tmp_path / 'song.wav'}', (0.1 * np.random.default_rng(0).standard_normal((16000, 2))), 16000)"],
        tmp_path)
    out = run([venv / "bin" / "semisep", "separate", tmp_path / "song.wav", "-o", tmp_path / "est", "--model", model],
              tmp_path)
    assert "separated 1 of 1 songs" in out and (tmp_path / "est" / "song" / "vocals.wav").is_file()
