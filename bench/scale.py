"""Training on more audio than fits in memory: the streamed reader against the in-memory one, by corpus size.

Writes a synthetic shard store (valid schema and manifest, random STFT planes, no audio decoding)
with H hours of each unpaired role (mixture, vocals, accompaniment; 3-minute tracks), 0.25 hours
of paired training songs and 40 seconds of validation songs, then trains ``--steps`` steps of the
demo config (configs/demo.yaml: the paper's transform, semisep's default supervised+remix, which
reads the paired songs and every vocal and accompaniment excerpt) with Ray Train, 1 worker, and
prints per H and reader:

- time to first step: from the driver's ``train()`` call to the end of the worker's first step
  (Ray Train's start-up, the data plan and the first window or, in memory, every row read);
- steady steps/s: the median of the ``steps_per_s`` the worker reports per validation window
  after the first;
- the training worker's peak RSS (the Ray Train worker process, sampled every 50 ms).

Baseline, measured in the same run: ``train.reader: memory`` (every row of the worker's share
read before the first step), where it fits in this machine's memory. At the smallest H the two
readers run ``--rounds`` times in alternation and the steady rates are compared per round (a shared
VM's speed drifts by 20% within minutes); the ratio printed is the median of the rounds'. One
store of the largest H is written (then synced to disk, so its write-back does not run during the
timings); the smaller ones are manifests over its first tracks. Then a reader-only row: rows/s
and RSS of one streamed source against Ray Data's ``read_parquet`` + ``iter_batches`` with a
local shuffle buffer of the same size, over the 1-hour vocals.

    .venv/bin/python bench/scale.py                      # H = 1, 8, 32 (~22 GB of shards in bench-scale/)
    .venv/bin/python bench/scale.py --hours 0.05 --steps 20   # a smoke run
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import psutil  # noqa: E402

import bench  # noqa: E402,F401 - the checkout's semisep when it is not installed
from semisep.pipeline.config import Config, load_config  # noqa: E402

TRACK_SECONDS = 180.0
PAIRED_HOURS = 0.25
VALID = (2, 20.0)  # songs, seconds each
ROLES = ("mixture", "vocals", "accompaniment")


def track_rows(cfg: Config, seconds: float) -> tuple[int, list[int]]:
    frames = int(seconds * cfg.transform.sample_rate / cfg.transform.hop_length)
    from semisep.pipeline.shards import excerpt_starts

    return frames, excerpt_starts(frames, cfg.data.excerpt_frames, cfg.data.excerpt_hop)


def _write_track(job: tuple) -> dict:
    """One shard of random planes (in a worker process)."""
    from semisep.pipeline.shards import write_shard

    path, meta, columns, seconds, cfg_dict, seed = job
    cfg = Config.from_dict(cfg_dict)
    frames, starts = track_rows(cfg, seconds)
    if not os.path.exists(path):  # kept from an earlier run
        rng = np.random.default_rng(seed)
        shape = (cfg.transform.freq_bins, frames)
        sources = {}
        for column in columns:
            spec = np.empty(shape, np.complex64)
            spec.real = rng.standard_normal(shape, np.float32)
            spec.imag = rng.standard_normal(shape, np.float32)
            sources[column] = spec
        write_shard(path, meta, sources, starts, cfg.transform, cfg.data.excerpt_frames, cfg.data.dtype)
    return {**meta, "sources": ",".join(columns), "path": f"/synthetic/{meta['corpus']}/{meta['track_id']}.wav",
            "size": 0, "mtime_ns": 0, "file_hash": f"{seed:064x}", "duration": seconds,
            "sample_rate": 44100, "channels": 2, "status": "ok", "error": "", "track_hash": f"{seed:016x}",
            "shard": path, "excerpts": len(starts), "processed": True}


def write_files(root: Path, cfg: Config, hours: float) -> pd.DataFrame:
    """Shards for the largest store (written once; kept between runs); returns their manifest rows."""
    jobs = []
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)

    def add(split, role, columns, count, seconds):
        for i in range(count):
            seed = len(jobs) + 1
            meta = {"track_id": f"{split}-{role}-{i:05d}", "corpus": "synthetic", "split": split, "role": role}
            jobs.append((str(files / f"{split}-{role}-{i:05d}.parquet"), meta, columns, seconds, cfg.to_dict(), seed))

    add("train", "paired", ROLES, round(PAIRED_HOURS * 3600 / TRACK_SECONDS), TRACK_SECONDS)
    add("valid", "paired", ROLES, VALID[0], VALID[1])
    per_role = max(1, round(hours * 3600 / TRACK_SECONDS))
    for role in ROLES:
        add("train", role, (role,), per_role, min(TRACK_SECONDS, hours * 3600))
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        rows = list(pool.map(_write_track, jobs, chunksize=4))
    os.sync()
    print(f"store files: {len(rows)} shards in {files}, {sum(f.stat().st_size for f in files.glob('*.parquet')) / 2**30:.1f} GiB "
          f"({time.perf_counter() - start:.0f} s)", flush=True)
    return pd.DataFrame(rows)


def write_store(root: Path, rows: pd.DataFrame, cfg: Config, hours: float) -> Path:
    """A versioned store (pipeline/table.py) over the first ``hours`` of each unpaired role (and all
    paired songs): the shared files hard-linked into the store's layout, one commit, the manifest."""
    from semisep.pipeline import table
    from semisep.pipeline.manifest import COLUMNS, write_manifest
    from semisep.pipeline.shards import TABLE_SCHEMA

    per_role = max(1, round(hours * 3600 / TRACK_SECONDS))
    unpaired = rows.role.isin(ROLES)
    keep = rows[~unpaired | (rows.groupby("role").cumcount() < per_role)].copy()
    store = root / f"store-{hours:g}h"
    if store.exists():
        shutil.rmtree(store)
    linked = []
    for r in keep.itertuples(index=False):
        folder = store / r.corpus / r.split / r.role
        folder.mkdir(parents=True, exist_ok=True)
        os.link(r.shard, folder / f"part-{Path(r.shard).stem}.parquet")
        linked.append(str(folder / f"part-{Path(r.shard).stem}.parquet"))
    keep["shard"] = linked
    manifest = keep[list(COLUMNS)].reset_index(drop=True)
    version = table.commit(str(store), dict(zip(manifest.shard, manifest.excerpts)), [], "bench", schema=TABLE_SCHEMA)
    write_manifest(manifest, str(store), version)
    return store


