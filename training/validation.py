"""Validation during training: the loss, and what users measure, the separated signals' SDR.

The validation excerpts hold complex STFTs, so the estimate can be scored as a signal, the way
``semisep separate`` makes it: the model's magnitudes give the soft mask ``V / (V + A)``, the
vocals are the masked mixture and the accompaniment is the mixture minus the vocals. Per excerpt
(about one second at the paper's settings, like museval's frames) the SDR is
``10 log10(|s|^2 / |s - s_hat|^2)`` summed over the STFT (a signal-domain SDR: the STFT is a
tight frame up to its window's gain, which cancels in the ratio); per track the median over
excerpts (excerpts whose reference is 60 dB below the track's loudest are skipped, as museval
skips silent frames); then the mean over tracks. ``val_sdr`` is the vocals' figure.

The loss (L_s on the validation excerpts) moves with level and timbre in ways the SDR does not:
on the sampled corpus the semi-supervised runs reached a 20-25% lower validation loss with the
same test SDR. Early stopping and model choice use ``train.select_on`` (default ``val_sdr``).
"""

from __future__ import annotations

import torch

from semisep.pipeline.spectrogram import planes_log_magnitude
from semisep.training.data import ValidationSet

SILENT_DB = 60.0


def _sdr(ref: torch.Tensor, est: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
    """Per-row SDR in dB. ref, est: (rows, 2, F, T) planes; energy: (rows,) the references' -> (rows,)."""
    error = (ref - est).double().pow(2).sum(dim=(1, 2, 3))
    return 10 * torch.log10(energy.clamp_min(1e-20) / error.clamp_min(1e-20))


def _per_track(sdr: torch.Tensor, energy: torch.Tensor, track: torch.Tensor) -> dict[int, torch.Tensor]:
    """Median SDR per track over its non-silent rows, by track index."""
    medians = {}
    for k in torch.unique(track):
        rows = track == k
        e = energy[rows]
        keep = e >= e.max() * 10 ** (-SILENT_DB / 10)
        if keep.any():
            medians[int(k)] = torch.quantile(sdr[rows][keep], 0.5)  # the middle two averaged, like numpy
    return medians


def _track_medians(sdr: torch.Tensor, energy: torch.Tensor, track: torch.Tensor) -> torch.Tensor:
    """Median SDR per track over its non-silent rows; mean over tracks."""
    medians = list(_per_track(sdr, energy, track).values())
    return torch.stack(medians).mean() if medians else torch.tensor(float("nan"))


def track_sdr(ref: torch.Tensor, est: torch.Tensor, track: torch.Tensor) -> float:
    """What validation reports for one source: per-row SDR, the median of each track's non-silent
    rows, the mean over tracks. ref, est: (rows, 2, F, T) planes; track: (rows,) track index."""
    energy = ref.double().pow(2).sum(dim=(1, 2, 3))
    return float(_track_medians(_sdr(ref, est, energy), energy, track))


CACHE_BYTES = 256 * 2**20  # per-batch inputs kept between validations when they fit in this


def _batches(valid: ValidationSet, batch_size: int, device) -> list[tuple[dict, torch.Tensor, torch.Tensor, dict]]:
    """Per batch: the planes (float, on ``device``), the mixture's log-magnitudes, the true sources'
    log-magnitudes (b, 2, F, T) and each reference's energy. None of it changes between validations,
    so it is computed once per run when it fits in ``CACHE_BYTES``."""
    key = (str(device), batch_size)
    if key in valid.cache:
        return valid.cache[key]
    planes = valid.planes
    rows = planes["mixture"].shape[0]
    out = []
    for i in range(0, rows, batch_size):
        part = {k: v[i:i + batch_size].to(device).float() for k, v in planes.items()}
        mix_log = planes_log_magnitude(part["mixture"])
        truth = torch.stack([planes_log_magnitude(part["vocals"]), planes_log_magnitude(part["accompaniment"])], 1)
        energy = {k: part[k].double().pow(2).sum(dim=(1, 2, 3)) for k in ("vocals", "accompaniment")}
        out.append((part, mix_log, truth, energy))
    per_row = 4 * (3 * planes["mixture"][0].numel() + 3 * planes["mixture"][0, 0].numel())
    if rows * per_row <= CACHE_BYTES:
        valid.cache[key] = out
    return out


def soft_mask(est: torch.Tensor) -> torch.Tensor:
    """The separator's log-magnitude estimates (b, 2, F, T) -> the vocals' soft mask V / (V + A),
    (b, 1, F, T): what ``semisep separate`` applies to the mixture's STFT."""
    mag = torch.expm1(est.float()).clamp_min(0)
    return (mag[:, 0] / (mag[:, 0] + mag[:, 1] + 1e-8)).unsqueeze(1)


@torch.no_grad()
def validate(separator, valid: ValidationSet, batch_size: int, device="cpu") -> dict[str, float]:
    """val_loss (L_s), val_sdr (= vocals), val_sdr_vocals and val_sdr_accompaniment over the split."""
    was_training = separator.training
    separator.eval()
    planes = valid.planes
    rows = planes["mixture"].shape[0]
    sq_err, vocals_sdr, acc_sdr, vocals_e, acc_e = 0.0, [], [], [], []
    for part, mix_log, truth, energy in _batches(valid, batch_size, device):
        est = separator(mix_log).float()  # (b, 2, F, T) log-magnitudes
        sq_err += float(((est - truth) ** 2).sum())
        vocals = part["mixture"] * soft_mask(est)  # the (b, 1, F, T) mask on both planes
        for name, est_planes, sdrs, energies in (("vocals", vocals, vocals_sdr, vocals_e),
                                                 ("accompaniment", part["mixture"] - vocals, acc_sdr, acc_e)):
            s = _sdr(part[name], est_planes, energy[name])
            sdrs.append(s.cpu())
            energies.append(energy[name].cpu())
    if was_training:
        separator.train()
    per_value = 2 * planes["mixture"][0, 0].numel()
    out = {"val_loss": sq_err / (rows * per_value)}
    for name, sdrs, energies in (("vocals", vocals_sdr, vocals_e), ("accompaniment", acc_sdr, acc_e)):
        out[f"val_sdr_{name}"] = float(_track_medians(torch.cat(sdrs), torch.cat(energies), valid.track))
    out["val_sdr"] = out["val_sdr_vocals"]
    return out


@torch.no_grad()
def per_track_sdr(separator, valid: ValidationSet, batch_size: int, device="cpu") -> dict[str, float]:
    """Each validation song's vocal SDR (the median over its non-silent excerpts, as ``validate``
    computes it before the mean over songs), by track name: what a choice between models can pair."""
    was_training = separator.training
    separator.eval()
    sdrs, energies = [], []
    for part, mix_log, _, energy in _batches(valid, batch_size, device):
        vocals = part["mixture"] * soft_mask(separator(mix_log).float())
        sdrs.append(_sdr(part["vocals"], vocals, energy["vocals"]).cpu())
        energies.append(energy["vocals"].cpu())
    if was_training:
        separator.train()
    medians = _per_track(torch.cat(sdrs), torch.cat(energies), valid.track)
    return {valid.tracks[k]: float(v) for k, v in medians.items()}


def selection_score(val: dict[str, float], select_on: str) -> float:
    """Higher is better: the validation SDR, or minus the validation loss."""
    return val["val_sdr"] if select_on == "val_sdr" else -val["val_loss"]
