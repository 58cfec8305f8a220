"""`semisep train` shows its progress while it runs, and nothing but its last line with --quiet."""

from __future__ import annotations

import re

import pytest
import yaml

from semisep.pipeline.config import Config

pytestmark = pytest.mark.slow


def _train(config, capsys, *extra) -> tuple[int, str, str]:
    """`semisep train` in this process (its Ray already running); output captured, not a terminal."""
    from semisep.cli import main

    code = main(["train", "--config", str(config), "--name", "progress", *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_prints_a_line_per_validation_when_not_on_a_terminal_and_only_its_last_line_when_quiet(
        ingested, tmp_path, capsys):
    base, _ = ingested
    cfg = Config.from_dict(base.to_dict())
    cfg.data.workdir, cfg.data.store = str(tmp_path / "work"), base.data.shards_dir  # its own MLflow store
    cfg.train.max_steps, cfg.train.val_every, cfg.train.log_every = 6, 2, 1
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))

    code, out, err = _train(config, capsys)  # stdout is not a terminal here, as in a log or `ray job logs`
    assert code == 0, err[-3000:]
    lines = out.rstrip().splitlines()
    final = lines[-1]
    assert final.startswith("progress: best at step") and "MLflow run" in final
    progress = [line for line in lines[:-1] if line.startswith("  progress: step ")]
    assert len(progress) == 3, out  # one per validation: steps 2, 4, 6
    for line, step in zip(progress, (2, 4, 6)):
        assert re.search(rf"step {step}/6 · [0-9.]+ steps/s · .* left · loss [0-9.]+ · validation SDR vocals "
                         r"-?[0-9.]+ dB, best -?[0-9.]+ dB \(step \d\)$", line), line
    assert "\r" not in out + err  # no bar when the output is not a terminal

    code, out, err = _train(config, capsys, "--quiet")
    assert code == 0, err[-3000:]
    assert len(out.strip().splitlines()) == 1 and out.startswith("progress: best at step"), out
