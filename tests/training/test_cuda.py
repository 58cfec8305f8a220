"""On a GPU, the step computes what it computes on the CPU (skipped where there is no CUDA device).

Off the CPU, training/convs.py's layers fall back to torch's own kernels, so these are the only
tests of that path: the gradient penalty and its parameter gradients, and the gradients of a
critic update and a separator update, against the CPU from the same weights, TF32 off.
"""

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_gradient_penalty_on_cuda_is_the_cpus():
    from semisep.training.critic import Critic
    from semisep.training.losses import gradient_penalty

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    cpu = Critic(256, 64, channels=16, layers=4)
    gpu = Critic(256, 64, channels=16, layers=4).cuda()
    gpu.load_state_dict(cpu.state_dict())
    real, fake, eps = torch.rand(8, 256, 64) * 3, torch.rand(8, 256, 64) * 3, torch.rand(8, 1, 1)
    want = gradient_penalty(cpu, real, fake, eps)
    got = gradient_penalty(gpu, real.cuda(), fake.cuda(), eps.cuda())
    assert abs(got.item() - want.item()) <= 1e-4 * abs(want.item())
    want_grads = torch.autograd.grad(want, list(cpu.parameters()))
    got_grads = torch.autograd.grad(got, list(gpu.parameters()))
    for (name, _), w, g in zip(cpu.named_parameters(), want_grads, got_grads):
        assert (g.cpu() - w).abs().max() <= 1e-3 * w.abs().max() + 1e-12, name


def test_a_step_on_cuda_has_the_cpus_losses_and_gradients():
    from bench.gpu import numerics_row
    from bench.step_timing import PAPER

    row = numerics_row(PAPER, "cuda")
    assert row["ok"], row
