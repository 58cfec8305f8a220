"""The training step as it was on 2026-11-27 (commit cfa2764), kept as the named baseline.

bench/train.py times the current step against it in the same run, and
tests/training/test_step.py checks that the current step computes the same losses and
parameter updates from the same weights and batches. Do not optimise this file. (Changed since: the U-Net and the critic are
copies of the old ones, the old autograd penalty is inlined, and outputs take the input's dtype instead of
``.float()``, so the comparison can run in float64.)

Original docstring: one training step in plain torch: tensors in, losses out. Runnable without Ray.

A semi-supervised step is ``n_critic`` critic updates (each on a fresh unpaired batch) then one
separator update on L_s + alpha * L_u + beta * L_add. With alpha = beta = 0 there are no critics
and the step is the supervised baseline. Under data parallelism the gradients of every model are
averaged across workers explicitly (``sync_gradients``) after each backward pass; this keeps the
gradient penalty's double backward out of DDP's hooks, which do not support it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from semisep.pipeline.config import Config
from semisep.training.losses import adversarial_loss, additivity_loss, supervised_loss
SOURCES = ("vocals", "accompaniment")

Batch = dict[str, torch.Tensor]


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class UNet(nn.Module):  # the U-Net as it was (training/separator.py computes the same)
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
            self.down.append(nn.Sequential(nn.Conv2d(c_in, c, 5, stride=2, padding=2, bias=False), _norm(c), nn.LeakyReLU(0.2)))
            c_in = c
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):
            c_out = chans[i - 1] if i > 0 else base_channels
            c_cat = chans[i] * (2 if i < depth - 1 else 1)
            layers = [nn.ConvTranspose2d(c_cat, c_out, 5, stride=2, padding=2, output_padding=1, bias=False),
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
        return torch.sigmoid(self.head(torch.cat([h, x], dim=1)))

    def forward(self, mix_log: torch.Tensor) -> torch.Tensor:
        mag = torch.expm1(mix_log).unsqueeze(1)
        return torch.log1p(self.masks(mix_log) * mag)


class Critic(nn.Module):
    """The critic as it was (training/critic.py computes the same scores)."""

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
        self.score = nn.Linear(c_in * f * t, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x.unsqueeze(1))
        return self.score(h.flatten(1)).squeeze(1)


def gradient_penalty(critic, real, fake, eps=None):
    """E[(||grad_x critic(x)||_2 - 1)^2] by autograd's double backward (the original way)."""
    if eps is None:
        eps = torch.rand(real.shape[0], 1, 1, device=real.device, dtype=real.dtype)
    x = (eps * real + (1 - eps) * fake).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def critic_loss(critic, real, fake, gp_lambda, eps=None):
    wasserstein = critic(real).mean() - critic(fake).mean()
    gp = gradient_penalty(critic, real, fake, eps)
    return -wasserstein + gp_lambda * gp, wasserstein.detach(), gp.detach()


