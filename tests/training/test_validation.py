"""The validation SDR is the signal SDR of the masked estimates, per track median, mean over tracks."""

import numpy as np
import torch

from semisep.training.data import ValidationSet
from semisep.training.validation import selection_score, validate

F, T = 8, 4


class FixedMask(torch.nn.Module):
    """A 'separator' that gives the vocals a fixed share of the mixture magnitude."""

    def __init__(self, share: float):
        super().__init__()
        self.share = share
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, mix_log):
        mag = torch.expm1(mix_log)
        return torch.log1p(torch.stack([self.share * mag, (1 - self.share) * mag], 1))


def _planes(rng, rows, scale=1.0):
    return torch.from_numpy((scale * rng.standard_normal((rows, 2, F, T))).astype(np.float32))


def test_validation_sdr_by_hand():
    rng = np.random.default_rng(0)
    vocals = _planes(rng, 5)
    vocals[4] *= 1e-4  # a near-silent excerpt of track 1: skipped, as museval skips silent frames
    acc = _planes(rng, 5, 2.0)
    valid = ValidationSet({"mixture": vocals + acc, "vocals": vocals, "accompaniment": acc},
                          torch.tensor([0, 0, 0, 1, 1]), ["a", "b"])
    share = 0.3
    out = validate(FixedMask(share), valid, batch_size=2)

    def sdr(ref, est):
        return 10 * np.log10((ref ** 2).sum() / ((ref - est) ** 2).sum())

    mix = (vocals + acc).numpy()
    # mask V / (V + A) from the estimates = share (up to the 1e-8 guard)
    per_row_v = [sdr(vocals[i].numpy(), share * mix[i]) for i in range(5)]
    per_row_a = [sdr(acc[i].numpy(), (1 - share) * mix[i]) for i in range(5)]
    expected_v = np.mean([np.median(per_row_v[:3]), per_row_v[3]])
    expected_a = np.mean([np.median(per_row_a[:3]), np.median(per_row_a[3:])])
    assert abs(out["val_sdr_vocals"] - expected_v) < 1e-3
    assert abs(out["val_sdr_accompaniment"] - expected_a) < 1e-3
    assert out["val_sdr"] == out["val_sdr_vocals"]
    assert selection_score(out, "val_sdr") == out["val_sdr"] and selection_score(out, "val_loss") == -out["val_loss"]


def test_a_better_mask_scores_higher():
    rng = np.random.default_rng(1)
    vocals, acc = _planes(rng, 6), _planes(rng, 6, 0.5)
    valid = ValidationSet({"mixture": vocals + acc, "vocals": vocals, "accompaniment": acc},
                          torch.zeros(6, dtype=torch.long), ["a"])
    good, bad = validate(FixedMask(0.8), valid, 4), validate(FixedMask(0.2), valid, 4)
    assert good["val_sdr"] > bad["val_sdr"] + 3


def test_the_inputs_kept_between_validations_give_the_uncached_figures(monkeypatch):
    """The second validation reads its inputs from the cache; a split over the cache's size limit is
    recomputed every time; all three give the same figures."""
    import semisep.training.validation as validation

    rng = np.random.default_rng(2)
    vocals, acc = _planes(rng, 7), _planes(rng, 7, 0.7)
    valid = ValidationSet({"mixture": vocals + acc, "vocals": vocals, "accompaniment": acc},
                          torch.tensor([0, 0, 0, 1, 1, 1, 1]), ["a", "b"])
    first = validate(FixedMask(0.6), valid, 3)
    assert list(valid.cache) == [("cpu", 3)] and len(valid.cache[("cpu", 3)]) == 3  # batches of 3, 3, 1
    assert validate(FixedMask(0.6), valid, 3) == first
    monkeypatch.setattr(validation, "CACHE_BYTES", 0)
    fresh = ValidationSet(valid.planes, valid.track, valid.tracks)
    assert validate(FixedMask(0.6), fresh, 3) == first and fresh.cache == {}
    assert validate(FixedMask(0.4), valid, 3) != first  # the cache holds inputs, not results
