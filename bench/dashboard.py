"""What the Ray dashboard costs a local run: start-up seconds and memory, against Ray without it.

Each row starts a local Ray the way every semisep command does (``semisep.pipeline.ray_session.ensure_ray``)
in a fresh process, ``--repeats`` times, alternating with and without the dashboard:

- baseline: ``ray.dashboard: false`` (``include_dashboard=False``, as semisep ran before);
- dashboard: the default (dashboard and state API on 127.0.0.1, a free port).

Start-up = wall seconds of ``ensure_ray`` (``ray.init`` until it returns); memory of the process
tree (driver, GCS, raylet, dashboard and its module processes, agents, idle workers) after
``--settle`` seconds, when the dashboard's modules have loaded: USS (memory only those processes
hold, what the machine loses) and RSS (summed per process, so shared libraries count once per
process).

    .venv/bin/python bench/dashboard.py            # 3 repeats each
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import psutil
from semisep.pipeline.config import Config
from semisep.pipeline.ray_session import ensure_ray
cfg = Config()
cfg.ray.num_cpus = 2
cfg.ray.dashboard = sys.argv[1] == "1"
t0 = time.perf_counter()
ensure_ray(cfg, say=lambda line: None)
startup = time.perf_counter() - t0
time.sleep(float(sys.argv[2]))
me = psutil.Process()
rss = uss = procs = 0
for p in [me, *me.children(recursive=True)]:
    try:
        info = p.memory_full_info()
        rss, uss, procs = rss + info.rss, uss + info.uss, procs + 1
    except psutil.Error:
        pass
import ray
ray.shutdown()
print(json.dumps({"startup_s": startup, "rss_mib": rss / 2**20, "uss_mib": uss / 2**20, "processes": procs}))
"""


def once(dashboard: bool, settle: float) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, "1" if dashboard else "0", str(settle)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after start-up before memory is read")
    args = parser.parse_args()
    runs = {False: [], True: []}
    for _ in range(args.repeats):
        for dashboard in (False, True):
            runs[dashboard].append(once(dashboard, args.settle))
    keys = ("startup_s", "uss_mib", "rss_mib", "processes")
    rows = {k: {m: statistics.median(r[m] for r in v) for m in keys} for k, v in runs.items()}
    base, dash = rows[False], rows[True]
    print(f"Local Ray start-up, median of {args.repeats} fresh processes each (memory after {args.settle:g} s)\n")
    print("| | start-up s | USS MiB | RSS MiB (summed) | processes |")
    print("|---|---:|---:|---:|---:|")
    for label, r in (("baseline: no dashboard", base), ("dashboard (default)", dash)):
        print(f"| {label} | {r['startup_s']:.2f} | {r['uss_mib']:.0f} | {r['rss_mib']:.0f} | {r['processes']:.0f} |")
    print(f"| dashboard - baseline | {dash['startup_s'] - base['startup_s']:+.2f} | {dash['uss_mib'] - base['uss_mib']:+.0f} "
          f"| {dash['rss_mib'] - base['rss_mib']:+.0f} | {dash['processes'] - base['processes']:+.0f} |")
    print(f"\nratio dashboard / baseline: start-up {dash['startup_s'] / base['startup_s']:.2f}x, "
          f"USS {dash['uss_mib'] / base['uss_mib']:.2f}x")


if __name__ == "__main__":
    main()
