"""Starting or joining Ray: a local Ray by default, a cluster when ``ray.address`` is set.

Inside a job (``ray job submit -- semisep ...``) Ray's job driver sets RAY_ADDRESS and
``ray.init()`` joins that cluster; semisep then never asks for a local Ray's CPU count.

A local Ray is this process's own: its dashboard (the state API) gets an address chosen here and
handed to every worker, so Ray Train's clean-up finds this Ray even when another semisep command
runs a Ray of its own on the same machine. The console keeps semisep's lines: Ray Data's execution
plans go to its log file (ray_data_logging.yaml), Ray's workers print errors only, and tracebacks
still reach the user.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading

from semisep.pipeline.config import Config

RAY_DATA_LOGGING = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ray_data_logging.yaml")


# What every Ray worker of semisep's job starts with (a variable the user set wins). Measured on
# the training step in a Ray Train worker (bench/README.md): without them its glibc heap returned
# and re-faulted the step's activation buffers every step (13% of the worker's time in the kernel,
# the step 0.75x of the same step outside Ray); with them, 0.95x or better. OpenMP: Ray Train and
# Tune run the training function in a second thread, which sets its own torch thread count; a
# pool left on the main thread would make libgomp see more threads than cores and stop spinning.
# MLflow's artifact bars: a worker's output is a log (the driver's console, `ray job logs`), where a
# carriage-return bar is garbage.
WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(128 << 20),
              "OMP_NUM_THREADS": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_ray(cfg: Config, say=None) -> None:
    """Initialise Ray once per process from ``cfg.ray``; project code is shipped to workers."""
    os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", RAY_DATA_LOGGING)  # read when ray.data is imported
    # Ray Tune's console tables ("Configuration for experiment", "View detailed results here", the
    # TensorBoard hint) print even at verbose=0 with its new output engine; semisep prints its own
    # progress lines for sweeps and experiments
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    if ray.is_initialized():
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    kwargs = dict(
        address=cfg.ray.address or None,
        include_dashboard=False,
        log_to_driver=True,
        configure_logging=True,
        logging_level="WARNING",
        # Ray's own workers and actors log at ERROR and above only; errors and tracebacks still show
        logging_config=ray.LoggingConfig(log_level="ERROR"),
    )
    joining = bool(cfg.ray.address and cfg.ray.address != "local") or "RAY_ADDRESS" in os.environ
    dashboard = ""
    if not joining:
        kwargs["num_cpus"] = cfg.ray.num_cpus or os.cpu_count()
        # Ray Train's spot-preemption watcher has nothing to watch on one machine, and its actor
        # makes the driver log a native error line per training; on a cluster it stays on
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        if cfg.ray.dashboard:
            port = cfg.ray.dashboard_port or _free_port()
            dashboard = f"http://127.0.0.1:{port}"
            kwargs |= {"include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port}
            # this Ray's state API, for Ray Train's placement-group cleaner in its workers
            os.environ["RAY_API_SERVER_ADDRESS"] = dashboard
    # workers on other nodes reach MLflow as the driver does: its settings and credentials
    env_vars = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")} if joining else {}
    env_vars |= {k: v for k, v in WORKER_ENV.items() if k not in os.environ}
    kwargs["runtime_env"] = {"env_vars": env_vars}
    if cfg.ray.address.startswith("ray://"):
        # Ray Client from a laptop: ship the code; cluster nodes install the project (cluster.yaml)
        kwargs["runtime_env"] = {"working_dir": root, "excludes": [".venv", "work", ".git"], "env_vars": env_vars}
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    before = signal.getsignal(signal.SIGTERM)
    ray.init(**kwargs)
    if callable(before) and threading.current_thread() is threading.main_thread():
        # Ray's core worker installs a SIGTERM handler that aborts the process; semisep's own
        # (the CLI's: unwind like Ctrl-C, so runs end KILLED) stays in force
        signal.signal(signal.SIGTERM, before)
    if dashboard:
        (say or (lambda line: print(line, file=sys.stderr, flush=True)))(f"Ray dashboard: {dashboard}")