class WorkerRss:
    """Peak RSS of this process tree's Ray Train worker processes, sampled every ``interval`` s."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak_mib = interval, 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            for proc in psutil.Process().children(recursive=True):
                try:
                    if any("RayTrainWorker" in part for part in proc.cmdline()):
                        self.peak_mib = max(self.peak_mib, proc.memory_info().rss / 2**20)
                except psutil.Error:
                    pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def train_row(cfg: Config, name: str) -> dict:
    from mlflow import MlflowClient

    from semisep.training.train import train

    with WorkerRss() as rss:
        result = train(cfg, name)
    client = MlflowClient(cfg.tracking_uri)
    history = lambda key: [m.value for m in sorted(client.get_metric_history(result.run_id, key), key=lambda m: m.step)]  # noqa: E731
    windows = history("steps_per_s")
    return {"first_step_s": history("first_step_s")[0], "steady": statistics.median(windows[1:] or windows),
            "rss_mib": rss.peak_mib}


def memory_estimate_gib(store: Path, cfg: Config) -> float:
    """What the in-memory reader holds for supervised+remix: the paired songs, the vocal and
    accompaniment rows, the remix pools' concatenated copies of both, and the validation split."""
    from semisep.pipeline.manifest import read_manifest

    manifest, _ = read_manifest(str(store))
    rows = lambda role, split="train": int(manifest[(manifest.role == role) & (manifest.split == split)].excerpts.sum())  # noqa: E731
    paired, vocals, accompaniment = rows("paired"), rows("vocals"), rows("accompaniment")
    held = 3 * paired + vocals + accompaniment + (paired + vocals) + (paired + accompaniment) + 3 * rows("paired", "valid")
    return held * 2 * cfg.transform.freq_bins * cfg.data.excerpt_frames * (2 if cfg.data.dtype == "float16" else 4) / 2**30


