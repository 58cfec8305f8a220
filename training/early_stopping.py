"""Early stopping and model choice: keep the best separator by a validation score.

The record (``new_best``) travels in checkpoints, so a resumed run keeps the best it had.
"""

from __future__ import annotations

import math


def new_best() -> dict:
    """The record before any validation: best score (higher is better), its step, validations
    since the last gain, and the score that gain is measured from (``reference``)."""
    return {"score": -math.inf, "step": 0, "bad_evals": 0, "state": None, "val": {}, "reference": -math.inf}


def keep_best(best: dict, score: float, step: int, separator, patience: int, val: dict | None = None,
              min_delta: float = 0.0) -> bool:
    """Keep a copy of ``separator`` in ``best`` when ``score`` beats it (NaN never does); True when
    ``patience`` validations in a row brought no gain above ``min_delta`` over the score of the
    last gain (a plateau: time to stop early). A better score inside the margin is still kept."""
    gain = score > best.get("reference", best["score"]) + min_delta  # a record from before min_delta: its best
    if score > best["score"]:
        best.update(score=score, step=step, val=dict(val or {}),
                    state={k: v.detach().cpu().clone() for k, v in separator.state_dict().items()})
    if gain:
        best.update(reference=score, bad_evals=0)
    else:
        best["bad_evals"] += 1
    return best["bad_evals"] >= patience
