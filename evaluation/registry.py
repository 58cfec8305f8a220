"""Separators as MLflow models: a pyfunc that separates audio by itself, logged by every training run.

The pyfunc is a *model from code* (``evaluation/pyfunc_entry.py``): no pickled Python object is
stored, and the weights inside are read with ``torch.load(weights_only=True)``. Its artifact
``model`` is the plain model folder (``separator.pt`` + ``model.json``: weights, transform, model
config, provenance). ``predict(audio)`` takes float32 audio as ``(channels, samples)``, as
``(samples, channels)`` (what ``soundfile.read`` and musdb give: taken so when the short axis has
at most ``MAX_CHANNELS``) or as ``(samples,)``, and the params ``sample_rate`` and ``post_filter``;
it returns ``{"vocals", "accompaniment"}`` in the input's shape and layout.
"""

from __future__ import annotations

import contextlib
import io
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from semisep.pipeline.errors import SemisepError
from semisep.training.checkpoint import MODEL_META

ARTIFACT = "separator"  # the logged model's name inside its run
MAX_CHANNELS = 8  # an axis this short is channels: (samples, channels) input is transposed
ENTRY = Path(__file__).with_name("pyfunc_entry.py")


class SeparatorPyfunc:
    """The pyfunc's behaviour (wrapped in an ``mlflow.pyfunc.PythonModel`` by ``pyfunc_entry``)."""

    def load_context(self, context) -> None:
        from semisep.training.checkpoint import load_model

        self.model, self.transform, self.meta = load_model(context.artifacts["model"])

    def predict(self, context, model_input, params=None) -> dict[str, np.ndarray]:
        from semisep.evaluation.separate import separate

        params = params or {}
        audio, transposed = as_channels_first(model_input)
        sr = int(params.get("sample_rate") or 44100)
        out = separate(self.model, self.transform, audio, sr, post_filter=params.get("post_filter") or "softmask",
                       window_frames=self.meta["window_frames"])
        return {k: np.ascontiguousarray(v.T) for k, v in out.items()} if transposed else out


def as_channels_first(model_input) -> tuple[np.ndarray, bool]:
    """Audio as float32 (channels, samples), and whether it came as (samples, channels): an axis of
    at most MAX_CHANNELS next to a longer one is the channels."""
    audio = np.asarray(model_input, np.float32)
    if audio.ndim == 1:
        return audio[None], False
    if audio.ndim != 2:
        raise SemisepError(f"audio of shape {audio.shape}: give (channels, samples), (samples, channels) or (samples,)")
    if audio.shape[1] <= MAX_CHANNELS and audio.shape[0] > audio.shape[1]:
        return np.ascontiguousarray(audio.T), True
    if audio.shape[0] > MAX_CHANNELS:
        raise SemisepError(f"audio of shape {audio.shape}: neither axis is a channel count (at most {MAX_CHANNELS}); "
                           "give (channels, samples) or (samples, channels)")
    return audio, False


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
    # no input schema: MLflow would refuse any dtype but the one named (soundfile.read gives float64,
    # a WAV read as int16 ...); predict converts, and takes either layout (as_channels_first)
    signature = ModelSignature(
        inputs=None,
        outputs=Schema([TensorSpec(audio, (-1, -1), "vocals"), TensorSpec(audio, (-1, -1), "accompaniment")]),
        params=ParamSchema([ParamSpec("sample_rate", "long", 44100), ParamSpec("post_filter", "string", "softmask")]))
    example = (0.1 * np.random.default_rng(0).standard_normal((1, 8192))).astype(np.float32)
    with tracking(tracking_uri), mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=ARTIFACT, python_model=str(ENTRY), artifacts={"model": str(model_dir)},
            signature=signature, input_example=example, pip_requirements=_requirements())
    return info.model_uri


