"""The three terms of L_s + alpha * L_u + beta * L_add, and the critic's WGAN-GP loss.

All tensors are log-magnitudes (batch, freq_bins, frames) unless stated otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from semisep.training.critic import Critic


def supervised_loss(estimates: torch.Tensor, vocals: torch.Tensor, accompaniment: torch.Tensor) -> torch.Tensor:
    """L_s: MSE to the true sources. estimates: (batch, 2, F, T)."""
    return F.mse_loss(estimates, torch.stack([vocals, accompaniment], dim=1))


def additivity_loss(mixture: torch.Tensor, estimates: torch.Tensor) -> torch.Tensor:
    """L_add: MSE between the mixture magnitude and the sum of the estimated magnitudes."""
    return F.mse_loss(torch.expm1(estimates).sum(dim=1), torch.expm1(mixture))


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor,
                     eps: torch.Tensor | None = None) -> torch.Tensor:
    """E[(||grad_x critic(x)||_2 - 1)^2] at x = eps * real + (1 - eps) * fake, eps ~ U(0, 1) per sample.

    The input gradient comes from ``Critic.input_gradient`` (no double backward).
    """
    if eps is None:
        eps = torch.rand(real.shape[0], 1, 1, device=real.device, dtype=real.dtype)
    x = (eps * real + (1 - eps) * fake).detach()
    grad = critic.input_gradient(critic.slopes(x))
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def critic_loss(critic: Critic, real: torch.Tensor, fake: torch.Tensor, gp_lambda: float,
                eps: torch.Tensor | None = None):
    """WGAN-GP critic loss; returns (loss, wasserstein estimate, gradient penalty).

    Real and fake go through the critic as one batch (one set of kernels).
    """
    scores = critic(torch.cat([real, fake]))
    wasserstein = scores[: real.shape[0]].mean() - scores[real.shape[0]:].mean()
    gp = gradient_penalty(critic, real, fake, eps)
    return -wasserstein + gp_lambda * gp, wasserstein.detach(), gp.detach()


def adversarial_loss(critic: Critic, fake: torch.Tensor) -> torch.Tensor:
    """L_u for one source: the separator minimises -critic(output)."""
    return -critic(fake).mean()


def level_normalized(x: torch.Tensor, floor: float = 1e-2) -> torch.Tensor:
    """What the critics see with ``train.critic_input: level``: each excerpt's magnitudes divided
    by their RMS (at least ``floor``), so a critic cannot tell real from separated by loudness.
    x: (batch, F, T) log-magnitudes -> the same, level-free."""
    mag = torch.expm1(x.clamp_min(0))
    rms = mag.pow(2).mean(dim=(1, 2), keepdim=True).sqrt().clamp_min(floor)
    return torch.log1p(mag / rms)
