"""Ingestion: corpora -> Parquet shards of log-magnitude excerpts, as an incremental Ray Data job.

``process_track`` is a plain function (hash, decode, check, resample, STFT, cut, write one
shard) that never raises for bad audio: it returns the track's manifest rows, with the reason
when a file cannot be used. ``ingest`` runs it with Ray Data over the tracks that are new or
changed since the last run; unchanged tracks keep their rows and shards untouched.

A run holds the store's lock, removes temp files a killed run left, writes shards under
content-addressed names (temp name, then rename), then commits one new version of the store's
Delta table (pipeline/table.py): the new shards added, the ones no track uses any more (changed or
deleted files) removed from the table but not from disk, so a run pinned to an older version
still reads them until ``vacuum`` deletes them after ``data.retention_days``. Then it rewrites the
manifest (the ``_sources`` table).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from semisep.pipeline import storage, table
from semisep.pipeline.audio import audio_info
from semisep.pipeline.config import Config, TransformConfig
from semisep.pipeline.corpora import TrackSpec, load_source, scan_corpus
from semisep.pipeline.errors import AudioError, SemisepError, StoreError
from semisep.pipeline.manifest import COLUMNS, read_manifest, shards_in_use, store_lock, write_manifest
from semisep.pipeline.shards import SCHEMA_VERSION, TABLE_SCHEMA, excerpt_starts, write_shard
from semisep.pipeline.spectrogram import num_frames, resample, stft, to_mono

TRACK_KEY = ["corpus", "split", "role", "track_id"]


@dataclass
class IngestReport:
    manifest: pd.DataFrame
    dataset_version: str
    seconds: float
    processed: int = 0  # files decoded (or re-hashed) by this run
    removed: int = 0  # shards this version no longer uses (kept on disk for data.retention_days)

    @property
    def failed(self) -> pd.DataFrame:
        return self.manifest[self.manifest.status == "error"]

    @property
    def tracks(self) -> int:
        return len(self.manifest.drop_duplicates(TRACK_KEY))

    @property
    def failed_tracks(self) -> int:
        return len(self.failed.drop_duplicates(TRACK_KEY))

    @property
    def failed_share(self) -> float:
        """Failed tracks over all tracks (a bad stem fails its track once, not once per sibling file)."""
        return self.failed_tracks / max(self.tracks, 1)


@dataclass(frozen=True)
class Recipe:
    """Everything besides the audio that decides a shard's bytes."""

    transform: TransformConfig
    excerpt_frames: int
    excerpt_hop: int
    dtype: str

    def key(self) -> str:
        return json.dumps([self.transform.to_dict(), self.excerpt_frames, self.excerpt_hop, self.dtype, SCHEMA_VERSION])


