"""Early stopping and model choice: keep the best separator by a validation score.

The record (``new_best``) travels in checkpoints, so a resumed run keeps the best it had.
"""

from __future__ import annotations

import math


def new_best() -> dict:
    """The record before any validation: best score (higher is better), its step, validations since."""
    return {"score": -math.inf, "step": 0, "bad_evals": 0, "state": None, "val": {}}


def keep_best(best: dict, score: float, step: int, separator, patience: int, val: dict | None = None) -> bool:
    """Keep a copy of ``separator`` in ``best`` when ``score`` beats it (NaN never does); True when
    ``patience`` validations in a row brought no improvement (time to stop early)."""
    if score > best["score"]:
        best.update(score=score, step=step, bad_evals=0, val=dict(val or {}),
                    state={k: v.detach().cpu().clone() for k, v in separator.state_dict().items()})
    else:
        best["bad_evals"] += 1
    return best["bad_evals"] >= patience
