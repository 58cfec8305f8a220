"""Training progress on the console: a live bar on a terminal, one line per validation otherwise.

``TrainProgress`` renders the records a Ray Train worker sends while it trains (training/train.py's
``on_progress``): a tqdm bar with step / max steps, time left, the last losses and the best
validation SDR so far when the output is a terminal; else one line per validation, so logs and
``ray job logs`` stay readable. ``trial_line`` is the same line for one Tune trial's report
(``semisep tune``, ``semisep experiment``).
"""

from __future__ import annotations

import sys
import time


def _duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_line(label: str, step: int, max_steps: int, steps_per_s: float, losses: dict, val: dict) -> str:
    """``label: step 50/200 · 12.4 steps/s · 12 s left · loss 0.0312 · validation SDR vocals ...``"""
    parts = [f"step {step}/{max_steps}", f"{steps_per_s:.2f} steps/s",
             f"{_duration((max_steps - step) / steps_per_s) if steps_per_s > 0 else '?'} left"]
    if "loss" in losses:
        terms = {"L_s": losses.get("loss_s"), "L_u": losses.get("loss_u"), "L_add": losses.get("loss_add")}
        shown = [f"{k} {v:.4f}" for k, v in terms.items() if v is not None and (k != "L_s" or len(losses) > 2)]
        parts.append(f"loss {losses['loss']:.4f}" + (f" ({', '.join(shown)})" if shown else ""))
    if "val_sdr" in val:
        parts.append(f"validation SDR vocals {val['val_sdr']:.2f} dB, best {val.get('best_val_sdr', val['val_sdr']):.2f} dB"
                     f" (step {int(val.get('best_step', step))})")
    return f"  {label}: " + " · ".join(parts)


LOSSES = ("loss", "loss_s", "loss_u", "loss_add")


class TrainProgress:
    """Callable on progress records (``kind``: ``losses`` or ``validation``, ``step``, metrics).

    mode: ``bar`` (a live tqdm bar; for a terminal), ``lines`` (one line per validation) or ``off``.
    """

    def __init__(self, label: str, max_steps: int, mode: str = "lines", out=None):
        self.label, self.max_steps, self.mode, self.out = label, max_steps, mode, out or sys.stdout
        self.losses: dict[str, float] = {}
        self.val: dict[str, float] = {}
        self.started: tuple[float, int] | None = None  # (time, step) of the first record
        self.rate = 0.0
        self.bar = None

    def _steps_per_s(self, step: int) -> float:
        now = time.monotonic()
        if self.started is None or step <= self.started[1]:
            self.started = self.started or (now, step)
            return self.rate
        return (step - self.started[1]) / max(1e-9, now - self.started[0])

    def __call__(self, record: dict) -> None:
        if self.mode == "off":
            return
        step = int(record["step"])
        self.rate = float(record.get("steps_per_s") or 0) or self._steps_per_s(step)
        self.losses |= {k: float(record[k]) for k in LOSSES if k in record}
        if record.get("kind") == "validation":
            self.val = {k: float(record[k]) for k in ("val_sdr", "best_val_sdr", "best_step") if k in record}
        if self.mode == "bar":
            self._bar(step)
        elif record.get("kind") == "validation":
            print(progress_line(self.label, step, self.max_steps, self.rate, self.losses, self.val),
                  file=self.out, flush=True)

    def _bar(self, step: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=self.max_steps, desc=self.label, unit="step", leave=False, file=self.out,
                            dynamic_ncols=True)
        self.bar.update(step - self.bar.n)
        postfix = [f"loss {self.losses['loss']:.4f}"] if "loss" in self.losses else []
        if "best_val_sdr" in self.val:
            postfix.append(f"best val SDR {self.val['best_val_sdr']:.2f} dB")
        self.bar.set_postfix_str(", ".join(postfix), refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def console_mode(quiet: bool, stream=None) -> str:
    """``off`` when quiet, ``bar`` on a terminal, ``lines`` otherwise."""
    stream = stream or sys.stdout
    if quiet:
        return "off"
    return "bar" if getattr(stream, "isatty", lambda: False)() else "lines"


def trial_line(label: str, result: dict, max_steps: int) -> str:
    """One line for a Tune trial's validation report."""
    losses = {k: float(result[k]) for k in LOSSES if k in result}
    return progress_line(label, int(result.get("step", 0)), max_steps, float(result.get("steps_per_s") or 0), losses,
                         {k: float(result[k]) for k in ("val_sdr", "best_val_sdr", "best_step") if k in result})