def is_absent(exc: Exception) -> bool:
    """True when an MLflow error says the thing asked for does not exist (a model, a version, an
    alias); False for everything else: an unreachable server, a refused request, a server error."""
    code = getattr(exc, "error_code", "")
    return code == "RESOURCE_DOES_NOT_EXIST" or (code == "INVALID_PARAMETER_VALUE" and "not found" in str(exc))


def registry_error(tracking_uri: str, what: str, exc: Exception) -> SemisepError:
    """The one message for a registry that could not be read: which server, what, why."""
    reason = " ".join(str(exc).split())[:300]
    return SemisepError(f"MLflow at {tracking_uri}: cannot read {what} ({reason}); nothing was changed. "
                        "Check that the tracking server is up and reachable (mlflow.tracking_uri) and try again")


def champion_version(tracking_uri: str, registered_model: str):
    """The registered version the ``champion`` alias points at; None when the registry says there
    is none; any other failure is ``registry_error``."""
    from mlflow import MlflowClient

    try:
        return MlflowClient(tracking_uri=tracking_uri).get_model_version_by_alias(registered_model, "champion")
    except Exception as exc:  # noqa: BLE001 - absent or not, MLflow's error or the transport's
        if is_absent(exc):
            return None
        raise registry_error(tracking_uri, f"the champion of {registered_model!r}", exc) from None


def register(tracking_uri: str, name: str, run_id: str, tags: dict[str, str] | None = None,
             report: str | None = None) -> str:
    """Register the separator logged by ``run_id`` as a new version of ``name``; returns the version.
    ``report``: the path of an evaluation's report.html that scored it, named in the version's card."""
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=tracking_uri)
    run = c.get_run(run_id)
    model_uri = run.data.tags.get("semisep.model_uri")
    if not model_uri:
        raise SemisepError(f"run {run_id} has no logged separator (tag semisep.model_uri): was it a finished training run?")
    import mlflow

    carried = {k: v for k, v in run.data.tags.items() if k.startswith("semisep.") and k != "semisep.model_uri"}
    with tracking(tracking_uri), contextlib.redirect_stderr(io.StringIO()):  # MLflow prints two lines; semisep says it once
        mv = mlflow.register_model(model_uri, name, tags=carried | {"semisep.run_id": run_id} | (tags or {}))
    about = run.data.tags.get("mlflow.note.content", f"A separator trained by semisep (run {run_id}).")
    c.update_model_version(name, mv.version, description=(
        f"{about}\n\nRegistered from run `{run_id}` ({run.info.run_name}). Load this version: "
        f"`semisep separate song.wav -o out --model models:/{name}/{mv.version}`. Not yet through the promotion gate: "
        f"`semisep promote --candidate {mv.version}`."
        + (f"\n\nIts evaluation report (tables, plots, excerpts to listen to): `{report}`, also the run's artifact "
           f"`evaluation/report.html`." if report else "")))
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


def default_model(tracking_uri: str, registered_model: str, workdir: str) -> tuple[str, str]:
    """(model spec, why) when no --model is given: the registry's champion, else the newest model
    folder under ``<workdir>/models``; a SemisepError with the way to get one when there is none."""
    uri = f"models:/{registered_model}@champion"
    store_exists = not tracking_uri.startswith("sqlite:///") or Path(tracking_uri[len("sqlite:///"):]).is_file()
    version = champion_version(tracking_uri, registered_model) if store_exists else None
    if version is not None:
        return uri, f"the registry's champion, {registered_model} version {version.version} ({tracking_uri})"
    local = sorted(Path(workdir, "models").glob(f"*/{MODEL_META}"), key=lambda p: p.stat().st_mtime)
    if local:
        return str(local[-1].parent), f"the newest model in {Path(workdir, 'models')} (no champion in the registry)"
    raise SemisepError(f"no model to separate with: no champion in {tracking_uri} and no model under "
                       f"{Path(workdir, 'models')}; run `make demo`, or `semisep train` (then `semisep promote`), "
                       "or pass --model")
