"""The losses, the gradient penalty against the 2026-11-27 critic (bench/reference_step.py: plain
nn.Conv2d layers and autograd's double backward), so a fault in semisep's own convolutions
(training/convs.py) cannot hide in the reference."""

import pytest
import torch

import bench.reference_step as reference
from semisep.training.critic import Critic
from semisep.training.losses import additivity_loss, critic_loss, gradient_penalty, level_normalized

# (freq_bins, frames, channels, layers): a small critic, and the demo's first two layers' sizes
SHAPES = [(32, 16, 4, 3), (64, 32, 8, 4)]


def _pair(shape, seed):
    """semisep's critic and the reference critic with the same weights, float64."""
    f, t, channels, layers = shape
    torch.manual_seed(seed)
    ours = Critic(f, t, channels=channels, layers=layers).double()
    theirs = reference.Critic(f, t, channels=channels, layers=layers).double()
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


@pytest.mark.parametrize("shape", SHAPES)
def test_explicit_input_gradient_is_autograds_through_the_reference_critic(shape):
    ours, theirs = _pair(shape, 0)
    x = torch.randn(5, shape[0], shape[1], dtype=torch.float64, requires_grad=True)
    (expected,) = torch.autograd.grad(theirs(x).sum(), x)
    got = ours.input_gradient(ours.slopes(x.detach()))
    assert got.shape == x.shape
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_gradient_penalty_and_its_parameter_gradients_match_the_reference(shape):
    ours, theirs = _pair(shape, 1)
    f, t = shape[:2]
    real, fake = torch.rand(6, f, t, dtype=torch.float64) * 2, torch.rand(6, f, t, dtype=torch.float64) * 2
    eps = torch.rand(6, 1, 1, dtype=torch.float64)
    expected = reference.gradient_penalty(theirs, real, fake, eps)
    want = torch.autograd.grad(expected, list(theirs.parameters()), allow_unused=True)
    got_gp = gradient_penalty(ours, real, fake, eps)
    got = torch.autograd.grad(got_gp, list(ours.parameters()), allow_unused=True)
    assert abs(got_gp.item() - expected.item()) < 1e-12
    for (name, param), w, g in zip(ours.named_parameters(), want, got):
        w = torch.zeros_like(param) if w is None else w
        g = torch.zeros_like(param) if g is None else g
        assert torch.allclose(g, w, rtol=1e-10, atol=1e-12), name
    assert got[0].abs().sum() > 0  # the penalty does move the weights


def test_critic_loss_is_minus_wasserstein_plus_penalty():
    ours, theirs = _pair(SHAPES[0], 2)
    real, fake = torch.rand(4, 32, 16, dtype=torch.float64), torch.rand(4, 32, 16, dtype=torch.float64)
    eps = torch.rand(4, 1, 1, dtype=torch.float64)
    loss, w, gp = critic_loss(ours, real, fake, 10.0, eps)
    want_loss, want_w, want_gp = reference.critic_loss(theirs, real, fake, 10.0, eps)
    assert abs(w.item() - want_w.item()) < 1e-12
    assert abs(gp.item() - want_gp.item()) < 1e-12
    assert abs(loss.item() - want_loss.item()) < 1e-10


def test_level_normalisation_removes_loudness_only():
    mag = torch.rand(3, 16, 8) + 0.1
    quiet, loud = torch.log1p(mag), torch.log1p(8 * mag)
    assert torch.allclose(level_normalized(quiet), level_normalized(loud), atol=1e-5)
    other = torch.log1p(torch.rand(3, 16, 8) + 0.1)
    assert not torch.allclose(level_normalized(quiet), level_normalized(other), atol=1e-2)


def test_additivity_loss_is_zero_when_estimates_sum_to_mixture():
    mag_v, mag_a = torch.rand(2, 4, 8), torch.rand(2, 4, 8)
    est = torch.log1p(torch.stack([mag_v, mag_a], 1))
    assert additivity_loss(torch.log1p(mag_v + mag_a), est).item() < 1e-10
    assert additivity_loss(torch.log1p(2 * (mag_v + mag_a)), est).item() > 0.01