def reader_row(store: Path, cfg: Config, rows_to_read: int) -> list[str]:
    """Rows/s and RSS growth of one streamed source vs Ray Data's local shuffle, same buffer."""
    from concurrent.futures import ThreadPoolExecutor

    import ray

    from semisep.pipeline.shards import decode_column
    from semisep.training.data import stream_files, window_rows
    from semisep.training.stream import ShardStream, initial_state

    cfg.data.store = str(store)
    files = stream_files(cfg)["vocals"]
    out = []
    me = psutil.Process()
    before = me.memory_info().rss
    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        stream = ShardStream(files, cfg.transform, cfg.data.excerpt_frames, 0, initial_state(0, 1, window_rows(cfg)), pool)
        done = 0
        while done < rows_to_read:
            done += len(stream.take(cfg.train.batch_size)["vocals"])
        stream.close()
    seconds = time.perf_counter() - start
    out.append(f"| semisep ShardStream (window {window_rows(cfg)}, read-ahead) | {done / seconds:,.0f} | "
               f"{(me.memory_info().rss - before) / 2**20:+.0f} |")
    ds = ray.data.read_parquet(list(files.paths)).select_columns(["vocals"])
    before = me.memory_info().rss
    start = time.perf_counter()
    done = 0
    for batch in ds.iter_batches(batch_size=cfg.train.batch_size, batch_format="pyarrow",
                                 local_shuffle_buffer_size=cfg.train.shuffle_buffer, local_shuffle_seed=0):
        planes = decode_column(batch.column("vocals"), cfg.transform.freq_bins, cfg.data.excerpt_frames)
        done += len(planes)
        if done >= rows_to_read:
            break
    seconds = time.perf_counter() - start
    out.append(f"| Ray Data read_parquet + iter_batches (local shuffle {cfg.train.shuffle_buffer}) | "
               f"{done / seconds:,.0f} | {(me.memory_info().rss - before) / 2**20:+.0f} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, nargs="+", default=[1, 8, 32], help="hours of each unpaired role")
    parser.add_argument("--steps", type=int, default=300, help="training steps per run (validation every steps/6)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating stream/memory pairs at the smallest H")
    parser.add_argument("--workdir", default="bench-scale", help="store and MLflow (kept: the store is written once)")
    parser.add_argument("--memory-limit-gib", type=float, default=psutil.virtual_memory().total / 2**30 * 0.7,
                        help="skip the in-memory reader where its estimate exceeds this")
    args = parser.parse_args()
    root = Path(args.workdir).resolve()
    cfg = load_config("configs/demo.yaml", [f"data.workdir={root}", "mlflow.experiment=bench-scale",
                                            f"train.max_steps={args.steps}", f"train.val_every={max(1, args.steps // 6)}",
                                            f"train.log_every={max(1, args.steps // 6)}", "train.patience=1000",
                                            ])
    rows = write_files(root, cfg, max(args.hours))
    table, ratios = [], []
    for hours in sorted(args.hours):
        store = write_store(root, rows, cfg, hours)
        rounds = args.rounds if hours == min(args.hours) else 1
        for round_ in range(rounds):
            got = {}
            for reader in ("stream", "memory"):
                estimate = memory_estimate_gib(store, cfg)
                if reader == "memory" and estimate > args.memory_limit_gib:
                    table.append(f"| {hours:g} | memory | does not fit (~{estimate:.0f} GiB) | | |")
                    continue
                run = Config.from_dict(cfg.to_dict())
                run.data.store, run.train.reader = str(store), reader
                got[reader] = train_row(run, f"scale-{hours:g}h-{reader}")
                table.append(f"| {hours:g} | {reader} | {got[reader]['first_step_s']:.1f} | {got[reader]['steady']:.2f} | "
                             f"{got[reader]['rss_mib']:,.0f} |")
                print(table[-1], flush=True)
            if hours == min(args.hours) and "memory" in got:
                ratios.append(got["stream"]["steady"] / got["memory"]["steady"])
    print(f"\nbench/scale.py: demo config (paper transform, {cfg.data.excerpt_frames}-frame excerpts, batch "
          f"{cfg.train.batch_size}, supervised+remix), {args.steps} steps, 1 Ray Train worker, "
          f"train.shuffle_buffer {cfg.train.shuffle_buffer}; baseline: reader memory\n")
    print("| hours per unpaired role | reader | time to first step (s) | steady steps/s | worker peak RSS (MiB) |")
    print("|---:|---|---:|---:|---:|")
    print("\n".join(table))
    if ratios:
        print(f"\nsteady steps/s, stream / memory at {min(args.hours):g} h, per round: "
              f"{', '.join(f'{r:.3f}' for r in ratios)}; median {statistics.median(ratios):.3f}")
    smallest = write_store(root, rows, cfg, min(args.hours))
    rows_to_read = int(rows[rows.role == "vocals"].excerpts.iloc[: max(1, round(min(args.hours) * 3600 / TRACK_SECONDS))].sum())
    print(f"\nreaders alone, {min(args.hours):g} h of vocals ({rows_to_read} rows, batches of {cfg.train.batch_size}):\n")
    print("| reader | rows/s | RSS growth (MiB) |")
    print("|---|---:|---:|")
    print("\n".join(reader_row(smallest, Config.from_dict(cfg.to_dict()), rows_to_read)))


if __name__ == "__main__":
    main()
