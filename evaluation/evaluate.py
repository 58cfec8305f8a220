"""Evaluation of models on a test split: separate, score with museval, aggregate, report, log.

Protocols: ``paper`` scores mono audio at the model's rate (8192 Hz), as Stoller et al. did;
``sigsep`` scores at the original rate and channel count, as SiSEC/MUSDB18 do.
Three references frame every table: ``oracle_irm`` (the ideal ratio mask at the model's STFT,
an upper bound for any mask the model can produce), ``mixture`` (the mixture as both estimates,
a lower bound) and ``repet_sim`` (a classical non-learned separator, see evaluation/repet.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from semisep.pipeline.config import Config
from semisep.pipeline.corpora import TrackSpec, load_source, scan_corpus
from semisep.pipeline.errors import AudioError, SemisepError
from semisep.evaluation.bss_eval import TARGETS, aggregate, score_track, sdr_table, track_frame_medians
from semisep.evaluation.repet import repet_sim
from semisep.evaluation.separate import full_rate_stft_config, separate
from semisep.pipeline.spectrogram import resample, to_mono
from semisep.training.checkpoint import load_model

REFERENCES = ("oracle_irm", "mixture", "repet_sim")


@dataclass
class EvalResult:
    frames: pd.DataFrame
    summary: pd.DataFrame
    table: str
    out_dir: str


def test_tracks(cfg: Config) -> list[TrackSpec]:
    """Paired tracks of ``eval.split`` in ``eval.corpus``, read through the corpus's adapter."""
    corpus = next((c for c in cfg.data.corpora if c.name == cfg.eval.corpus), None)
    if corpus is None:
        raise SemisepError(f"eval.corpus={cfg.eval.corpus!r} names no corpus in data.corpora")
    tracks = [t for t in scan_corpus(corpus, cfg.data.audio_cache_dir) if t.split == cfg.eval.split and t.role == "paired" and not t.skip]
    if cfg.eval.max_tracks:
        tracks = tracks[: cfg.eval.max_tracks]
    if not tracks:
        raise SemisepError(f"corpus {corpus.name!r} at {corpus.path} has no tracks in split {cfg.eval.split!r}")
    return tracks


def load_track(spec: TrackSpec, protocol: str, model_sr: int) -> tuple[dict[str, np.ndarray], int]:
    """mixture, vocals, accompaniment as (channels, samples) under the protocol's rate and channels."""
    if spec.error:
        raise AudioError(spec.paths()[0], spec.error)
    out, sr, cache = {}, 0, {}
    for name in ("mixture", *TARGETS):
        out[name], sr = load_source(spec.files[name], cache)
    if len({a.shape for a in out.values()}) > 1:
        raise AudioError(spec.paths()[0], "mixture, vocals and accompaniment differ in length or channels")
    if protocol == "paper":
        out = {k: resample(to_mono(v), sr, model_sr)[None, :].astype(np.float32) for k, v in out.items()}
        sr = model_sr
    return out, sr


def oracle_irm(track: dict[str, np.ndarray], sr: int, transform) -> dict[str, np.ndarray]:
    """Ideal ratio mask |V| / (|V| + |A|) at the model's STFT settings (scaled to ``sr``)."""
    import torch

    from semisep.pipeline.spectrogram import istft, stft

    full = full_rate_stft_config(transform, sr)
    specs = {k: stft(torch.from_numpy(np.ascontiguousarray(v)), full) for k, v in track.items()}
    mask = specs["vocals"].abs() / (specs["vocals"].abs() + specs["accompaniment"].abs() + 1e-8)
    vocals = istft(specs["mixture"] * mask, full, track["mixture"].shape[1]).numpy()
    return {"vocals": vocals, "accompaniment": track["mixture"] - vocals}


def evaluate(cfg: Config, models: dict[str, str], out_dir: str, run_ids: dict[str, str] | None = None,
             references: bool = True, progress: bool = True, report: bool = True,
             excerpts_by: str | None = None) -> EvalResult:
    """Score ``models`` (label -> model folder) on the test split; write JSON, table, plots and
    (``report``) report.html, with excerpts to listen to chosen by the scores of ``excerpts_by``
    (a label of ``models``; the first model when None)."""
    from tqdm import tqdm

    if excerpts_by is not None and excerpts_by not in models:
        raise SemisepError(f"excerpts_by={excerpts_by!r} names none of the models evaluated: {', '.join(models)}")
    loaded = {label: load_model(path) for label, path in models.items()}
    out = Path(out_dir)
    frames = []
    tracks = test_tracks(cfg)
    methods = list(models) + (list(REFERENCES) if references else [])
    for spec in tqdm(tracks, desc="evaluate", unit="track", disable=None if progress else True):
        name = spec.track_id
        try:
            track, sr = load_track(spec, cfg.eval.protocol, cfg.transform.sample_rate)
        except AudioError as exc:
            print(f"skipped {exc.path}: {exc.reason}")
            continue
        refs = {t: track[t] for t in TARGETS}
        for method in methods:
            if method in loaded:
                model, transform, meta = loaded[method]
                est = separate(model, transform, track["mixture"], sr, window_frames=meta["window_frames"])
            elif method == "oracle_irm":
                est = oracle_irm(track, sr, cfg.transform)
            elif method == "repet_sim":
                full = full_rate_stft_config(cfg.transform, sr)
                est = repet_sim(track["mixture"], sr, full.n_fft, full.hop_length)
            else:
                est = {t: track["mixture"] for t in TARGETS}
            store = score_track(name, refs, est, sr, cfg.eval.win_seconds)
            dest = out / method / cfg.eval.split / f"{name.rsplit('/', 1)[-1]}.json"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(store.json)
            df = store.df.assign(method=method)
            frames.append(df[["method", "track", "target", "metric", "score", "time"]])
    if not frames:
        raise SemisepError("no test track could be evaluated")
    frames_df = pd.concat(frames, ignore_index=True)
    summary = aggregate(frames_df)
    table = sdr_table(summary, methods)
    out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / "summary.csv", index=False)
    (out / "results.md").write_text(f"Protocol: {cfg.eval.protocol}, split: {cfg.eval.split}, "
                                    f"{frames_df.track.nunique()} tracks\n\n{table}\n")
    from semisep.evaluation.report import boxplots

    plots = boxplots(frames_df, out, methods)
    if report and models:
        write_report(cfg, loaded, frames_df, summary, plots, out, excerpts_by or next(iter(loaded)))
    if run_ids:
        _log_to_mlflow(cfg, summary, out, run_ids)
    return EvalResult(frames_df, summary, table, str(out))


