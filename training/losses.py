"""The three terms of L_s + alpha * L_u + beta * L_add, and the critic's WGAN-GP loss.

All tensors are log-magnitudes (batch, freq_bins, frames) unless stated otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def supervised_loss(estimates: torch.Tensor, vocals: torch.Tensor, accompaniment: torch.Tensor) -> torch.Tensor:
    """L_s: MSE to the true sources. estimates: (batch, 2, F, T)."""
    return F.mse_loss(estimates, torch.stack([vocals, accompaniment], dim=1))


def additivity_loss(mixture: torch.Tensor, estimates: torch.Tensor) -> torch.Tensor:
    """L_add: MSE between the mixture magnitude and the sum of the estimated magnitudes."""
    return F.mse_loss(torch.expm1(estimates).sum(dim=1), torch.expm1(mixture))


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     eps: torch.Tensor | None = None) -> torch.Tensor:
    """E[(||grad_x critic(x)||_2 - 1)^2] at x = eps * real + (1 - eps) * fake, eps ~ U(0, 1) per sample."""
    if eps is None:
        eps = torch.rand(real.shape[0], 1, 1, device=real.device, dtype=real.dtype)
    x = (eps * real + (1 - eps) * fake).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def critic_loss(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, gp_lambda: float,
                eps: torch.Tensor | None = None):
    """WGAN-GP critic loss; returns (loss, wasserstein estimate, gradient penalty)."""
    wasserstein = critic(real).mean() - critic(fake).mean()
    gp = gradient_penalty(critic, real, fake, eps)
    return -wasserstein + gp_lambda * gp, wasserstein.detach(), gp.detach()


def adversarial_loss(critic: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    """L_u for one source: the separator minimises -critic(output)."""
    return -critic(fake).mean()
