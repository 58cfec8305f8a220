"""Checkpoint and model files: plain tensors and JSON only, loaded with ``weights_only=True``.

A training checkpoint directory holds ``state.pt`` (all models, optimisers, the best separator)
and ``meta.json`` (step, early-stopping record, config; every worker's data state is in ``state.pt``); a model directory holds
``separator.pt`` and ``model.json`` (transform, model config, the excerpt length it was trained on,
provenance), which is all inference needs.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch

from semisep.pipeline.config import Config, ModelConfig, TransformConfig
from semisep.pipeline.errors import SemisepError
from semisep.training.separator import UNet

MODEL_WEIGHTS = "separator.pt"
MODEL_META = "model.json"
STATE, META = "state.pt", "meta.json"


def safe_load(path: str | os.PathLike) -> dict:
    """torch.load that refuses anything but tensors and plain containers (no code can run)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message suggests weights_only=False, which would run whatever the file holds: not passed on
        first = str(exc).split("\n")[0].split(". ")[0]
        raise SemisepError(f"{path}: refused to load, not a file of plain tensors ({first[:200]})") from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise SemisepError(f"{path}: not a readable checkpoint ({' '.join(str(exc).split())[:200]})") from None


def save_model(directory: str | os.PathLike, separator_state: dict, cfg: Config, info: dict) -> Path:
    """Write an inference model: weights plus everything needed to rebuild and feed it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in separator_state.items()}, directory / MODEL_WEIGHTS)
    meta = {"transform": cfg.transform.to_dict(), "model": vars(cfg.model).copy(),
            "window_frames": cfg.data.excerpt_frames, "info": info}
    (directory / MODEL_META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return directory


def load_model(directory: str | os.PathLike) -> tuple[UNet, TransformConfig, dict]:
    """Rebuild a separator from a model directory. Returns (model in eval mode, transform, meta)."""
    directory = Path(directory)
    meta_path = directory / MODEL_META
    if not meta_path.is_file():
        raise SemisepError(f"{directory}: not a semisep model (no {MODEL_META}); pass a folder written by `semisep train`")
    try:
        meta = json.loads(meta_path.read_text())
        mc = ModelConfig(**meta["model"])
        transform = TransformConfig(**meta["transform"])
        model = UNet(mc.depth, mc.base_channels, mc.dropout)
    except (ValueError, KeyError, TypeError) as exc:
        raise SemisepError(f"{meta_path}: not a valid semisep model description ({type(exc).__name__}: {exc})") from None
    state = safe_load(directory / MODEL_WEIGHTS)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise SemisepError(f"{directory / MODEL_WEIGHTS}: weights do not fit the model {MODEL_META} describes ({reason})") from None
    model.eval()
    meta.setdefault("window_frames", 64)  # models written before the field existed trained on 64-frame excerpts
    return model, transform, meta


def save_training_state(directory: str, models, step: int, best: dict, cfg: Config, data: dict[str, dict],
                        run_id: str = "") -> None:
    """Models, optimisers, best separator, step and every worker's data state (``{rank:
    Batches.state()}``): all a resume needs, also with another number of workers. ``run_id``: the
    MLflow run that wrote it (a resumed run links to it)."""
    torch.save({"models": models.state_dict(), "step": step, "best_separator": best["state"], "data": data},
               os.path.join(directory, STATE))
    meta = {"step": step, "best_step": best["step"], "best_score": best["score"], "best_val": best["val"],
            "bad_evals": best["bad_evals"], "best_reference": best.get("reference", best["score"]),
            "world_size": len(data), "run_id": run_id, "config": cfg.to_dict(),
            "transform": cfg.transform.to_dict()}
    with open(os.path.join(directory, META), "w") as fh:
        json.dump(meta, fh, indent=2)


def load_training_state(directory: str, models) -> tuple[int, dict, dict[str, dict]]:
    """(step, early-stopping record, every worker's data state by rank) from a checkpoint folder;
    models loaded in place. A checkpoint from before streamed data (batch positions in meta.json)
    gives the in-memory pools' positions; streams start their data anew from it."""
    state = safe_load(os.path.join(directory, STATE))
    with open(os.path.join(directory, META)) as fh:
        meta = json.load(fh)
    models.load_state_dict(state["models"])
    best = {"score": meta["best_score"], "step": meta["best_step"], "bad_evals": meta["bad_evals"],
            "state": state["best_separator"], "val": meta.get("best_val", {}),
            "reference": meta.get("best_reference", meta["best_score"])}
    data = state.get("data")
    if data is None:
        data = {rank: {"streams": {k: {"position": v} for k, v in positions.items() if k != "batches"},
                       "batches": positions.get("batches", 0)}
                for rank, positions in meta.get("positions", {}).items()}
    return meta["step"], best, data
