"""Ingestion: corpora -> Parquet shards of log-magnitude excerpts, as a Ray Data job.

``process_track`` is a plain function (decode, check, resample, STFT, cut, write one shard);
Ray Data maps it over the tracks of every corpus. A track whose shard already exists under its
content-addressed name is not recomputed. Bad files are recorded with their reason and skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.audio import load_audio, resample, to_mono
from pipeline.config import Config
from pipeline.corpora import TrackSpec, scan_corpus
from pipeline.errors import AudioError, SemisepError
from pipeline.shards import SCHEMA_VERSION, excerpt_starts, write_shard
from pipeline.spectrogram import TransformConfig, features, num_frames

MANIFEST = "manifest.parquet"
# One manifest row per track: its columns, in order, with the values a row starts from.
MANIFEST_DEFAULTS = {"corpus": "", "split": "", "role": "", "track_id": "", "path": "", "files": "", "size": 0,
                     "content_hash": "", "duration": 0.0, "sample_rate": 0, "channels": 0, "status": "ok",
                     "error": "", "shard": "", "excerpts": 0, "reused": False}


@dataclass
class IngestReport:
    manifest: pd.DataFrame
    dataset_version: str
    seconds: float

    @property
    def failed(self) -> pd.DataFrame:
        return self.manifest[self.manifest.status == "error"]

    @property
    def failed_share(self) -> float:
        return len(self.failed) / max(len(self.manifest), 1)


def file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _spec_files(spec: TrackSpec) -> list[str]:
    out = []
    for value in spec.files.values():
        out.extend(value if isinstance(value, list) else [value])
    return out


def shard_path(shards_dir: str, spec: TrackSpec, content_hash: str) -> str:
    return os.path.join(shards_dir, spec.corpus, spec.split, spec.role, f"part-{content_hash[:20]}.parquet")


def _load_source(value: str | list[str]) -> tuple[np.ndarray, int]:
    """One source: a file, or the sum of several stems (MUSDB accompaniment = drums+bass+other)."""
    if isinstance(value, str):
        return load_audio(value)
    total, sr = load_audio(value[0])
    for path in value[1:]:
        audio, sr2 = load_audio(path)
        if sr2 != sr or audio.shape != total.shape:
            raise AudioError(path, f"stem does not match {value[0]} (rate or length differs)")
        total = total + audio
    return total, sr


def process_track(spec: TrackSpec, transform: TransformConfig, shards_dir: str,
                  excerpt_frames: int, excerpt_hop: int, dtype: str) -> dict:
    """Ingest one track; never raises for bad audio. Returns its manifest row."""
    row = {**MANIFEST_DEFAULTS, "corpus": spec.corpus, "split": spec.split, "role": spec.role,
           "track_id": spec.track_id, "path": _spec_files(spec)[0], "files": json.dumps(spec.files)}
    try:
        if spec.error:
            raise AudioError(row["path"], spec.error)
        files = _spec_files(spec)
        for f in files:
            if not os.path.isfile(f):
                raise AudioError(f, "file not found")
        row["size"] = sum(os.path.getsize(f) for f in files)
        recipe = json.dumps([transform.to_dict(), excerpt_frames, excerpt_hop, dtype, SCHEMA_VERSION])
        digest = hashlib.sha256(recipe.encode())
        for f in files:
            digest.update(file_hash(f).encode())
        row["content_hash"] = digest.hexdigest()
        out = shard_path(shards_dir, spec, row["content_hash"])
        row["shard"] = out
        if os.path.exists(out):
            meta = pq.ParquetFile(out).metadata
            row.update(excerpts=meta.num_rows, reused=True)
            row.update(_describe(files[0]))
            return row
        sources, sr, channels, n = {}, 0, 0, 0
        for name, value in spec.files.items():
            audio, sr_i = _load_source(value)
            path_i = value if isinstance(value, str) else value[0]
            if sources and (sr_i != sr or audio.shape[1] != n):
                raise AudioError(path_i, f"{name} does not match the mixture: {sr_i} Hz x {audio.shape[1]} "
                                         f"samples vs {sr} Hz x {n} samples")
            sr, channels, n = sr_i, audio.shape[0], audio.shape[1]
            sources[name] = resample(to_mono(audio), sr, transform.sample_rate)
        row.update(duration=n / sr, sample_rate=sr, channels=channels)
        first = next(iter(sources.values()))
        if not np.any(first):
            raise AudioError(row["path"], "silent (all samples are zero)")
        total = num_frames(len(first), transform)
        starts = excerpt_starts(total, excerpt_frames, excerpt_hop)
        if not starts or len(first) <= transform.n_fft // 2:
            need = (excerpt_frames - 1) * transform.hop_length / transform.sample_rate
            raise AudioError(row["path"], f"too short: {n / sr:.2f} s, one excerpt needs {need:.2f} s")
        import torch

        torch.set_num_threads(1)
        specs = {k: features(torch.from_numpy(np.ascontiguousarray(v, np.float32)), transform).numpy()
                 for k, v in sources.items()}
        meta = {"track_id": spec.track_id, "corpus": spec.corpus, "split": spec.split, "role": spec.role}
        row["excerpts"] = write_shard(out, meta, specs, starts, transform, excerpt_frames, dtype)
    except AudioError as exc:
        row.update(status="error", error=exc.reason, path=exc.path, shard="")
    except Exception as exc:  # noqa: BLE001 - one odd file must not stop the night
        row.update(status="error", error=f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:200]}", shard="")
    return row


def _describe(path: str) -> dict:
    import soundfile as sf

    try:
        info = sf.info(path)
        return {"duration": info.duration, "sample_rate": info.samplerate, "channels": info.channels}
    except Exception:  # noqa: BLE001 - description only; the shard already exists
        return {}


def _process_row(item: dict, **kwargs) -> dict:
    spec = TrackSpec(**json.loads(item["spec"]))
    return process_track(spec, **kwargs)


def scan(cfg: Config) -> list[TrackSpec]:
    if not cfg.data.corpora:
        raise SemisepError("no corpora in the config: add data.corpora entries (name, path, format, use)")
    specs = []
    for corpus in cfg.data.corpora:
        specs.extend(scan_corpus(corpus))
    return specs


def ingest(cfg: Config, progress: bool = True) -> IngestReport:
    """Run ingestion over every corpus of ``cfg`` with Ray Data and write the manifest."""
    import ray

    from pipeline.ray_session import ensure_ray

    started = time.time()
    specs = scan(cfg)
    ensure_ray(cfg)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    items = [{"spec": json.dumps(dataclasses.asdict(s))} for s in specs]
    kwargs = dict(transform=cfg.transform, shards_dir=os.path.abspath(cfg.data.shards_dir),
                  excerpt_frames=cfg.data.excerpt_frames, excerpt_hop=cfg.data.excerpt_hop,
                  dtype=cfg.data.dtype)
    rows = []
    if items:
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        rows = ds.map(_process_row, fn_kwargs=kwargs, num_cpus=1).take_all()
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_DEFAULTS))
    manifest = manifest.sort_values(["corpus", "split", "role", "track_id"]).reset_index(drop=True)
    version = dataset_version(manifest, cfg.transform)
    write_manifest(manifest, cfg.data.shards_dir, version)
    return IngestReport(manifest, version, time.time() - started)


def dataset_version(manifest: pd.DataFrame, transform: TransformConfig) -> str:
    """Hash of the shards in use and the transform: equal versions mean equal training data."""
    ok = manifest[manifest.status == "ok"]
    blob = json.dumps([transform.to_dict(), sorted(map(os.path.basename, ok.shard))])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_manifest(manifest: pd.DataFrame, shards_dir: str, version: str) -> str:
    path = Path(shards_dir) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(manifest, preserve_index=False)
    table = table.replace_schema_metadata({"semisep.dataset_version": version})
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return str(path)


def read_manifest(shards_dir: str) -> tuple[pd.DataFrame, str]:
    path = Path(shards_dir) / MANIFEST
    if not path.exists():
        raise SemisepError(f"{path}: no manifest; run `semisep ingest` first")
    table = pq.read_table(path)
    version = (table.schema.metadata or {}).get(b"semisep.dataset_version", b"").decode()
    return table.to_pandas(), version


def format_report(report: IngestReport) -> str:
    m = report.manifest
    ok = m[m.status == "ok"]
    lines = [
        f"ingested {len(ok)} of {len(m)} tracks ({int(ok.reused.sum())} unchanged, reused) "
        f"in {report.seconds:.1f} s: {ok.duration.sum() / 3600:.3f} h of audio, "
        f"{int(ok.excerpts.sum())} excerpts; dataset version {report.dataset_version}",
    ]
    for _, row in report.failed.iterrows():
        lines.append(f"  skipped {row.path}: {row.error}")
    return "\n".join(lines)