@dataclass
class Models:
    """Separator, one critic per source (empty for the baseline) and their optimisers."""

    separator: UNet
    opt_separator: torch.optim.Optimizer
    critics: dict[str, Critic] = field(default_factory=dict)
    opt_critics: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    compiled: Callable[[torch.Tensor], torch.Tensor] | None = None  # torch.compile(separator)

    def separate(self, mixture: torch.Tensor) -> torch.Tensor:
        """(batch, F, T) log-magnitudes -> (batch, 2, F, T) estimates, compiled when asked for."""
        return (self.compiled if self.compiled is not None else self.separator)(mixture)

    def state_dict(self) -> dict:
        return {
            "separator": self.separator.state_dict(),
            "opt_separator": self.opt_separator.state_dict(),
            "critics": {k: c.state_dict() for k, c in self.critics.items()},
            "opt_critics": {k: o.state_dict() for k, o in self.opt_critics.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.separator.load_state_dict(state["separator"])
        self.opt_separator.load_state_dict(state["opt_separator"])
        for k, c in self.critics.items():
            c.load_state_dict(state["critics"][k])
            self.opt_critics[k].load_state_dict(state["opt_critics"][k])


def build_separator(cfg: Config) -> UNet:
    return UNet(cfg.model.depth, cfg.model.base_channels, cfg.model.dropout)


def build_models(cfg: Config, device: torch.device | str = "cpu") -> Models:
    """Models for ``cfg``; no critic is built for the supervised baseline (alpha = beta = 0)."""
    sep = build_separator(cfg).to(device)
    # Adam betas (0.5, 0.9) as in WGAN-GP training; the separator uses the same for symmetry.
    models = Models(sep, torch.optim.Adam(sep.parameters(), lr=cfg.train.lr, betas=(0.5, 0.9)))
    if cfg.train.alpha > 0:
        for source in SOURCES:
            critic = Critic(cfg.transform.freq_bins, cfg.data.excerpt_frames,
                            cfg.model.critic_channels, cfg.model.critic_layers).to(device)
            models.critics[source] = critic
            models.opt_critics[source] = torch.optim.Adam(critic.parameters(), lr=cfg.train.critic_lr, betas=(0.5, 0.9))
    if cfg.train.compile:
        models.compiled = torch.compile(sep)
    return models


def autocast(x: torch.Tensor, precision: str):
    """bf16 autocast on CUDA when asked for; plain fp32 otherwise (CPU bf16 is slower, not faster)."""
    return torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16" and x.device.type == "cuda")


def sync_gradients(module: torch.nn.Module) -> None:
    """Average gradients over all workers (no-op on one worker)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_parameters(models: Models) -> None:
    """Start every worker from rank 0's weights."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    modules = [models.separator, *models.critics.values()]
    for module in modules:
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def critic_update(models: Models, unpaired: Batch, gp_lambda: float, precision: str = "fp32",
                  eps: torch.Tensor | None = None) -> dict[str, float]:
    """One update of both critics. unpaired: mixture, vocals, accompaniment (batch, F, T) each.

    eps: (batch, 1, 1) interpolation weights of the gradient penalty; drawn per sample if None.
    """
    mixture = unpaired["mixture"]
    with torch.no_grad(), autocast(mixture, precision):
        fake = models.separate(mixture).to(mixture.dtype)
    out = {}
    for i, source in enumerate(SOURCES):
        critic, opt = models.critics[source], models.opt_critics[source]
        opt.zero_grad(set_to_none=True)
        with autocast(mixture, precision):
            loss, w, gp = critic_loss(critic, unpaired[source], fake[:, i], gp_lambda, eps)
        loss.backward()
        sync_gradients(critic)
        opt.step()
        out[f"critic_loss_{source}"] = loss.item()
        out[f"wasserstein_{source}"] = w.item()
        out[f"gradient_penalty_{source}"] = gp.item()
    return out


def separator_update(models: Models, paired: Batch, unpaired: Batch | None,
                     alpha: float, beta: float, precision: str = "fp32") -> dict[str, float]:
    """One separator update on L_s + alpha * L_u + beta * L_add."""
    opt = models.opt_separator
    opt.zero_grad(set_to_none=True)
    with autocast(paired["mixture"], precision):
        l_s = supervised_loss(models.separate(paired["mixture"]).to(paired["mixture"].dtype), paired["vocals"], paired["accompaniment"])
        loss = l_s
        out = {"loss_s": l_s.item()}
        if unpaired is not None and (alpha > 0 or beta > 0):
            est = models.separate(unpaired["mixture"]).to(unpaired["mixture"].dtype)
            if alpha > 0:
                l_u = sum(adversarial_loss(models.critics[s], est[:, i]) for i, s in enumerate(SOURCES))
                loss = loss + alpha * l_u
                out["loss_u"] = l_u.item()
            if beta > 0:
                l_add = additivity_loss(unpaired["mixture"], est)
                loss = loss + beta * l_add
                out["loss_add"] = l_add.item()
    loss.backward()
    sync_gradients(models.separator)
    for critic in models.critics.values():
        critic.zero_grad(set_to_none=True)  # L_u must not move the critics
    opt.step()
    out["loss"] = loss.item()
    return out


def train_step(models: Models, next_paired: Callable[[], Batch],
               next_unpaired: Callable[[], Batch] | None, cfg: Config) -> dict[str, float]:
    """n_critic critic updates (semi-supervised only), then one separator update."""
    t = cfg.train
    metrics: dict[str, float] = {}
    if models.critics:
        for _ in range(t.n_critic):
            metrics.update(critic_update(models, next_unpaired(), t.gp_lambda, t.precision))
    unpaired = next_unpaired() if (t.semi_supervised and next_unpaired is not None) else None
    metrics.update(separator_update(models, next_paired(), unpaired, t.alpha, t.beta, t.precision))
    return metrics


def batches_from_arrays(arrays: dict[str, torch.Tensor], batch_size: int, seed: int,
                        start: int = 0) -> Iterator[Batch]:
    """Endless shuffled batches from in-memory arrays (name -> (rows, F, T)); no Ray needed.

    Batch k depends only on (seed, k): epoch k // per_epoch is a permutation seeded by
    (seed, epoch). ``start`` resumes a stream exactly where a checkpoint left it.
    """
    n = next(iter(arrays.values())).shape[0]
    assert n >= batch_size, f"{n} rows cannot fill a batch of {batch_size}"
    per_epoch = n // batch_size
    k, epoch, order = start, -1, None
    while True:
        e, i = divmod(k, per_epoch)
        if e != epoch:
            epoch, order = e, torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + e))
        idx = order[i * batch_size:(i + 1) * batch_size]
        yield {name: v[idx] for name, v in arrays.items()}
        k += 1
