import torch

from semisep.training.critic import Critic
from semisep.training.losses import additivity_loss, critic_loss, gradient_penalty, level_normalized


def _autograd_penalty(critic, real, fake, eps):
    """The textbook way: autograd's double backward through the critic."""
    x = (eps * real + (1 - eps) * fake).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def test_explicit_input_gradient_is_autograds():
    torch.manual_seed(0)
    critic = Critic(32, 16, channels=4, layers=3).double()
    x = torch.randn(5, 32, 16, dtype=torch.float64, requires_grad=True)
    (expected,) = torch.autograd.grad(critic(x).sum(), x)
    got = critic.input_gradient(critic.slopes(x.detach()))
    assert got.shape == x.shape
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_gradient_penalty_and_its_parameter_gradients_match_double_backward():
    torch.manual_seed(1)
    critic = Critic(32, 16, channels=4, layers=3).double()
    real, fake = torch.rand(6, 32, 16, dtype=torch.float64) * 2, torch.rand(6, 32, 16, dtype=torch.float64) * 2
    eps = torch.rand(6, 1, 1, dtype=torch.float64)
    expected = _autograd_penalty(critic, real, fake, eps)
    want = torch.autograd.grad(expected, list(critic.parameters()), allow_unused=True)
    got_gp = gradient_penalty(critic, real, fake, eps)
    got = torch.autograd.grad(got_gp, list(critic.parameters()), allow_unused=True)
    assert abs(got_gp.item() - expected.item()) < 1e-12
    for name_param, w, g in zip(critic.named_parameters(), want, got):
        w = torch.zeros_like(name_param[1]) if w is None else w
        g = torch.zeros_like(name_param[1]) if g is None else g
        assert torch.allclose(g, w, rtol=1e-10, atol=1e-12), name_param[0]
    assert got[0].abs().sum() > 0  # the penalty does move the weights


def test_critic_loss_is_minus_wasserstein_plus_penalty():
    torch.manual_seed(2)
    critic = Critic(32, 16, channels=4, layers=3).double()
    real, fake = torch.rand(4, 32, 16, dtype=torch.float64), torch.rand(4, 32, 16, dtype=torch.float64)
    eps = torch.rand(4, 1, 1, dtype=torch.float64)
    loss, w, gp = critic_loss(critic, real, fake, 10.0, eps)
    assert abs(w.item() - (critic(real).mean() - critic(fake).mean()).item()) < 1e-12
    assert abs(loss.item() - (-w.item() + 10.0 * _autograd_penalty(critic, real, fake, eps).item())) < 1e-10


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
