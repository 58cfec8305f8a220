"""The end-of-run picture shows the chosen excerpt's truth beside the separator's estimate."""

import numpy as np
import torch

from semisep.pipeline.spectrogram import planes_log_magnitude
from semisep.training.data import ValidationSet
from semisep.training.spectrogram_plot import validation_figure
from tests.training.test_validation import FixedMask, _planes


def test_figure_panels_show_the_loudest_vocals_row_and_the_estimates():
    rng = np.random.default_rng(0)
    vocals, acc = _planes(rng, 4), _planes(rng, 4)
    vocals[2] *= 3  # the first track's loudest vocals: the default row
    valid = ValidationSet({"mixture": vocals + acc, "vocals": vocals, "accompaniment": acc},
                          torch.tensor([0, 0, 0, 1]), ["a", "b"])
    fig = validation_figure(FixedMask(0.25), valid, step=7)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["mixture (input)", "vocals (truth)", "vocals (estimate)",
                      "accompaniment (truth)", "accompaniment (estimate)"]
    assert "excerpt 2, step 7" in fig.get_suptitle()
    images = [ax.get_images()[0].get_array() for ax in fig.axes]
    mix = planes_log_magnitude(valid.planes["mixture"][2:3])[0]
    np.testing.assert_allclose(images[0], mix.numpy(), rtol=1e-6)
    np.testing.assert_allclose(images[1], planes_log_magnitude(vocals[2:3])[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(images[2], torch.log1p(0.25 * torch.expm1(mix)).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(images[4], torch.log1p(0.75 * torch.expm1(mix)).numpy(), rtol=1e-5, atol=1e-6)
    assert fig.axes[4].get_xlim() == fig.axes[0].get_xlim() and fig.axes[4].get_ylim() == fig.axes[0].get_ylim()
