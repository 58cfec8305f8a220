"""DCGAN-style critic for WGAN-GP: a log-magnitude excerpt in, one unbounded score out.

No normalisation layer: the gradient penalty is defined per sample, which batch statistics
would break (Gulrajani et al. 2017 recommend layer norm or none).

The penalty needs the gradient of the score with respect to the input. Autograd's double
backward through convolutions is slow (on CPU it takes generic kernels), so ``input_gradient``
writes that gradient out as a network of its own: the score weights, then per layer the
LeakyReLU slopes seen in the forward pass and a transposed convolution with the layer's
weights. Its derivatives with respect to the weights are the ones autograd's double backward
gives (the slopes are piecewise constant in the input), through ordinary fast kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from semisep.training.convs import Conv2dS2, conv_transpose_s2

SLOPE = 0.2  # LeakyReLU negative slope


class Critic(nn.Module):
    """(batch, freq_bins, frames) -> (batch,) score; higher means 'looks like a real source'."""

    def __init__(self, freq_bins: int, frames: int, channels: int = 16, layers: int = 4):
        super().__init__()
        blocks = []
        c_in = 1
        f, t = freq_bins, frames
        for i in range(layers):
            c = channels * 2**i
            blocks += [Conv2dS2(c_in, c, 4, stride=2, padding=1), nn.LeakyReLU(SLOPE)]
            c_in, f, t = c, f // 2, t // 2
        self.features = nn.Sequential(*blocks)
        # no bias: it cancels in the Wasserstein estimate and the penalty, so it could only drift
        self.score = nn.Linear(c_in * f * t, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x.unsqueeze(1))
        return self.score(h.flatten(1)).squeeze(1)

    def convs(self) -> list[nn.Conv2d]:
        return [m for m in self.features if isinstance(m, nn.Conv2d)]

    @torch.no_grad()
    def slopes(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The LeakyReLU derivative (1 or SLOPE) at every unit of every layer, for input x (batch, F, T)."""
        out, h = [], x.unsqueeze(1)
        for conv in self.convs():
            pre = conv(h)
            out.append(torch.full_like(pre, SLOPE).masked_fill_(pre > 0, 1.0))
            h = F.leaky_relu(pre, SLOPE)  # = pre * slope
        return out

    def input_gradient(self, slopes: list[torch.Tensor]) -> torch.Tensor:
        """d score / d x at the input whose ``slopes`` are given: (batch, F, T), differentiable in the weights."""
        last = slopes[-1]
        g = self.score.weight.view(1, *last.shape[1:]).expand_as(last)
        for conv, slope in zip(reversed(self.convs()), reversed(slopes)):
            g = conv_transpose_s2(g * slope, conv)
        return g.squeeze(1)