def sdr_frame(summary: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """``sdr_table`` as a frame: per method, vocal and accompaniment SDR median and mean over tracks."""
    sdr = summary[summary.metric == "SDR"].pivot_table(index="method", columns="target", values=["median", "mean"])
    rows = [{"method": m, "vocals median": sdr.loc[m, ("median", "vocals")], "vocals mean": sdr.loc[m, ("mean", "vocals")],
             "accompaniment median": sdr.loc[m, ("median", "accompaniment")],
             "accompaniment mean": sdr.loc[m, ("mean", "accompaniment")]} for m in order if m in sdr.index]
    return pd.DataFrame(rows)


def listening_excerpts(cfg: Config, loaded: dict, per_track: pd.Series, test_set: str) -> list:
    """The excerpts of ``html_report``'s rule for one test set: the songs picked by ``per_track``
    (track -> the reference model's vocal SDR), each separated whole by every model in ``loaded``
    (label -> load_model's triple) and by the oracle mask, then cut to the loudest-vocals window."""
    from semisep.evaluation import html_report

    specs = {spec.track_id: spec for spec in test_tracks(cfg)}
    out = []
    for track, why in html_report.pick_tracks(per_track):
        data, sr = load_track(specs[track], cfg.eval.protocol, cfg.transform.sample_rate)
        start, stop = html_report.loudest_window(data["vocals"], sr)
        estimates = {label: separate(model, transform, data["mixture"], sr, window_frames=meta["window_frames"])
                     for label, (model, transform, meta) in loaded.items()}
        estimates["oracle_irm"] = oracle_irm(data, sr, cfg.transform)
        out.append(html_report.Excerpt(test_set, track, why, start / sr, sr, html_report.cut(data, start, stop),
                                       {m: html_report.cut(e, start, stop) for m, e in estimates.items()}))
    return out


def write_report(cfg: Config, loaded: dict, frames: pd.DataFrame, summary: pd.DataFrame, plots: list[Path],
                 out: Path, excerpts_by: str) -> Path:
    """``<out>/report.html``: the SDR table, the boxplots and the listening excerpts, chosen by the
    scores of ``excerpts_by`` (a label of ``loaded``)."""
    from semisep.evaluation import html_report

    methods = list(dict.fromkeys(frames.method))
    per_track = track_frame_medians(frames)
    vocals = per_track[(per_track.method == excerpts_by) & (per_track.target == "vocals") & (per_track.metric == "SDR")]
    split = f"{cfg.eval.corpus}/{cfg.eval.split}"
    excerpts = listening_excerpts(cfg, loaded, vocals.set_index("track").score, split)
    return html_report.write(
        out / "report.html", f"semisep evaluation: {split}",
        f"BSS Eval v4 through museval ({cfg.eval.protocol} protocol), dB: median over {cfg.eval.win_seconds:g} s frames "
        f"per track, then median and mean over {frames.track.nunique()} tracks. oracle_irm, repet_sim and mixture are "
        "references (no training).",
        [("Scores", [html_report.table(sdr_frame(summary, methods), "SDR (dB)"),
                     *[html_report.figure(p, f"{p.stem}: per-track medians per method") for p in plots[:1]]])],
        excerpts, excerpts_by,
        after=[("Other metrics", [html_report.figure(p, f"{p.stem}: per-track medians per method") for p in plots[1:]])])


def _log_to_mlflow(cfg: Config, summary: pd.DataFrame, out: Path, run_ids: dict[str, str]) -> None:
    from semisep.training.tracking import client

    c = client(cfg.tracking_uri)
    for method, run_id in run_ids.items():
        rows = summary[summary.method == method]
        for _, r in rows.iterrows():
            for stat in ("median", "mean"):
                c.log_metric(run_id, f"test_{r.target}_{r.metric}_{stat}", float(r[stat]))
        c.log_artifacts(run_id, str(out / method), artifact_path=f"museval/{cfg.eval.protocol}")
        c.log_artifact(run_id, str(out / "results.md"), artifact_path="evaluation")
        for png in [*out.glob("*.png"), *out.glob("report.html")]:
            c.log_artifact(run_id, str(png), artifact_path="evaluation")
        c.set_tag(run_id, "semisep.eval_protocol", cfg.eval.protocol)
        c.set_tag(run_id, "semisep.eval_summary", json.dumps(
            {f"{r.target}_{r.metric}_median": round(float(r['median']), 3) for _, r in rows.iterrows()}))
