"""The stride-2 convolutions of training/convs.py compute what torch's layers compute, both ways."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import semisep.training.convs as convs
from semisep.training.convs import Conv2dS2, ConvTranspose2dS2, conv_transpose_s2, transposed_s2


@pytest.mark.parametrize("kernel,padding,output_padding", [(4, 1, 0), (5, 2, 1), (3, 1, 1), (2, 0, 0)])
def test_phase_form_is_the_transposed_convolution(kernel, padding, output_padding):
    g = torch.Generator().manual_seed(kernel)
    x = torch.randn(3, 5, 6, 4, generator=g, dtype=torch.float64)
    w = torch.randn(5, 7, kernel, kernel, generator=g, dtype=torch.float64)
    want = F.conv_transpose2d(x, w, stride=2, padding=padding, output_padding=output_padding)
    got = transposed_s2(x, w, padding)
    assert got.shape == want.shape == (3, 7, 12, 8)
    assert torch.allclose(got, want, rtol=0, atol=1e-12)


def _grads(module, x):
    x = x.clone().requires_grad_(True)
    y = module(x)
    weights = torch.arange(y.numel(), dtype=y.dtype).reshape(y.shape).sin()  # a loss that weighs every output
    (y * weights).sum().backward()
    return y.detach(), x.grad, [p.grad for p in module.parameters()]


@pytest.mark.parametrize("dtype,size", [(torch.float64, (16, 8)), (torch.float64, (24, 20)),
                                        (torch.float32, (16, 8)), (torch.float32, (24, 20))])
@pytest.mark.parametrize("threshold", [0, 8, 64])  # native kernels only, the default, phase form everywhere
@pytest.mark.parametrize("layer", [
    lambda: nn.Conv2d(1, 8, 4, stride=2, padding=1),  # critic, first layer
    lambda: nn.Conv2d(8, 16, 4, stride=2, padding=1),
    lambda: nn.Conv2d(8, 16, 5, stride=2, padding=2, bias=False),  # U-Net down
    lambda: nn.ConvTranspose2d(16, 8, 5, stride=2, padding=2, output_padding=1, bias=False),  # U-Net up
    lambda: nn.ConvTranspose2d(16, 4, 4, stride=2, padding=1),
])
def test_layers_match_torch_forward_and_backward(layer, threshold, dtype, size, monkeypatch):
    """Outputs, input and parameter gradients; float32 within its rounding (1e-5 of each tensor's
    largest value: a wrong tap or phase is off by the order of the values themselves)."""
    monkeypatch.setattr(convs, "PHASE_MAX_CHANNELS", threshold)
    torch.manual_seed(0)
    reference = layer().to(dtype)
    cls = Conv2dS2 if isinstance(reference, nn.Conv2d) else ConvTranspose2dS2
    ours = cls(reference.in_channels, reference.out_channels, reference.kernel_size, stride=2,
               padding=reference.padding, bias=reference.bias is not None, dtype=dtype,
               **({"output_padding": reference.output_padding} if cls is ConvTranspose2dS2 else {}))
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, reference.in_channels, *size, dtype=dtype)
    tolerance = 1e-10 if dtype == torch.float64 else 1e-5
    for want, got in zip(_grads(reference, x), _grads(ours, x)):
        for a, b in zip(want if isinstance(want, list) else [want], got if isinstance(got, list) else [got]):
            assert a.shape == b.shape
            assert (a - b).abs().max().item() <= tolerance * max(1.0, a.abs().max().item())


def test_odd_sizes_and_other_strides_fall_back_to_torch():
    torch.manual_seed(1)
    conv = Conv2dS2(2, 3, 4, stride=2, padding=1).double()
    odd = torch.randn(1, 2, 9, 7, dtype=torch.float64)
    assert torch.equal(conv(odd), F.conv2d(odd, conv.weight, conv.bias, stride=2, padding=1))
    plain = ConvTranspose2dS2(3, 2, 3, stride=1, padding=1).double()
    y = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    assert torch.equal(plain(y), F.conv_transpose2d(y, plain.weight, plain.bias, padding=1))


def test_transpose_of_a_conv_is_its_input_gradient():
    """What the critic's explicit input gradient uses: conv_transpose_s2(g, conv) = d<g, conv(x)>/dx."""
    torch.manual_seed(2)
    conv = Conv2dS2(1, 8, 4, stride=2, padding=1, bias=False).double()
    x = torch.randn(3, 1, 16, 8, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 8, 8, 4, dtype=torch.float64)
    (want,) = torch.autograd.grad((conv(x) * g).sum(), x)
    assert torch.allclose(conv_transpose_s2(g, conv), want, rtol=0, atol=1e-12)
