"""The U-Net separator: mixture log-magnitude in, vocal and accompaniment log-magnitudes out.

Encoder: strided 5x5 convolutions halve frequency and time at each level; decoder: transposed
convolutions with skip connections. The head predicts one sigmoid mask per source, applied to
the mixture magnitude, so estimates are non-negative and bounded by the mixture; the masks are
independent (not a softmax), so the additivity loss L_add still has something to say.
GroupNorm rather than BatchNorm keeps every sample independent of its batch, which the
gradient penalty and exact data-parallel equivalence rely on. Convolutions before a GroupNorm
have no bias: the norm removes it, so its gradient is rounding noise that Adam would turn into
full-size steps.
"""

from __future__ import annotations

import torch
from torch import nn

from semisep.training.convs import Conv2dS2, ConvTranspose2dS2

SOURCES = ("vocals", "accompaniment")


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class UNet(nn.Module):
    """(batch, freq_bins, frames) log-magnitude -> (batch, 2, freq_bins, frames) log-magnitudes.

    freq_bins and frames must be multiples of 2**depth.
    """

    def __init__(self, depth: int = 4, base_channels: int = 16, dropout: float = 0.0):
        super().__init__()
        self.depth = depth
        chans = [base_channels * 2**i for i in range(depth)]
        self.down = nn.ModuleList()
        c_in = 1
        for c in chans:
            self.down.append(nn.Sequential(Conv2dS2(c_in, c, 5, stride=2, padding=2, bias=False), _norm(c), nn.LeakyReLU(0.2)))
            c_in = c
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):
            c_out = chans[i - 1] if i > 0 else base_channels
            c_cat = chans[i] * (2 if i < depth - 1 else 1)
            layers = [ConvTranspose2dS2(c_cat, c_out, 5, stride=2, padding=2, output_padding=1, bias=False),
                      _norm(c_out), nn.ReLU()]
            if dropout and i >= depth - 2:
                layers.append(nn.Dropout2d(dropout))
            self.up.append(nn.Sequential(*layers))
        self.head = nn.Conv2d(base_channels + 1, len(SOURCES), 3, padding=1)

    def masks(self, mix_log: torch.Tensor) -> torch.Tensor:
        """(batch, F, T) -> sigmoid masks (batch, 2, F, T)."""
        x = mix_log.unsqueeze(1)
        skips = []
        h = x
        for layer in self.down:
            h = layer(h)
            skips.append(h)
        for i, layer in enumerate(self.up):
            if i > 0:
                h = torch.cat([h, skips[self.depth - 1 - i]], dim=1)
            h = layer(h)
        # the head has two output channels: oneDNN runs it ~3x faster on channels-last input
        head_in = torch.cat([h, x], dim=1).contiguous(memory_format=torch.channels_last)
        return torch.sigmoid(self.head(head_in)).contiguous()

    def forward(self, mix_log: torch.Tensor) -> torch.Tensor:
        mag = torch.expm1(mix_log).unsqueeze(1)
        return torch.log1p(self.masks(mix_log) * mag)
