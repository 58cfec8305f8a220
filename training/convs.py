"""Stride-2 convolutions whose passes run on forward-convolution kernels where that is faster.

The U-Net and the critics are stacks of stride-2 convolutions (``Conv2d``) and their transposes
(``ConvTranspose2d``). On CPU, oneDNN's transposed convolution (the forward of a ``ConvTranspose2d``,
and the input gradient of every strided ``Conv2d``) is slow where it writes few channels: ~5 GFLOP/s
for the critic's first layer's input gradient, against 100-170 GFLOP/s for forward convolutions of
the same layers (2-core EPYC, 2026-11-27). A stride-2 transposed convolution is four interleaved
stride-1 convolutions, one per output phase (even/odd row, even/odd column), each using every other
tap of the kernel. Written as one stride-1 convolution over the input with the four phases' kernels
stacked as output channels, plus one interleaving copy, it runs on forward kernels: for even kernels
(the critics' 4x4) each phase reads K/2 x K/2 inputs, shifted by one for the odd phase, so the
arithmetic is the same; for odd kernels (the U-Net's 5x5) the phases share a 3x3 window with zeros
where a phase has no tap (1.44x the multiply-adds). The sums are the same up to float rounding
(float64: 1e-14, tests/training/test_convs.py).

``Conv2dS2`` and ``ConvTranspose2dS2`` are drop-in ``nn.Conv2d`` / ``nn.ConvTranspose2d`` (same
parameters, same state dict) whose forward and backward pick, per call, the phase form for a
transposed convolution that writes at most ``PHASE_MAX_CHANNELS`` channels, and the native kernel
otherwise; the weight gradient comes from ``convolution_backward``. Off the CPU they are the plain
torch layers (cuDNN's transposed convolutions are fast). No double backward is needed anywhere in
training (the critics' gradient penalty is written out in training/critic.py), so the backward
passes are first-order.

Measured (2 cores, float32): the critic's first-layer input gradient at batch 32 3.2 -> 0.9 ms,
the U-Net's last up-convolution at batch 16 3.5 -> 2.1 ms; the semi-supervised step 1.07x and the
supervised one 1.01x in alternating A/B rounds (bench/README.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PHASE_MAX_CHANNELS = 8  # measured: the phase form wins at 1 and 8 output channels, loses from 16 up


def _phase_layout(kernel: int, padding: int) -> tuple[tuple[int, int], tuple[tuple[int, ...], tuple[int, ...]]]:
    """For a stride-2 transposed convolution: output 2m + p reads inputs m + lo_p ... m + lo_p + D - 1.
    Returns ((lo_0, lo_1), per phase the kernel tap at each of the D offsets; ``kernel`` = none)."""
    taps = {}
    for p in (0, 1):
        for k in range(kernel):
            if (k - p - padding) % 2 == 0:
                taps[(p, -(k - p - padding) // 2)] = k
    lo = [min(d for q, d in taps if q == p) for p in (0, 1)]
    hi = [max(d for q, d in taps if q == p) for p in (0, 1)]
    if hi[0] - lo[0] == hi[1] - lo[1] and lo[1] == lo[0] + 1:
        starts = lo  # even kernel: both phases use D = K / 2 taps, phase 1 one step further on
    else:
        starts = [min(lo)] * 2  # odd kernel: one window spanning both phases, zeros where a phase has no tap
    size = max(hi[p] - starts[p] + 1 for p in (0, 1))
    rows = tuple(tuple(taps.get((p, starts[p] + a), kernel) for a in range(size)) for p in (0, 1))
    return (starts[0], starts[1]), rows


_INDEX: dict[tuple[int, int], tuple[torch.Tensor, tuple[int, int], int]] = {}


def _phase_index(kernel: int, padding: int) -> tuple[torch.Tensor, tuple[int, int], int]:
    """(flat tap index (4, D * D) into a K * K + 1 kernel whose last entry is zero, window starts, D)."""
    key = (kernel, padding)
    if key not in _INDEX:
        starts, rows = _phase_layout(kernel, padding)
        zero = kernel * kernel
        flat = [[zero if a == kernel or b == kernel else a * kernel + b for a in rows[p] for b in rows[q]]
                for p in (0, 1) for q in (0, 1)]
        _INDEX[key] = torch.tensor(flat), starts, len(rows[0])
    return _INDEX[key]


def phase_weight(weight: torch.Tensor, padding: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Transposed-convolution weight (C_in, C_out, K, K) -> stride-1 convolution weight
    (4 C_out, C_in, D, D) whose output channel 4c + 2p + q is phase (p, q) of channel c."""
    index, starts, d = _phase_index(weight.shape[-1], padding)
    c_in, c_out = weight.shape[:2]
    taps = F.pad(weight.flatten(2), (0, 1))[:, :, index]  # (C_in, C_out, 4, D * D)
    return taps.permute(1, 2, 0, 3).reshape(4 * c_out, c_in, d, d), starts


