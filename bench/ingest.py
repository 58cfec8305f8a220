"""Ingestion throughput against its floor, measured in one run on the same files.

(a) floor: a plain Python loop over the files doing only decode (soundfile) + resample (soxr
    through librosa) + STFT + log1p (torch), one process, one torch thread;
(b) ``semisep ingest``'s Ray Data job on the same files into an empty store (hashing, checks,
    excerpts and Parquet writing included), with a local Ray already started (its start-up is
    printed apart: on a cluster Ray is already running);
(c) the same job again with nothing new (the nightly no-op).

Prints seconds of audio per wall second and per CPU second, the ratio (b)/(a) and peak memory
of each (resident, whole process tree: Ray's workers count).

    .venv/bin/python bench/ingest.py [--songs 4] [--seconds 180] [--cpus 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.meter import meter  # noqa: E402


def floor(files: list[Path], transform) -> float:
    """Decode + resample + STFT + log1p of every file; returns seconds of audio."""
    import numpy as np
    import torch

    from semisep.pipeline.audio import load_audio
    from semisep.pipeline.spectrogram import resample, to_mono
    from semisep.pipeline.spectrogram import features

    torch.set_num_threads(1)
    seconds = 0.0
    for f in files:
        audio, sr = load_audio(f)
        mono = resample(to_mono(audio), sr, transform.sample_rate)
        features(torch.from_numpy(np.ascontiguousarray(mono, np.float32)), transform)
        seconds += audio.shape[1] / sr
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=int, default=8, help="paired songs (3 files each); plus one unpaired song per role")
    parser.add_argument("--seconds", type=float, default=180.0, help="length of each song")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs for the local Ray")
    parser.add_argument("--workdir", default="work/bench/ingest", help="corpus (kept between runs) and stores")
    args = parser.parse_args()

    from semisep.pipeline.config import load_config
    from semisep.pipeline.demo_corpus import generate_demo_corpus

    work = Path(args.workdir)
    corpus = work / f"corpus-{args.songs}x{args.seconds:g}s"
    generate_demo_corpus(corpus, seed=7, track_seconds=args.seconds, paired_train=args.songs,
                         unpaired_per_role=1, valid=0, test=0, test_in_domain=0)
    files = sorted(corpus.rglob("*.wav"))
    cfg = load_config("configs/demo.yaml", [
        f"data.workdir={work / 'store'}", f"ray.num_cpus={args.cpus}",
        f"data.corpora=[{{name: paired, path: {corpus / 'paired'}}}, "
        f"{{name: unpaired, path: {corpus / 'unpaired'}, format: folder, use: unpaired}}]",
    ])

    with meter() as a:
        audio_s = floor(files, cfg.transform)

    import ray

    from semisep.pipeline.ingest import ingest
    from semisep.pipeline.ray_session import ensure_ray

    shutil.rmtree(cfg.data.shards_dir, ignore_errors=True)
    t0 = time.perf_counter()
    ensure_ray(cfg)
    ray_start = time.perf_counter() - t0
    with meter() as b:
        report = ingest(cfg, progress=False)
    assert (report.manifest.status == "ok").all() and report.processed == len(files)
    with meter() as c:
        noop = ingest(cfg, progress=False)
    assert noop.processed == 0
    shutil.rmtree(cfg.data.shards_dir)
    with meter() as d:  # a fresh store again, now that Ray's workers have imported torch & co.
        ingest(cfg, progress=False)

    print(f"\ningestion benchmark: {len(files)} files, {audio_s / 60:.1f} min of audio "
          f"({args.songs} paired songs + 3 unpaired files of {args.seconds:g} s, 44.1 kHz stereo), "
          f"{os.cpu_count()} cores; local Ray start-up {ray_start:.1f} s (not counted)")
    print(f"{'':34} {'wall s':>8} {'audio s/wall s':>15} {'audio s/CPU s':>14} {'peak RSS MiB':>13}")
    rows = (("(a) floor: decode+resample+STFT", a, True), (f"(b) semisep ingest, {args.cpus} CPUs", b, True),
            ("(c) again, nothing new", c, False), ("(d) (b) again, Ray workers warm", d, True))
    for label, m, rates in rows:
        rate = f"{audio_s / m.wall_s:15.0f} {audio_s / m.cpu_s:14.0f}" if rates else f"{'-':>15} {'-':>14}"
        print(f"{label:34} {m.wall_s:8.2f} {rate} {m.peak_rss_mib:13.0f}")
    print(f"ratio (b)/(a) throughput per wall second: {a.wall_s / b.wall_s:.2f} (per CPU second: "
          f"{a.cpu_s / b.cpu_s:.2f}); warm workers (d)/(a): {a.wall_s / d.wall_s:.2f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
