"""Checkpoint and model files: plain tensors and JSON only, loaded with ``weights_only=True``.

A training checkpoint directory holds ``state.pt`` (all models, optimisers, RNG, step) and
``meta.json``; a model directory holds ``separator.pt`` and ``model.json`` (transform, model
config, provenance), which is all inference needs.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch

from pipeline.config import Config, ModelConfig
from pipeline.errors import SemisepError
from pipeline.spectrogram import TransformConfig
from training.separator import UNet

MODEL_WEIGHTS = "separator.pt"
MODEL_META = "model.json"


def safe_load(path: str | os.PathLike) -> dict:
    """torch.load that refuses anything but tensors and plain containers (no code can run)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise SemisepError(f"{path}: refused to load, it holds objects other than tensors ({str(exc).splitlines()[0]})") from None
    except (OSError, RuntimeError, EOFError) as exc:
        raise SemisepError(f"{path}: not a readable checkpoint ({exc})") from None


def save_model(directory: str | os.PathLike, separator_state: dict, cfg: Config, info: dict) -> Path:
    """Write an inference model: weights plus everything needed to rebuild and feed it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in separator_state.items()}, directory / MODEL_WEIGHTS)
    meta = {"transform": cfg.transform.to_dict(), "model": vars(cfg.model).copy(), "info": info}
    (directory / MODEL_META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return directory


def load_model(directory: str | os.PathLike) -> tuple[UNet, TransformConfig, dict]:
    """Rebuild a separator from a model directory. Returns (model in eval mode, transform, meta)."""
    directory = Path(directory)
    meta_path = directory / MODEL_META
    if not meta_path.is_file():
        raise SemisepError(f"{directory}: not a semisep model (no {MODEL_META}); pass a folder written by `semisep train`")
    meta = json.loads(meta_path.read_text())
    mc = ModelConfig(**meta["model"])
    model = UNet(mc.depth, mc.base_channels, mc.dropout)
    model.load_state_dict(safe_load(directory / MODEL_WEIGHTS))
    model.eval()
    return model, TransformConfig(**meta["transform"]), meta