def file_hash(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise AudioError(path, f"cannot read: {exc.strerror or exc}") from None
    return digest.hexdigest()


def track_hash(spec: TrackSpec, file_hashes: dict[str, str], recipe: Recipe) -> str:
    """Content address of a track's shard: its files' bytes, its layout, its identity, the recipe."""
    layout = {src: [{**p, "path": file_hashes[p["path"]]} for p in parts] for src, parts in spec.files.items()}
    blob = json.dumps([recipe.key(), spec.corpus, spec.split, spec.role, spec.track_id, layout], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def shard_path(shards_dir: str, spec: TrackSpec, content_hash: str) -> str:
    return storage.join(shards_dir, spec.corpus, spec.split, spec.role, f"part-{content_hash[:20]}.parquet")


def _new_rows(spec: TrackSpec) -> dict[str, dict]:
    rows = {}
    for path in spec.paths():
        sources = [s for s, parts in spec.files.items() if any(p["path"] == path for p in parts)]
        rows[path] = {**COLUMNS, "corpus": spec.corpus, "split": spec.split, "role": spec.role,
                      "track_id": spec.track_id, "sources": ",".join(sources), "path": path}
    return rows


def _fail(rows: dict[str, dict], path: str, reason: str, status: str = "error") -> list[dict]:
    """Mark the whole track failed: ``path`` with the reason, its other files pointing to it."""
    first = path if path in rows else next(iter(rows))
    for p, row in rows.items():
        other = f"not ingested: {os.path.basename(first)} of this track: {reason}"
        row.update(status=status, error=reason if p == first else other, shard="", excerpts=0)
    return list(rows.values())


def _stat_and_hash(rows: dict[str, dict], known: dict[str, dict]) -> dict[str, str]:
    """Fill size, mtime and hash per file; a file unchanged since the last run is not re-read."""
    hashes = {}
    for path, row in rows.items():
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise AudioError(path, "file not found") from None
        except OSError as exc:
            raise AudioError(path, f"cannot read: {exc.strerror or exc}") from None
        row.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
        prev = known.get(path)
        if prev and (prev["size"], prev["mtime_ns"]) == (st.st_size, st.st_mtime_ns) and prev["file_hash"]:
            hashes[path] = prev["file_hash"]
            row.update(duration=prev["duration"], sample_rate=prev["sample_rate"], channels=prev["channels"])
        else:
            hashes[path] = file_hash(path)
        row["file_hash"] = hashes[path]
    return hashes


def process_track(spec: TrackSpec, recipe: Recipe, shards_dir: str, known: dict[str, dict] | None = None) -> list[dict]:
    """Ingest one track; never raises for bad audio. Returns one manifest row per file.

    known: path -> the file's previous manifest row, so unchanged files skip re-hashing.
    """
    rows = _new_rows(spec)
    if spec.skip:
        return _fail(rows, spec.paths()[0], spec.skip, status="skipped")
    if spec.error:
        return _fail(rows, spec.paths()[0], spec.error)
    for row in rows.values():
        row["processed"] = True
    try:
        hashes = _stat_and_hash(rows, known or {})
        content = track_hash(spec, hashes, recipe)
        out = shard_path(shards_dir, spec, content)
        for row in rows.values():
            row.update(track_hash=content, shard=out)
        if storage.exists(out):  # same bytes as a shard already written (e.g. a touched file, a rerun)
            fs, inner = storage.resolve(out)
            n = pq.ParquetFile(inner, filesystem=fs).metadata.num_rows
            for path, row in rows.items():
                row["excerpts"] = n
                if not row["duration"]:  # the manifest row is new: read the header, not the audio
                    row["duration"], row["sample_rate"], row["channels"] = audio_info(path)
            return list(rows.values())
        n = _write_track_shard(spec, recipe, out, rows)
        for row in rows.values():
            row["excerpts"] = n
    except AudioError as exc:
        return _fail(rows, exc.path, exc.reason)
    except StoreError:
        raise  # the store failed, not this track: the run stops and says so
    except Exception as exc:  # noqa: BLE001 - one odd file must not stop the night
        return _fail(rows, spec.paths()[0], f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
    return list(rows.values())


def _write_track_shard(spec: TrackSpec, recipe: Recipe, out: str, rows: dict[str, dict]) -> int:
    """Decode, check, resample to mono at the model rate, STFT, cut into excerpts, write."""
    import torch

    transform = recipe.transform
    cache: dict = {}
    sources, sr, n, first_path = {}, 0, 0, ""
    for name, parts in spec.files.items():
        audio, sr_i = load_source(parts, cache)
        if sources and (sr_i != sr or audio.shape[1] != n):
            raise AudioError(parts[0]["path"], f"{name} does not match {os.path.basename(first_path)}: "
                                               f"{sr_i} Hz x {audio.shape[1]} samples vs {sr} Hz x {n} samples")
        if not sources:
            sr, n, first_path = sr_i, audio.shape[1], parts[0]["path"]
        sources[name] = resample(to_mono(audio), sr, transform.sample_rate)
    for (path, _stream), (audio, sr_p) in cache.items():
        rows[path].update(duration=audio.shape[1] / sr_p, sample_rate=sr_p, channels=audio.shape[0])
    first = next(iter(sources.values()))
    if not np.any(first):
        raise AudioError(first_path, "silent (all samples are zero)")
    starts = excerpt_starts(num_frames(len(first), transform), recipe.excerpt_frames, recipe.excerpt_hop)
    if not starts or len(first) <= transform.n_fft // 2:
        need = (recipe.excerpt_frames - 1) * transform.hop_length / transform.sample_rate
        raise AudioError(first_path, f"too short: {n / sr:.2f} s, one excerpt needs {need:.2f} s")
    torch.set_num_threads(1)
    specs = {k: stft(torch.from_numpy(np.ascontiguousarray(v, np.float32)), transform)[: transform.freq_bins].numpy()
             for k, v in sources.items()}
    meta = {"track_id": spec.track_id, "corpus": spec.corpus, "split": spec.split, "role": spec.role}
    return write_shard(out, meta, specs, starts, transform, recipe.excerpt_frames, recipe.dtype)


def _process_item(item: dict, recipe: Recipe, shards_dir: str) -> dict:
    spec = TrackSpec(**json.loads(item["spec"]))
    if spec.mirror:  # a URI corpus: this node may not hold the driver's mirror of it
        for path in spec.paths():
            try:
                storage.ensure_local(path, *spec.mirror)
            except OSError:
                pass  # reported by the decoder as the file's error, like any unreadable file
    try:
        rows = process_track(spec, recipe, shards_dir, json.loads(item["known"]))
    except StoreError as exc:  # returned, not raised: Ray Data would wrap it beyond recognition
        return {"rows": "[]", "store_error": json.dumps([exc.location, exc.reason])}
    return {"rows": json.dumps(rows), "store_error": ""}


def scan(cfg: Config) -> list[TrackSpec]:
    if not cfg.data.corpora:
        raise SemisepError("no corpora in the config: add data.corpora entries (name, path, format, use)")
    specs = []
    for corpus in cfg.data.corpora:
        specs.extend(scan_corpus(corpus, cfg.data.audio_cache_dir))
    return specs


def _reusable(spec: TrackSpec, previous: list[dict], recipe: Recipe) -> bool:
    """True when the track's files are unchanged (size, mtime) since ``previous`` rows were written
    and those rows are a finished result (ingested, or skipped on purpose); failed tracks are retried."""
    by_path = {r["path"]: r for r in previous}
    if spec.error or spec.skip or set(by_path) != set(spec.paths()):
        return False
    for path, row in by_path.items():
        try:
            st = os.stat(path)
        except OSError:
            return False
        if (row["size"], row["mtime_ns"]) != (st.st_size, st.st_mtime_ns) or not row["file_hash"]:
            return False
    if track_hash(spec, {p: r["file_hash"] for p, r in by_path.items()}, recipe) != previous[0]["track_hash"]:
        return False
    status = previous[0]["status"]
    if status == "error":
        return False  # failed before (a full disk, a transient read error): try again
    return status == "skipped" or (storage.exists(previous[0]["shard"]) and all(r["duration"] > 0 for r in previous))


def _remove_temp_files(shards_dir: str) -> int:
    """Temp files of a run that was killed mid-write (the lock says none is running now)."""
    temps = storage.list_files(shards_dir, lambda name: name.startswith(".") and name.endswith(".tmp"))
    for tmp in temps:
        storage.delete(tmp)
    return len(temps)


def ingest(cfg: Config, progress: bool = True) -> IngestReport:
    """Ingest every corpus of ``cfg`` incrementally with Ray Data; write the manifest.

    Shards and manifest go to ``data.store`` (a path or URI); source audio is read from local or
    mounted paths that every node sees at the same place.
    """
    shards_dir = cfg.data.shards_dir
    table.refuse_old_layout(shards_dir)
    with store_lock(shards_dir, cfg.data.workdir):
        return _ingest_locked(cfg, shards_dir, progress)


def _ingest_locked(cfg: Config, shards_dir: str, progress: bool) -> IngestReport:
    started = time.time()
    _remove_temp_files(shards_dir)
    recipe = Recipe(cfg.transform, cfg.data.excerpt_frames, cfg.data.excerpt_hop, cfg.data.dtype)
    specs = scan(cfg)
    previous, _ = read_manifest(shards_dir, missing_ok=True)
    prev_rows = {}
    for row in previous.to_dict("records"):
        prev_rows.setdefault((row["corpus"], row["split"], row["role"], row["track_id"]), []).append(row)
    rows, todo = [], []
    for spec in specs:
        old = prev_rows.get((spec.corpus, spec.split, spec.role, spec.track_id), [])
        if _reusable(spec, old, recipe):
            rows.extend({**r, "processed": False} for r in old)
        elif spec.error or spec.skip:
            rows.extend(process_track(spec, recipe, shards_dir))
        else:
            known = {r["path"]: r for r in old if r["path"] in spec.paths()}
            todo.append({"spec": json.dumps(dataclasses.asdict(spec)), "known": json.dumps(known, default=_plain)})
    if todo:
        rows.extend(_run_ray(cfg, todo, recipe, shards_dir, progress))
    manifest = pd.DataFrame(rows, columns=list(COLUMNS))
    manifest = refuse_shared_audio(manifest)
    manifest = manifest.sort_values(["corpus", "split", "role", "track_id", "path"]).reset_index(drop=True)
    used = shards_in_use(manifest)
    current = set(table.files(shards_dir)[0].shard) if table.is_table(shards_dir) else set()
    added = {s: int(n) for s, n in zip(used.shard, used.excerpts) if s not in current}
    removed = sorted(current - set(used.shard))
    try:
        changed = added or removed or not table.is_table(shards_dir)
        version = table.commit(shards_dir, added, removed, "ingest", {"tracks_processed": len(todo)},
                               schema=TABLE_SCHEMA) if changed else table.latest_version(shards_dir)
        write_manifest(manifest, shards_dir, version)
    except OSError as exc:  # deltalake's IO errors derive from OSError
        raise StoreError(shards_dir, f"cannot commit the new version ({' '.join(str(exc).split())[:200]}); the "
                                     "previous version is unchanged: free space (or fix access) and run ingest again") from None
    for orphan in table.untracked(shards_dir, lambda name: name.startswith("part-") and name.endswith(".parquet")):
        storage.delete(orphan)  # written by a run killed before its commit, and not part of this one
    processed = int(manifest.processed.sum())
    return IngestReport(manifest, str(version), time.time() - started, processed, len(removed))


def convert_store(cfg: Config) -> str:
    """Turn a store in the layout before versioned tables (``manifest.parquet``) into version 0 of
    a Delta table with the same shards and manifest, without re-decoding anything; its old
    ``pseudo`` folder is left as it was (label the mixtures again). Returns what was done."""
    import pyarrow.parquet as pq

    shards_dir = cfg.data.shards_dir
    old = storage.join(shards_dir, table.OLD_MANIFEST)
    if table.is_table(shards_dir):
        return f"{shards_dir}: already a versioned store (version {table.latest_version(shards_dir)}); nothing to do"
    if not storage.exists(old):
        raise SemisepError(f"{shards_dir}: no store to convert (no {table.OLD_MANIFEST}); run `semisep ingest`")
    with store_lock(shards_dir, cfg.data.workdir):
        fs, inner = storage.resolve(old)
        manifest = pq.read_table(inner, filesystem=fs).to_pandas()
        if list(manifest.columns) != list(COLUMNS):
            raise SemisepError(f"{old}: written by a semisep older than this converter reads; ingest into a new data.store")
        used = shards_in_use(manifest)
        missing = [s for s in used.shard if not storage.exists(s)]
        if missing:
            raise SemisepError(f"{old}: {len(missing)} shards it lists are gone (first: {missing[0]}); ingest into a "
                               "new data.store")
        version = table.commit(shards_dir, {s: int(n) for s, n in zip(used.shard, used.excerpts)}, [], "convert",
                               schema=TABLE_SCHEMA)
        write_manifest(manifest, shards_dir, version)
        storage.delete(old)
    return (f"{shards_dir}: converted to a versioned store, version {version}: {len(used)} shards, {len(manifest)} "
            "source files; label the unpaired mixtures again (`semisep pseudo-label`) if you use pseudo-labels")


def vacuum(cfg: Config) -> dict[str, list[str]]:
    """Delete the shard and pseudo-label files that no version younger than ``data.retention_days``
    needs (removed from their table longer ago than that), under the store's lock. Returns the
    deleted locations per table. The nightly job runs it after ingesting."""
    from semisep.pipeline.pseudo_store import pseudo_dir

    shards_dir = cfg.data.shards_dir
    table.refuse_old_layout(shards_dir)
    from semisep.pipeline.manifest import SOURCES
    from semisep.pipeline.pseudo_store import LABELS

    days = cfg.data.retention_days
    with store_lock(shards_dir, cfg.data.workdir):
        for manifest in (storage.join(shards_dir, SOURCES), storage.join(pseudo_dir(cfg), LABELS)):
            table.vacuum(manifest, days)  # the manifests' earlier versions
        return {"shards": table.vacuum(shards_dir, days), "pseudo-labels": table.vacuum(pseudo_dir(cfg), days)}


def refuse_shared_audio(manifest: pd.DataFrame) -> pd.DataFrame:
    """Fail every track whose audio (its mixture file, or its one file) also sits in another split
    or corpus: the same song in training and evaluation would make the evaluation a lie. The
    reason names the other place; the tracks stay out until one copy is removed."""
    ok = manifest[(manifest.status == "ok") & (manifest.file_hash != "")]
    identity = ok[(ok.role != "paired") | ok.sources.str.split(",").map(lambda s: "mixture" in s)]
    places = identity.groupby("file_hash").apply(lambda g: g[["corpus", "split", "path"]].values.tolist(),
                                                include_groups=False)
    bad: dict[tuple, str] = {}
    for file_hash, where in places.items():
        if len({(corpus, split) for corpus, split, _ in where}) < 2:
            continue
        for corpus, split, path in where:
            other = next(w for w in where if (w[0], w[1]) != (corpus, split))
            bad[(corpus, split, path)] = (f"same audio as {other[2]} ({other[0]}/{other[1]}): one song in two splits "
                                          "or corpora would leak between training and evaluation; remove one copy")
    if not bad:
        return manifest
    manifest = manifest.copy()
    for (corpus, split, path), reason in bad.items():
        row = manifest[(manifest.corpus == corpus) & (manifest.split == split) & (manifest.path == path)].iloc[0]
        track = ((manifest.corpus == corpus) & (manifest.split == split) & (manifest.role == row.role)
                 & (manifest.track_id == row.track_id))
        manifest.loc[track, ["status", "shard", "excerpts"]] = ["error", "", 0]
        manifest.loc[track, "error"] = f"not ingested: {os.path.basename(path)} of this track: {reason}"
        manifest.loc[track & (manifest.path == path), "error"] = reason
    return manifest


def _plain(value):
    """numpy scalars from a pandas row -> JSON."""
    return value.item() if hasattr(value, "item") else str(value)


def _run_ray(cfg: Config, todo: list[dict], recipe: Recipe, shards_dir: str, progress: bool) -> list[dict]:
    """Map ``process_track`` over the tracks with Ray Data, one task per track, with a progress bar."""
    import ray
    from tqdm import tqdm

    from semisep.pipeline.ray_session import ensure_ray

    ensure_ray(cfg)
    ray.data.DataContext.get_current().enable_progress_bars = False
    files = sum(len(TrackSpec(**json.loads(t["spec"])).paths()) for t in todo)
    ds = ray.data.from_items(todo, override_num_blocks=len(todo))
    ds = ds.map(_process_item, fn_kwargs={"recipe": recipe, "shards_dir": shards_dir}, num_cpus=1,
                resources=cfg.data.task_resources or None)
    rows, audio_s, started = [], 0.0, time.time()
    with tqdm(total=files, desc="ingest", unit="file", disable=None if progress else True) as bar:
        for item in ds.iter_rows():
            if item["store_error"]:  # the store failed (a full disk): stop, keep the last manifest
                location, reason = json.loads(item["store_error"])
                raise StoreError(location, f"{reason}; the store {shards_dir} keeps the last run's manifest and "
                                           "shards: free space (or fix access) and run ingest again")
            track = json.loads(item["rows"])
            rows.extend(track)
            audio_s += max(r["duration"] for r in track)
            elapsed = max(time.time() - started, 1e-6)
            bar.set_postfix_str(f"{audio_s / 3600:.2f} h audio, {audio_s / elapsed:.0f}x real time")
            bar.update(len(track))
    return rows


def format_report(report: IngestReport) -> str:
    m = report.manifest
    ok = m[m.status == "ok"]
    tracks = m.drop_duplicates(["corpus", "track_id", "role"])
    ok_tracks = ok.drop_duplicates(["corpus", "track_id", "role"])
    skipped = m[m.status == "skipped"].drop_duplicates(["corpus", "track_id", "role"])
    lines = [
        f"ingested {len(ok_tracks)} of {len(tracks)} tracks ({len(ok)} of {len(m)} files); "
        f"{report.processed} files processed now, {len(m) - report.processed} unchanged; "
        f"{report.failed_tracks} tracks failed, {len(skipped)} skipped, {report.removed} shards out of this version "
        "(their files kept for data.retention_days)",
        f"{ok_tracks.duration.sum() / 3600:.3f} h of audio, {int(ok_tracks.excerpts.sum())} excerpts, "
        f"{report.seconds:.1f} s; dataset version {report.dataset_version}",
    ]
    for _, row in report.failed.iterrows():
        if not row.error.startswith("not ingested:"):
            lines.append(f"  failed  {row.path}: {row.error}")
    for _, row in skipped.iterrows():
        lines.append(f"  skipped {row.track_id} ({row.corpus}): {row.error}")
    return "\n".join(lines)
