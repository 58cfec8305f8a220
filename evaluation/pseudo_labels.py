"""Pseudo-labels: a teacher separates the unpaired mixtures; its estimates become training pairs.

Noisy self-training (Wang, Giri, Isik, Valin, Krishnaswamy, ICASSP 2021, arXiv 2102.07961): a
teacher trained on the labelled songs separates the unlabelled mixtures, and a student learns from
the labelled songs and the pseudo-labelled mixtures together, with noise (here the random source
gains every batch gets, which also re-level the teacher's stems against each other).

``label_mixtures`` runs as Ray tasks, one per unpaired mixture shard: the teacher's soft mask on
each excerpt's STFT (the mask ``semisep separate`` applies, training/validation.py's
``soft_mask``): vocals = mask x mixture, accompaniment = mixture - vocals, so the two add up to
the mixture exactly. A confidence filter keeps ``pseudo.keep`` of each song's excerpts, those
whose mask is most decided (energy-weighted mean of |2m - 1|: 1 where every bin is one source's).
The shards and a manifest with the teacher's lineage go to the pseudo-label store
(pipeline/pseudo_store.py); a shard whose source and teacher are unchanged is kept, so new
mixtures cost only their own labelling, and a new teacher relabels everything.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from semisep.pipeline import storage
from semisep.pipeline.config import Config
from semisep.pipeline.errors import SemisepError
from semisep.pipeline.manifest import version_shards
from semisep.pipeline.pseudo_store import (
    COLUMNS, pseudo_dir, pseudo_version, read_pseudo_manifest, write_pseudo_manifest)


@dataclass
class PseudoReport:
    directory: str
    teacher: str
    version: str
    shards: int
    labelled: int  # shards labelled by this run (the rest were kept)
    excerpts: int  # rows kept in all
    source_excerpts: int


def confidence(mixture: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per excerpt: the mixture-magnitude-weighted mean of |2m - 1|. mixture: (n, 2, F, T) planes,
    mask: (n, 1, F, T) -> (n,)."""
    weight = np.sqrt((mixture.astype(np.float64) ** 2).sum(axis=1))
    decided = np.abs(2 * mask[:, 0].astype(np.float64) - 1)
    return (weight * decided).sum(axis=(1, 2)) / np.maximum(weight.sum(axis=(1, 2)), 1e-12)


def teacher_masks(separator, mixture: np.ndarray, batch: int = 32) -> np.ndarray:
    """The teacher's vocal soft mask (n, 1, F, T), float32, for mixture planes (n, 2, F, T)."""
    import torch

    from semisep.pipeline.spectrogram import planes_log_magnitude
    from semisep.training.validation import soft_mask

    masks = []
    with torch.no_grad():
        for i in range(0, len(mixture), batch):
            mix = torch.from_numpy(mixture[i:i + batch]).float()
            masks.append(soft_mask(separator(planes_log_magnitude(mix))).numpy())
    return np.concatenate(masks)