def transposed_s2(x: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
    """conv_transpose2d(x, weight, stride=2, padding) with output_padding such that the output is
    exactly twice the input, computed as one stride-1 convolution and one interleaving copy."""
    w, (s0, s1) = phase_weight(weight, padding)
    d = w.shape[-1]
    shift = s1 - s0  # 1: phase 1's window starts one input further on (even kernels), 0: shared window
    pad_lo, pad_hi = -s0, s0 + d - 1 + shift
    if pad_lo == pad_hi >= 0:  # the U-Net's and the critics' layers
        out = F.conv2d(x, w, padding=pad_lo)
    else:
        out = F.conv2d(F.pad(x, (pad_lo, pad_hi, pad_lo, pad_hi)), w)
    b, c4, hq, wq = out.shape  # (B, 4 C_out, H + shift, W + shift)
    h, wd = hq - shift, wq - shift
    out = out.contiguous()
    # y[b, c, 2m + p, 2n + r] = out[b, 4c + 2p + r, m + shift p, n + shift r]
    sb, sc, sp, sr = c4 * hq * wq, 4 * hq * wq, 2 * hq * wq + shift * wq, hq * wq + shift
    view = out.as_strided((b, c4 // 4, h, 2, wd, 2), (sb, sc, wq, sp, 1, sr))
    return view.reshape(b, c4 // 4, 2 * h, 2 * wd)


def _transpose(g: torch.Tensor, weight: torch.Tensor, padding: int, output_padding: int) -> torch.Tensor:
    """The stride-2 transposed convolution of g with ``weight`` (C_in_T, C_out_T, K, K), output 2x g.
    Only reached on CPU (the layers below hand other devices to torch's own layers)."""
    if weight.shape[1] <= PHASE_MAX_CHANNELS:
        return transposed_s2(g, weight, padding)
    return F.conv_transpose2d(g, weight, stride=2, padding=padding, output_padding=output_padding)


def _weight_grad(grad_out: torch.Tensor, inp: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
    """d loss / d weight of conv2d(inp, weight, stride=2, padding) given d loss / d output."""
    return torch.ops.aten.convolution_backward(grad_out, inp, weight, None, [2, 2], [padding, padding], [1, 1],
                                               False, [0, 0], 1, [False, True, False])[1]


class _ConvS2(torch.autograd.Function):
    """y = conv2d(x, w, b, stride=2, padding) for inputs of even size (output = input / 2)."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return F.conv2d(x, weight, bias, stride=2, padding=padding)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        p = ctx.padding
        g = g.contiguous()
        dx = _transpose(g, weight, p, 2 + 2 * p - weight.shape[-1]) if ctx.needs_input_grad[0] else None
        dw = _weight_grad(g, x, weight, p) if ctx.needs_input_grad[1] else None
        db = g.sum((0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db, None


class _ConvTransposeS2(torch.autograd.Function):
    """y = conv_transpose2d(x, w, b, stride=2, padding, output_padding) with output = 2 x input."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding, output_padding):
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        y = _transpose(x, weight, padding, output_padding)
        return y if bias is None else y + bias.view(1, -1, 1, 1)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        p = ctx.padding
        g = g.contiguous()
        dx = F.conv2d(g, weight, stride=2, padding=p) if ctx.needs_input_grad[0] else None
        # the transposed convolution's weight gradient is the forward convolution's, roles swapped
        dw = _weight_grad(x, g, weight, p) if ctx.needs_input_grad[1] else None
        db = g.sum((0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db, None, None


def _autocast_cast(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """The inputs in CPU autocast's dtype when autocast is on (the custom functions below run their
    convolutions themselves, so autocast cannot cast their arguments); unchanged otherwise. The
    casts are differentiable: the fp32 weights get fp32 gradients."""
    if not torch.is_autocast_enabled("cpu"):
        return x, weight, bias
    dtype = torch.get_autocast_dtype("cpu")
    return x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)


def _even_halving(x: torch.Tensor, module: nn.Module) -> bool:
    """CPU tensors (elsewhere the native layers run unchanged), square kernels, stride 2, and an
    output exactly half (or twice) the input: what the phase form covers."""
    k, s, p = module.kernel_size, module.stride, module.padding
    return (x.device.type == "cpu" and isinstance(p, tuple) and s == (2, 2) and k[0] == k[1] and p[0] == p[1]
            and module.dilation == (1, 1) and module.groups == 1 and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0)


class Conv2dS2(nn.Conv2d):
    """nn.Conv2d (stride 2) whose input gradient runs on forward kernels where faster."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, p = self.kernel_size[0], self.padding[0]
        # output exactly half the input: (H + 2p - k) // 2 + 1 == H // 2  <=>  2p - k in {-2, -1}
        if _even_halving(x, self) and 2 * p - k in (-2, -1):
            return _ConvS2.apply(*_autocast_cast(x, self.weight, self.bias), p)
        return super().forward(x)


class ConvTranspose2dS2(nn.ConvTranspose2d):
    """nn.ConvTranspose2d (stride 2, output twice the input) on forward kernels where faster."""

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        k, p, op = self.kernel_size[0], self.padding[0], self.output_padding
        # output (H - 1) * 2 - 2p + k + op == 2H  <=>  k + op - 2p == 2
        if output_size is None and _even_halving(x, self) and op[0] == op[1] and k + op[0] - 2 * p == 2:
            return _ConvTransposeS2.apply(*_autocast_cast(x, self.weight, self.bias), p, op[0])
        return super().forward(x, output_size)


def conv_transpose_s2(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """The transpose of ``conv`` (a stride-2 Conv2d whose output is half its input) applied to x:
    what conv's input gradient is for output gradient x. Differentiable in x and conv.weight."""
    p = conv.padding[0]
    op = 2 - conv.kernel_size[0] + 2 * p
    if x.device.type == "cpu" and conv.stride == (2, 2) and op in (0, 1):
        return _ConvTransposeS2.apply(*_autocast_cast(x, conv.weight, None), p, op)
    return F.conv_transpose2d(x, conv.weight, stride=conv.stride, padding=conv.padding)
