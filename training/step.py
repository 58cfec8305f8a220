"""One training step in plain torch: tensors in, losses out. Runnable without Ray.

A semi-supervised step is ``n_critic`` critic updates (each on a fresh unpaired batch) then one
separator update on L_s + alpha * L_u + beta * L_add. With alpha = beta = 0 there are no critics
and the step is the supervised baseline. Under data parallelism the gradients of every model are
averaged across workers explicitly (``sync_gradients``) after each backward pass; this keeps the
gradient penalty out of DDP's hooks.

Where the time goes (2 CPU cores, demo config; bench/train.py measures it against the step of
2026-11-27, kept in bench/reference_step.py): the gradient penalty is computed from the critic's
explicit input gradient instead of autograd's double backward (training/critic.py), real and fake
excerpts go through a critic as one batch, paired and unpaired mixtures through the separator as
one batch, transposed convolutions that write few channels run as phase-split forward
convolutions on CPU (training/convs.py), L_u computes no gradient for the critics' weights (it
must not move them), both Adams are torch's fused kernels (one pass per parameter), and losses
stay tensors (no host sync per loss; ``as_floats`` when logging). What is left is convolution
arithmetic and the per-call cost of ~350 small convolutions per semi-supervised step; the numbers
are in bench/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from semisep.pipeline.config import Config
from semisep.pipeline.errors import SemisepError
from semisep.training.critic import Critic
from semisep.training.losses import adversarial_loss, additivity_loss, critic_loss, level_normalized, supervised_loss
from semisep.training.schedule import LearningRate
from semisep.training.separator import SOURCES, UNet

Batch = dict[str, torch.Tensor]


@dataclass
class Models:
    """Separator, one critic per source (empty for the baseline) and their optimisers."""

    separator: UNet
    opt_separator: torch.optim.Optimizer
    critics: dict[str, Critic] = field(default_factory=dict)
    opt_critics: torch.optim.Optimizer | None = None  # one Adam over both critics (same as one each)
    compiled: Callable[[torch.Tensor], torch.Tensor] | None = None  # torch.compile(separator)
    critic_view: Callable[[torch.Tensor], torch.Tensor] = lambda x: x  # what the critics see of an excerpt
    ema: AveragedModel | None = None  # the separator's weights averaged (train.ema_decay), or none
    schedule: LearningRate | None = None  # the learning rate over the run (train.lr_schedule)

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.opt_separator] + ([self.opt_critics] if self.opt_critics else [])

    def separate(self, mixture: torch.Tensor) -> torch.Tensor:
        """(batch, F, T) log-magnitudes -> (batch, 2, F, T) estimates, compiled when asked for."""
        return (self.compiled if self.compiled is not None else self.separator)(mixture)

    def state_dict(self) -> dict:
        return {
            "separator": self.separator.state_dict(),
            "opt_separator": self.opt_separator.state_dict(),
            "critics": {k: c.state_dict() for k, c in self.critics.items()},
            "opt_critics": self.opt_critics.state_dict() if self.opt_critics else {},
        } | ({"ema": self.ema.state_dict()} if self.ema is not None else {}) | (
            {"schedule": self.schedule.state_dict()} if self.schedule is not None else {})

    def load_state_dict(self, state: dict) -> None:
        self.separator.load_state_dict(state["separator"])
        self.opt_separator.load_state_dict(state["opt_separator"])
        for k, c in self.critics.items():
            c.load_state_dict(state["critics"][k])
        if self.opt_critics:
            self.opt_critics.load_state_dict(state["opt_critics"])
        if self.ema is not None:  # a checkpoint without one (written before, or with ema off) starts it anew
            if "ema" in state:
                self.ema.load_state_dict(state["ema"])
            else:
                self.ema = AveragedModel(self.separator, multi_avg_fn=self.ema.multi_avg_fn, use_buffers=True)
        if self.schedule is not None and "schedule" in state:
            self.schedule.load_state_dict(state["schedule"])


def build_separator(cfg: Config) -> UNet:
    """The separator: fresh weights, or those of ``train.init_model`` (a model folder)."""
    sep = UNet(cfg.model.depth, cfg.model.base_channels, cfg.model.dropout)
    if cfg.train.init_model:
        from semisep.training.checkpoint import load_model

        model, transform, meta = load_model(cfg.train.init_model)
        cfg.transform.check_same(transform, f"train.init_model {cfg.train.init_model}")
        theirs = {k: meta["model"].get(k) for k in ("depth", "base_channels")}
        if theirs != {"depth": cfg.model.depth, "base_channels": cfg.model.base_channels}:
            raise SemisepError(f"train.init_model {cfg.train.init_model}: its separator has {theirs}, this "
                               f"config depth={cfg.model.depth}, base_channels={cfg.model.base_channels}; "
                               "fine-tuning needs the same architecture")
        sep.load_state_dict(model.state_dict())
    return sep


def _adam(params, lr: float) -> torch.optim.Optimizer:
    # betas (0.5, 0.9) as in WGAN-GP training; the separator uses the same for symmetry
    # fused: the whole update in one kernel per parameter (torch's default on CPU loops over
    # parameters op by op; foreach was 2-4.5% slower per step on 2 cores, bench/README.md)
    return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.9), fused=True)


def ema_of(separator: UNet, decay: float) -> AveragedModel:
    """torch's exponential moving average of ``separator``'s weights and buffers (its first update
    copies them)."""
    return AveragedModel(separator, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def build_models(cfg: Config, device: torch.device | str = "cpu") -> Models:
    """Models for ``cfg``; no critic is built for the supervised baseline (alpha = beta = 0)."""
    sep = build_separator(cfg).to(device)
    models = Models(sep, _adam(sep.parameters(), cfg.train.lr), schedule=LearningRate(cfg.train))
    if cfg.train.ema_decay > 0:
        models.ema = ema_of(sep, cfg.train.ema_decay)
    if cfg.train.alpha > 0:
        for source in SOURCES:
            models.critics[source] = Critic(cfg.transform.freq_bins, cfg.data.excerpt_frames,
                                            cfg.model.critic_channels, cfg.model.critic_layers).to(device)
        models.opt_critics = _adam([p for c in models.critics.values() for p in c.parameters()], cfg.train.critic_lr)
    if cfg.train.critic_input == "level":
        models.critic_view = level_normalized
    if cfg.train.compile:
        models.compiled = torch.compile(sep)
    return models


def native_bf16_cpu() -> bool:
    """Whether this processor computes bf16 in hardware (AVX512-BF16 or AMX tiles: oneDNN then runs
    bf16 convolutions about twice as fast as fp32); elsewhere bf16 is emulated and slower."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_precision(precision: str, device_type: str) -> str:
    """``train.precision`` on a device: ``auto`` is bf16 on a CPU with native bf16 and fp32 elsewhere
    (on the H100 the paper config ran no faster in bf16: shared/DESIGN.md); fp32 and bf16 as given."""
    if precision != "auto":
        return precision
    return "bf16" if device_type == "cpu" and native_bf16_cpu() else "fp32"