def teacher_labels(separator, mixture: np.ndarray, batch: int = 32, repet: np.ndarray | None = None,
                   weight: float = 0.0, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vocals, accompaniment, confidence) for mixture planes (n, 2, F, T), in float32; the mask is
    ``scale x ((1 - weight) x teacher + weight x repet)`` (``repet``: REPET-SIM's masks)."""
    mask = teacher_masks(separator, mixture, batch)
    if weight > 0:
        mask = (1 - weight) * mask + weight * repet
    if scale != 1:
        mask = scale * mask
    mixture = mixture.astype(np.float32)
    vocals = mixture * mask
    return vocals, mixture - vocals, confidence(mixture, mask)


def song_repet_masks(mixture: np.ndarray, starts, cfg: Config) -> np.ndarray:
    """REPET-SIM's masks for the excerpts of one song (one shard), computed on the whole song."""
    from semisep.evaluation.repet import excerpt_masks

    return excerpt_masks(mixture, starts, cfg.transform.sample_rate, cfg.transform.hop_length)


def choose_blend(cfg: Config, separator, say=print) -> tuple[float, float, dict[str, float]]:
    """(weight, scale, every pair's figure): the weight of ``pseudo.repet_weights`` and the scale of
    ``pseudo.vocal_scales`` whose mask ``scale x ((1 - weight) x teacher + weight x REPET-SIM)``
    separates the validation songs best (validation vocal SDR, as training reports it: the mean over
    songs of each song's median). A weak teacher's labels gain from REPET-SIM's (they err
    differently) and from a smaller vocal mask (a teacher trained on other music can give the voice
    too much); a strong one's do not. One pair: no choice. One song in memory at a time. Figures are
    keyed by the weight (``"0.25"``), or weight and scale (``"0.25 x0.8"``) with several scales."""
    import pyarrow.parquet as pq
    import torch

    from semisep.pipeline.shards import read_excerpts
    from semisep.training.data import validation_files
    from semisep.training.validation import track_sdr

    weights = sorted({float(w) for w in cfg.pseudo.repet_weights})
    scales = sorted({float(x) for x in cfg.pseudo.vocal_scales}, reverse=True)
    pairs = [(w, x) for x in scales for w in weights]
    if len(pairs) == 1:
        return weights[0], scales[0], {}
    frames = cfg.data.excerpt_frames
    per_song = {p: [] for p in pairs}
    paths = validation_files(cfg).paths
    if not paths:
        raise SemisepError(f"{cfg.data.shards_dir}: no validation songs to choose pseudo.repet_weights and "
                           "pseudo.vocal_scales on; give a paired corpus a 'valid' split or set one of each")
    for path in paths:
        fs, inner = storage.resolve(path)
        starts = pq.read_table(inner, columns=["start_frame"], filesystem=fs).column("start_frame").to_numpy()
        mixture = read_excerpts([path], "mixture", cfg.transform, frames).astype(np.float32)
        model, repet = teacher_masks(separator, mixture), song_repet_masks(mixture, starts, cfg)
        ref = torch.from_numpy(read_excerpts([path], "vocals", cfg.transform, frames).astype(np.float32))
        song = torch.zeros(len(mixture), dtype=torch.long)
        for w, x in pairs:
            est = torch.from_numpy(mixture * (x * ((1 - w) * model + w * repet)))
            per_song[(w, x)].append(track_sdr(ref, est, song))
    scores = {p: float(np.nanmean(per_song[p])) for p in pairs}
    best = max(pairs, key=lambda p: (scores[p], -p[0], p[1]))  # ties: the least REPET-SIM, the least shrinking

    def name(p):
        return f"{p[0]:g}" if len(scales) == 1 else f"{p[0]:g} x{p[1]:g}"

    several = len(scales) > 1
    say(f"teacher's mask blended with REPET-SIM's{' and scaled' if several else ''}, validation vocal SDR by "
        f"weight{' and scale' if several else ''}: " + ", ".join(f"{name(p)}: {scores[p]:.2f} dB" for p in pairs)
        + f"; labelling with weight {best[0]:g}" + (f", scale {best[1]:g}" if several else ""))
    return best[0], best[1], {name(p): v for p, v in scores.items()}


def label_shard(source: str, dest: str, state: dict, model_cfg: dict, cfg_dict: dict, keep: float,
                repet: float = 0.0, scale: float = 1.0) -> dict:
    """Separate one unpaired mixture shard with the teacher (blended with REPET-SIM's mask at weight
    ``repet``, the vocal mask scaled by ``scale``) and write the kept excerpts to ``dest``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from semisep.pipeline.config import ModelConfig
    from semisep.pipeline.shards import check_shard, decode_column, write_rows
    from semisep.training.separator import UNet

    cfg = Config.from_dict(cfg_dict)
    torch.set_num_threads(1)
    mc = ModelConfig(**model_cfg)
    separator = UNet(mc.depth, mc.base_channels, mc.dropout)
    separator.load_state_dict(state)
    separator.eval()
    dtype = check_shard(source, cfg.transform, cfg.data.excerpt_frames)
    fs, inner = storage.resolve(source)
    table = pq.read_table(inner, columns=["track_id", "corpus", "start_frame", "mixture"], filesystem=fs)
    mixture = decode_column(table.column("mixture"), cfg.transform.freq_bins, cfg.data.excerpt_frames, dtype, source)
    all_starts = np.asarray(table.column("start_frame"))
    masks = song_repet_masks(mixture, all_starts, cfg) if repet > 0 else None
    vocals, accompaniment, conf = teacher_labels(separator, mixture, repet=masks, weight=repet, scale=scale)
    n_keep = max(1, int(round(keep * len(conf))))
    kept = np.sort(np.argsort(-conf, kind="stable")[:n_keep])  # the most decided excerpts, in time order
    starts = [int(s) for s in all_starts[kept]]
    track = table.column("track_id")[0].as_py()
    write_rows(dest, {"track_id": track, "corpus": table.column("corpus")[0].as_py(), "split": "train", "role": "pseudo"},
               {"mixture": mixture[kept], "vocals": vocals[kept], "accompaniment": accompaniment[kept]}, starts,
               cfg.transform, cfg.data.excerpt_frames, dtype,
               extra={"confidence": pa.array(conf[kept].astype(np.float32), pa.float32())})
    return {"source_shard": source, "corpus": table.column("corpus")[0].as_py(), "track_id": track, "shard": dest,
            "excerpts": len(kept), "source_excerpts": len(conf)}


def weights_digest(model_dir: str) -> str:
    """The first 16 hex digits of the sha256 of a model folder's weights file: what names a teacher."""
    from semisep.training.checkpoint import MODEL_WEIGHTS

    digest = hashlib.sha256()
    with open(os.path.join(model_dir, MODEL_WEIGHTS), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def resolve_teacher(cfg: Config, spec: str | None = None) -> tuple[str, str, str]:
    """(teacher id, local model folder, its training run id) for ``spec`` (default pseudo.teacher):
    ``champion`` is the registry's champion, named by its version (``models:/<name>/<version>``) so
    the labels' lineage survives the alias moving on; any other spec is a model URI or folder."""
    from semisep.evaluation.registry import champion_version, local_model_dir

    spec = spec or cfg.pseudo.teacher
    if spec == "champion":
        name = cfg.mlflow.registered_model
        version = champion_version(cfg.tracking_uri, name)
        if version is None:
            raise SemisepError(f"pseudo.teacher=champion: {name!r} has no champion in {cfg.tracking_uri} yet; "
                               "promote a model first, or name one (--teacher)")
        spec, run_id = f"models:/{name}/{version.version}", version.run_id or ""
    elif ":/" in spec:
        run_id = spec.split("/")[1] if spec.startswith("runs:/") else ""
    else:  # a folder: named by its absolute path
        spec, run_id = os.path.abspath(spec), ""
    return spec, local_model_dir(spec, cfg.tracking_uri), run_id


def label_mixtures(cfg: Config, model_dir: str, teacher: str, teacher_run_id: str = "", directory: str | None = None,
                   say=print) -> PseudoReport:
    """Pseudo-label every unpaired mixture shard of the store with the model in ``model_dir``
    (``teacher`` names it: a registry URI, ``runs:/...`` or the folder) into ``directory``
    (default: the pseudo-label store, ``train.pseudo_labels`` or ``<data.store>/pseudo``)."""
    import ray

    from semisep.pipeline.ray_session import ensure_ray
    from semisep.training.checkpoint import load_model

    directory = storage.normalize(directory) if directory else pseudo_dir(cfg)
    ok = version_shards(cfg.data.shards_dir)[0]
    sources = sorted(ok[(ok.role == "mixture") & (ok.split == "train")].shard)
    if not sources:
        raise SemisepError(f"{cfg.data.shards_dir}: no unpaired mixtures to pseudo-label; ingest a corpus with "
                           "unpaired mixtures (a folder corpus's mixture/ or a multitrack corpus with use: unpaired)")
    model, transform, meta = load_model(model_dir)
    model.eval()
    cfg.transform.check_same(transform, f"teacher {teacher}")
    keep = cfg.pseudo.keep
    before, info = read_pseudo_manifest(directory, missing_ok=True)
    # a teacher is what its weights are: a folder retrained in place, or an alias moved on, is a new
    # teacher (``teacher`` stays the name shown)
    weights = weights_digest(model_dir)
    same_teacher = info.get("teacher") == teacher and info.get("teacher_weights") == weights
    grid = json.dumps(sorted({float(w) for w in cfg.pseudo.repet_weights}))
    scale_grid = json.dumps(sorted({float(x) for x in cfg.pseudo.vocal_scales}))
    if same_teacher and info.get("repet_weights") == grid and info.get("vocal_scales", "[1.0]") == scale_grid:
        # chosen for this teacher already
        repet, scale = float(info["repet"]), float(info.get("scale", 1.0))
        scores = json.loads(info.get("repet_sdr", "{}"))
    else:
        repet, scale, scores = choose_blend(cfg, model, say)
    reuse = {r.source_shard: r._asdict() for r in before.itertuples(index=False)
             if same_teacher and r.keep == keep and r.repet == repet and r.scale == scale
             and storage.exists(r.shard)} if len(before) else {}
    # a folder per label set: relabelling (another teacher, keep, weight or scale) never writes over
    # shards an earlier version still lists; their files stay until a vacuum (data.retention_days)
    tag = hashlib.sha256(json.dumps([teacher, weights, keep, repet] + ([scale] if scale != 1 else [])).encode()).hexdigest()[:10]
    todo = [s for s in sources if s not in reuse]
    rows = [reuse[s] for s in sources if s in reuse]
    version = pseudo_version(f"{teacher} sha256:{weights}", keep, sources, repet, scale)
    if not todo and info.get("version") == version and len(before) == len(sources):
        report = PseudoReport(directory, teacher, version, len(before), 0, int(before.excerpts.sum()),
                              int(before.source_excerpts.sum()))
        say(f"pseudo-labels by {teacher}: up to date ({report.shards} mixtures, {report.excerpts} excerpts); "
            f"version {version}")
        return report
    if todo:
        ensure_ray(cfg)
        state = ray.put({k: v.cpu() for k, v in model.state_dict().items()})
        task = ray.remote(num_cpus=1)(label_shard)
        dest = {s: storage.join(directory, tag, f"pseudo-{hashlib.sha256(os.path.basename(s).encode()).hexdigest()[:16]}.parquet")
                for s in todo}
        refs = [task.remote(s, dest[s], state, meta["model"], cfg.shipped().to_dict(), keep, repet, scale)
                for s in todo]
        rows += ray.get(refs)
    table = pd.DataFrame(rows)
    table["teacher"], table["teacher_run_id"], table["keep"], table["repet"] = teacher, teacher_run_id, keep, repet
    table["scale"] = scale
    table = table.sort_values("source_shard").reset_index(drop=True)[list(COLUMNS)]
    write_pseudo_manifest(table, directory, teacher, version,
                          {"teacher_weights": weights, "repet": str(repet), "repet_weights": grid, "scale": str(scale), "vocal_scales": scale_grid,
                           "repet_sdr": json.dumps({k: round(v, 4) for k, v in scores.items()})})
    report = PseudoReport(directory, teacher, version, len(table), len(todo), int(table.excerpts.sum()),
                          int(table.source_excerpts.sum()))
    say(f"pseudo-labels by {teacher}: {report.shards} mixtures ({report.labelled} labelled now), "
        f"{report.excerpts} of {report.source_excerpts} excerpts kept (pseudo.keep {keep:g}, REPET-SIM weight "
        f"{repet:g}{f', vocal scale {scale:g}' if scale != 1 else ''}); version {version}")
    return report
