"""Starting or joining Ray: a local Ray by default, a cluster when ``ray.address`` is set.

Inside a job (``ray job submit -- semisep ...``) Ray's job driver sets RAY_ADDRESS and
``ray.init()`` joins that cluster; semisep then never asks for a local Ray's CPU count.
"""

from __future__ import annotations

import os

from pipeline.config import Config


def ensure_ray(cfg: Config) -> None:
    """Initialise Ray once per process from ``cfg.ray``; project code is shipped to workers."""
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
        # Ray's own workers and actors log at ERROR and above only: without the dashboard (not
        # installed), Ray Train's placement-group cleaner warns every second that the state API is
        # unavailable, which buried every line semisep prints. Errors and tracebacks still show.
        logging_config=ray.LoggingConfig(log_level="ERROR"),
    )
    joining = bool(cfg.ray.address and cfg.ray.address != "local") or "RAY_ADDRESS" in os.environ
    if not joining:
        kwargs["num_cpus"] = cfg.ray.num_cpus or os.cpu_count()
    if cfg.ray.address.startswith("ray://"):
        # Ray Client from a laptop: ship the code; cluster nodes install the project (cluster.yaml)
        kwargs["runtime_env"] = {"working_dir": root, "excludes": [".venv", "work", ".git"]}
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    ray.init(**kwargs)
