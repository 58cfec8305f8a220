"""The learning rate over a run: a linear warm-up, then constant, a cosine decay or cuts on plateaus.

``LearningRate`` scales every optimiser's starting rate (``train.lr`` for the separator,
``train.critic_lr`` for the critics: the schedule keeps their ratio) by ``factor(step)``:

- ``warmup_steps``: the factor rises linearly from 1/warmup to 1 over the first steps (Adam's
  second-moment estimates are poor early on; a full-size step then can throw a U-Net off);
- ``lr_schedule: constant``: 1 after the warm-up (the behaviour before schedules existed);
- ``cosine``: half a cosine from 1 down to ``lr_min_factor`` at ``train.max_steps``;
- ``plateau``: the factor is multiplied by ``plateau_factor`` whenever ``plateau_patience``
  validations in a row brought no gain of more than ``train.min_delta`` (the selection score's
  units: dB for ``val_sdr``), never below ``lr_min_factor``. Early stopping then ends the run once
  a cut rate stops helping too, so ``max_steps`` is only a cap.

Torch's own schedulers chain warm-up and cosine (``SequentialLR``) but not warm-up and a plateau
rule that is decided on one rank and applied on all, so the factor is computed here; its state
travels in checkpoints (``state_dict``), and a resumed run continues with the rate it had.
"""

from __future__ import annotations

import math

import torch

from semisep.pipeline.config import TrainConfig


class LearningRate:
    def __init__(self, t: TrainConfig):
        self.t = t
        self.cut = 1.0  # the plateau rule's multiplier
        self.reference = -math.inf  # the score the plateau rule measures gains against
        self.bad = 0  # validations since the last gain

    def factor(self, step: int) -> float:
        """The multiplier of the starting rates for the update that makes step ``step + 1``."""
        t = self.t
        warm = min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps else 1.0
        if t.lr_schedule == "cosine":
            span = max(1, t.max_steps - t.warmup_steps)
            progress = min(1.0, max(0, step - t.warmup_steps) / span)
            return warm * (t.lr_min_factor + (1 - t.lr_min_factor) * 0.5 * (1 + math.cos(math.pi * progress)))
        return warm * self.cut

    def apply(self, optimizers: list[torch.optim.Optimizer | None], step: int) -> float:
        """Set every parameter group's rate for the next update; returns the factor."""
        f = self.factor(step)
        for opt in optimizers:
            for group in opt.param_groups if opt is not None else ():
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * f
        return f

    def observe(self, score: float) -> bool:
        """Rank 0, after a validation: True when the plateau rule cuts the rate now (every rank
        then calls ``reduce``)."""
        if self.t.lr_schedule != "plateau":
            return False
        if score > self.reference + self.t.min_delta:
            self.reference, self.bad = score, 0
            return False
        self.bad += 1
        if self.bad < self.t.plateau_patience or self.cut <= self.t.lr_min_factor:
            return False
        self.bad = 0
        return True

    def reduce(self) -> None:
        self.cut = max(self.t.lr_min_factor, self.cut * self.t.plateau_factor)

    def state_dict(self) -> dict:
        return {"cut": self.cut, "reference": self.reference, "bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        self.cut, self.reference, self.bad = float(state["cut"]), float(state["reference"]), int(state["bad"])
