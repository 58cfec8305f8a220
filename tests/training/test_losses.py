import torch
from torch import nn

from training.losses import additivity_loss, gradient_penalty


class Quadratic(nn.Module):
    """critic(x) = sum(w * x**2): gradient 2 * w * x, easy to write by hand."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return (self.w * x**2).flatten(1).sum(1)


def test_gradient_penalty_matches_hand_computation():
    torch.manual_seed(0)
    w = torch.rand(3, 2)
    real, fake = torch.randn(2, 3, 2), torch.randn(2, 3, 2)
    eps = torch.tensor([0.25, 0.8]).view(2, 1, 1)
    x = eps * real + (1 - eps) * fake
    norms = (2 * w * x).flatten(1).norm(dim=1)
    expected = ((norms - 1) ** 2).mean()
    got = gradient_penalty(Quadratic(w), real, fake, eps)
    assert torch.allclose(got, expected, atol=1e-6)


def test_gradient_penalty_is_differentiable_in_critic_parameters():
    critic = Quadratic(torch.rand(3, 2))
    gp = gradient_penalty(critic, torch.randn(4, 3, 2), torch.randn(4, 3, 2))
    gp.backward()
    assert critic.w.grad is not None and critic.w.grad.abs().sum() > 0


def test_additivity_loss_is_zero_when_estimates_sum_to_mixture():
    mag_v, mag_a = torch.rand(2, 4, 8), torch.rand(2, 4, 8)
    est = torch.log1p(torch.stack([mag_v, mag_a], 1))
    assert additivity_loss(torch.log1p(mag_v + mag_a), est).item() < 1e-10
    assert additivity_loss(torch.log1p(2 * (mag_v + mag_a)), est).item() > 0.01
