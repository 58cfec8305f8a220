"""bench/gpu.sh runs in CI with --device cpu, so the GPU box's one command cannot rot between GPU runs."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_gpu_bench_runs_on_cpu_and_prints_its_table():
    proc = subprocess.run(["bash", "bench/gpu.sh", "--device", "cpu", "--seconds", "0.5", "--song-seconds", "20"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    steps = [r for r in rows if r.startswith(("| semi-supervised |", "| supervised |"))]
    assert len(steps) == 6 and not any("failed" in r for r in steps), "\n".join(rows)
    assert any(r.startswith("| separate |") and "x real time" in r for r in rows)
    assert any(r.startswith("| numerics |") for r in rows)


def test_convolution_bench_prints_every_layer_and_the_fixed_cost(monkeypatch, capsys):
    """bench/convs.py with one timed call per figure: every layer's row holds four timings."""
    import bench.convs as convs

    fast = convs.best_ms
    monkeypatch.setattr(convs, "best_ms", lambda fn, repeats=1, calls=1: fast(fn, repeats=1, calls=1))
    convs.main()
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| U-Net") or line.startswith("| critic")]
    assert len(rows) == len(convs.LAYERS)
    assert all(row.count("(") == 4 for row in rows), rows
    assert "2026-11-27 step" in out and "today's" in out


def test_train_bench_times_fp32_against_bf16_in_one_run():
    """bench/train.py --plain-only: the step tables and the precision table (both precisions timed)."""
    # batch 4: on a processor without native bf16 the bf16 rows are emulated, and at the demo's batch
    # of 16 they were 120 of the test's 140 s
    proc = subprocess.run([sys.executable, "bench/train.py", "--plain-only", "--seconds", "0.1", "--rounds", "1",
                           "--cpus", "1", "--batch-size", "4"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert "train.precision: auto picks" in out
    table = out.split("| step | fp32 steps/s | bf16 steps/s | bf16 / fp32 |")[1]
    rows = [line.split("|")[2:5] for line in table.splitlines() if line.startswith(("| supervised", "| semi-supervised"))]
    assert len(rows) == 2 and all(float(x) > 0 for row in rows for x in row), table
