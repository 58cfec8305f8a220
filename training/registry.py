"""Separators as MLflow models: a pyfunc that separates audio by itself, logged by every training run.

The pyfunc is a *model from code* (``training/pyfunc_entry.py``): no pickled Python object is
stored, and the weights inside are read with ``torch.load(weights_only=True)``. Its artifact
``model`` is the plain model folder (``separator.pt`` + ``model.json``: weights, transform, model
config, provenance). ``predict(audio)`` takes float32 ``(channels, samples)`` (or ``(samples,)``)
and the params ``sample_rate`` and ``post_filter``, and returns ``{"vocals", "accompaniment"}`` of
the input's shape.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from pipeline.errors import SemisepError
from training.checkpoint import MODEL_META

ARTIFACT = "separator"  # the logged model's name inside its run
ENTRY = Path(__file__).with_name("pyfunc_entry.py")


class SeparatorPyfunc:
    """The pyfunc's behaviour (wrapped in an ``mlflow.pyfunc.PythonModel`` by ``pyfunc_entry``)."""

    def load_context(self, context) -> None:
        from training.checkpoint import load_model

        self.model, self.transform, self.meta = load_model(context.artifacts["model"])

    def predict(self, context, model_input, params=None) -> dict[str, np.ndarray]:
        from evaluation.separate import separate

        params = params or {}
        audio = np.asarray(model_input, np.float32)
        if audio.ndim == 1:
            audio = audio[None]
        sr = int(params.get("sample_rate") or 44100)
        return separate(self.model, self.transform, audio, sr, post_filter=params.get("post_filter") or "softmask")


@contextmanager
def tracking(uri: str | None):
    """MLflow's fluent API pointed at ``uri`` for the block only.

    ``mlflow.set_tracking_uri`` also sets $MLFLOW_TRACKING_URI for the whole process, which
    semisep reads as the default store: left set, it would send later runs to this store.
    """
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for name in ("torch", "numpy", "soundfile", "soxr", "norbert", "pyyaml", "semisep"):
        try:
            reqs.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            reqs.append(name)
    return reqs


def log_model(tracking_uri: str, run_id: str, model_dir: str | os.PathLike) -> str:
    """Log the model folder as a pyfunc in run ``run_id``; returns the model's URI (``models:/m-...``)."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    audio = np.dtype("float32")
    signature = ModelSignature(
        inputs=Schema([TensorSpec(audio, (-1, -1))]),  # (channels, samples) at params.sample_rate
        outputs=Schema([TensorSpec(audio, (-1, -1), "vocals"), TensorSpec(audio, (-1, -1), "accompaniment")]),
        params=ParamSchema([ParamSpec("sample_rate", "long", 44100), ParamSpec("post_filter", "string", "softmask")]))
    example = (0.1 * np.random.default_rng(0).standard_normal((1, 8192))).astype(np.float32)
    with tracking(tracking_uri), mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=ARTIFACT, python_model=str(ENTRY), artifacts={"model": str(model_dir)},
            signature=signature, input_example=example, pip_requirements=_requirements())
    return info.model_uri


def register(tracking_uri: str, name: str, run_id: str, tags: dict[str, str] | None = None) -> str:
    """Register the separator logged by ``run_id`` as a new version of ``name``; returns the version."""
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=tracking_uri)
    run = c.get_run(run_id)
    model_uri = run.data.tags.get("semisep.model_uri")
    if not model_uri:
        raise SemisepError(f"run {run_id} has no logged separator (tag semisep.model_uri): was it a finished training run?")
    import mlflow

    carried = {k: v for k, v in run.data.tags.items() if k.startswith("semisep.") and k != "semisep.model_uri"}
    with tracking(tracking_uri):
        mv = mlflow.register_model(model_uri, name, tags=carried | {"semisep.run_id": run_id} | (tags or {}))
    return str(mv.version)


def local_model_dir(spec: str, tracking_uri: str | None = None) -> str:
    """A model folder for ``spec``: a folder path, or an MLflow URI (``models:/name@champion``,
    ``models:/name/3``, ``runs:/<run_id>/separator``) whose artifacts are downloaded."""
    if "://" not in spec and ":/" not in spec:
        return spec
    import mlflow

    try:
        with tracking(tracking_uri):
            root = mlflow.artifacts.download_artifacts(artifact_uri=spec)
    except Exception as exc:  # MlflowException, missing alias or version, unreachable server
        raise SemisepError(f"{spec}: cannot fetch the model from MLflow ({' '.join(str(exc).split())[:300]})") from None
    found = sorted(Path(root).rglob(MODEL_META))
    if not found:
        raise SemisepError(f"{spec}: not a semisep model (no {MODEL_META} among its artifacts)")
    return str(found[0].parent)
