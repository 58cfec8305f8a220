"""bench/gpu.sh runs in CI with --device cpu, so the GPU box's one command cannot rot between GPU runs."""

import subprocess

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
