"""One training step in plain torch: tensors in, losses out. Runnable without Ray.

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

from pipeline.config import Config
from training.critic import Critic
from training.losses import adversarial_loss, additivity_loss, critic_loss, supervised_loss
from training.separator import SOURCES, UNet

Batch = dict[str, torch.Tensor]


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
        fake = models.separate(mixture).float()
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
        l_s = supervised_loss(models.separate(paired["mixture"]).float(), paired["vocals"], paired["accompaniment"])
        loss = l_s
        out = {"loss_s": l_s.item()}
        if unpaired is not None and (alpha > 0 or beta > 0):
            est = models.separate(unpaired["mixture"]).float()
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
