"""DCGAN-style critic for WGAN-GP: a log-magnitude excerpt in, one unbounded score out.

No normalisation layer: the gradient penalty is defined per sample, which batch statistics
would break (Gulrajani et al. 2017 recommend layer norm or none).
"""

from __future__ import annotations

import torch
from torch import nn


class Critic(nn.Module):
    """(batch, freq_bins, frames) -> (batch,) score; higher means 'looks like a real source'."""

    def __init__(self, freq_bins: int, frames: int, channels: int = 16, layers: int = 4):
        super().__init__()
        blocks = []
        c_in = 1
        f, t = freq_bins, frames
        for i in range(layers):
            c = channels * 2**i
            blocks += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c_in, f, t = c, f // 2, t // 2
        self.features = nn.Sequential(*blocks)
        # no bias: it cancels in the Wasserstein estimate and the penalty, so it could only drift
        self.score = nn.Linear(c_in * f * t, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x.unsqueeze(1))
        return self.score(h.flatten(1)).squeeze(1)