def autocast(x: torch.Tensor, precision: str):
    """bf16 autocast on x's device (CPU or GPU) when ``precision`` resolves to bf16; fp32 otherwise.
    Losses are computed on fp32 copies of the outputs (``.to(dtype)`` below)."""
    return torch.autocast(x.device.type, dtype=torch.bfloat16,
                          enabled=resolve_precision(precision, x.device.type) == "bf16")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sync_gradients(*modules: torch.nn.Module) -> None:
    """Average the gradients of ``modules`` over all workers, in one all-reduce (no-op on one worker)."""
    if not _distributed():
        return
    grads = [p.grad for m in modules for p in m.parameters() if p.grad is not None]
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
    if not _distributed():
        return
    for module in [models.separator, *models.critics.values()]:
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def critic_update(models: Models, unpaired: Batch, gp_lambda: float, precision: str = "fp32",
                  eps: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """One update of both critics. unpaired: mixture, vocals, accompaniment (batch, F, T) each.

    eps: per source, (batch, 1, 1) interpolation weights of the gradient penalty; drawn if None.
    Returns detached 0-dim tensors.
    """
    mixture = unpaired["mixture"]
    with torch.no_grad(), autocast(mixture, precision):
        fake = models.separate(mixture).to(mixture.dtype)
    view = models.critic_view
    total, out = 0.0, {}
    for i, source in enumerate(SOURCES):
        with autocast(mixture, precision):
            loss, w, gp = critic_loss(models.critics[source], view(unpaired[source]), view(fake[:, i]), gp_lambda,
                                      None if eps is None else eps[source])
        total = total + loss
        out |= {f"critic_loss_{source}": loss.detach(), f"wasserstein_{source}": w, f"gradient_penalty_{source}": gp}
    models.opt_critics.zero_grad(set_to_none=True)
    total.backward()  # the critics share no parameter: each gets the gradient of its own loss
    sync_gradients(*models.critics.values())
    models.opt_critics.step()
    return out


def separator_update(models: Models, paired: Batch, unpaired: Batch | None,
                     alpha: float, beta: float, precision: str = "fp32") -> dict[str, torch.Tensor]:
    """One separator update on L_s + alpha * L_u + beta * L_add (detached 0-dim tensors out)."""
    opt = models.opt_separator
    opt.zero_grad(set_to_none=True)
    semi = unpaired is not None and (alpha > 0 or beta > 0)
    mixtures = torch.cat([paired["mixture"], unpaired["mixture"]]) if semi else paired["mixture"]
    with autocast(paired["mixture"], precision):
        est_all = models.separate(mixtures).to(mixtures.dtype)  # one batch: GroupNorm keeps samples independent
        n = paired["mixture"].shape[0]
        l_s = supervised_loss(est_all[:n], paired["vocals"], paired["accompaniment"])
        loss = l_s
        out = {"loss_s": l_s.detach()}
        if semi:
            est = est_all[n:]
            if alpha > 0:
                # L_u must not move the critics: no gradient for their weights is computed at all
                critic_params = [p for c in models.critics.values() for p in c.parameters()]
                for p in critic_params:
                    p.requires_grad_(False)
                try:
                    l_u = sum(adversarial_loss(models.critics[s], models.critic_view(est[:, i]))
                              for i, s in enumerate(SOURCES))
                finally:
                    for p in critic_params:
                        p.requires_grad_(True)
                loss = loss + alpha * l_u
                out["loss_u"] = l_u.detach()
            if beta > 0:
                l_add = additivity_loss(unpaired["mixture"], est)
                loss = loss + beta * l_add
                out["loss_add"] = l_add.detach()
    loss.backward()
    sync_gradients(models.separator)
    opt.step()
    out["loss"] = loss.detach()
    return out


def train_step(models: Models, next_paired: Callable[[], Batch],
               next_unpaired: Callable[[], Batch] | None, cfg: Config) -> dict[str, torch.Tensor]:
    """n_critic critic updates (semi-supervised only), then one separator update.

    Returns detached 0-dim tensors; ``as_floats`` turns them into numbers (one host sync)."""
    t = cfg.train
    metrics: dict[str, torch.Tensor] = {}
    if models.critics:
        for _ in range(t.n_critic):
            metrics |= critic_update(models, next_unpaired(), t.gp_lambda, t.precision)
    unpaired = next_unpaired() if (t.semi_supervised and next_unpaired is not None) else None
    metrics |= separator_update(models, next_paired(), unpaired, t.alpha, t.beta, t.precision)
    if models.ema is not None:
        models.ema.update_parameters(models.separator)
    return metrics


def as_floats(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """Loss tensors -> numbers for logging: one device-to-host copy for all of them."""
    if not metrics:
        return {}
    values = torch.stack([v.detach().float().reshape(()) for v in metrics.values()]).cpu().tolist()
    return dict(zip(metrics, values))
