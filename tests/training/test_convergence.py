"""Training that converges without hand-tuning: warm-up and decay, plateaus, the weights' moving
average, and bf16 autocast on the CPU. Plain torch, no Ray: the loop of ``semisep train``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from semisep.pipeline.config import load_config
from semisep.training.checkpoint import load_training_state, save_training_state
from semisep.training.data import ValidationSet
from semisep.training.early_stopping import keep_best, new_best
from semisep.training.learning_curve import last_quarter_gain, save
from semisep.training.schedule import LearningRate
from semisep.training.step import autocast, build_models, native_bf16_cpu, resolve_precision, train_step
from semisep.training.worker import reseed, run, validate_weights

F, T = 32, 8


def _cfg(*overrides):
    return load_config(None, [f"transform.freq_bins={F}", f"data.excerpt_frames={T}", "model.depth=2",
                              "model.base_channels=4", "model.critic_layers=2", "model.critic_channels=4", "train.batch_size=4", "train.lr=0.01",
                              "train.val_every=2", "train.log_every=1", *overrides])


def test_warmup_then_cosine_reaches_the_floor_at_max_steps():
    t = _cfg("train.lr_schedule=cosine", "train.warmup_steps=4", "train.max_steps=20", "train.lr_min_factor=0.1").train
    lr = LearningRate(t)
    factors = [lr.factor(s) for s in range(20)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in zip(factors[3:], factors[4:]))  # decays after the warm-up
    assert lr.factor(20) == pytest.approx(0.1) and lr.factor(100) == pytest.approx(0.1)
    assert lr.factor(12) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 8 / 16)))


def test_plateau_cuts_after_patience_and_stops_at_the_floor():
    t = _cfg("train.lr_schedule=plateau", "train.plateau_patience=2", "train.plateau_factor=0.5",
             "train.lr_min_factor=0.25", "train.min_delta=0.1").train
    lr = LearningRate(t)
    cuts = []
    for score in [1.0, 1.05, 1.08, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]:  # +0.05 and +0.08 are inside min_delta
        if lr.observe(score):
            lr.reduce()
        cuts.append(lr.cut)
    assert cuts == [1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.25]
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    assert lr.apply([opt, None], 10) == 0.25 and opt.param_groups[0]["lr"] == pytest.approx(0.005)
    again = LearningRate(t)
    again.load_state_dict(lr.state_dict())
    assert again.factor(10) == 0.25 and again.bad == lr.bad and again.reference == lr.reference
    assert not LearningRate(_cfg().train).observe(-5.0)  # constant: never cuts


def test_min_delta_keeps_a_better_model_but_counts_a_plateau():
    sep = torch.nn.Linear(1, 1)
    best = new_best()
    assert not keep_best(best, 1.0, 1, sep, patience=2, min_delta=0.1)
    assert not keep_best(best, 1.05, 2, sep, patience=2, min_delta=0.1)  # better, inside the margin
    assert best["step"] == 2 and best["bad_evals"] == 1  # kept, but no gain
    assert keep_best(best, 1.09, 3, sep, patience=2, min_delta=0.1)  # still within 0.1 of 1.0: stop
    assert best["step"] == 3
    plain = new_best()  # min_delta 0: every improvement is a gain, as before
    for step, score in enumerate([1.0, 1.01, 1.02], 1):
        assert not keep_best(plain, score, step, sep, patience=1)


def _valid(seed=0, rows=6):
    g = torch.Generator().manual_seed(seed)
    vocals = torch.randn(rows, 2, F, T, generator=g)
    acc = 2 * torch.randn(rows, 2, F, T, generator=g)
    return ValidationSet({"mixture": vocals + acc, "vocals": vocals, "accompaniment": acc},
                         torch.tensor([0, 0, 0, 1, 1, 1]), ["a", "b"])


def _batches(cfg, seed=0):
    from semisep.training.batches import Batches

    g = torch.Generator().manual_seed(seed)
    planes = lambda: torch.randn(32, 2, F, T, generator=g).half()  # noqa: E731
    streams = {"paired": {k: planes() for k in ("mixture", "vocals", "accompaniment")}}
    streams |= {role: {role: planes()} for role in ("mixture", "vocals", "accompaniment")}
    return Batches.from_arrays(streams, cfg, cfg.train.batch_size, seed)


def test_ema_is_validated_and_kept_when_validation_prefers_it():
    cfg = _cfg("train.ema_decay=0.9")
    torch.manual_seed(0)
    models = build_models(cfg)
    batches = _batches(cfg)
    for _ in range(3):
        train_step(models, batches.supervised, None, cfg)
    valid = _valid()
    raw, averaged = models.separator, models.ema.module
    assert any((p - q).abs().max() > 0 for p, q in zip(raw.parameters(), averaged.parameters()))
    val, weights = validate_weights(models, valid, cfg.train, "cpu")
    assert {"val_sdr_raw", "val_sdr_ema", "val_ema"} <= val.keys()
    preferred = averaged if val["val_sdr_ema"] > val["val_sdr_raw"] else raw
    assert weights is preferred and val["val_sdr"] == max(val["val_sdr_raw"], val["val_sdr_ema"])
    assert val["val_ema"] == float(preferred is averaged)
    # make the average clearly worse: the raw weights are chosen
    with torch.no_grad():
        for p in averaged.parameters():
            p.mul_(-3.0)
    val, weights = validate_weights(models, valid, cfg.train, "cpu")
    assert weights is raw and val["val_ema"] == 0.0


def _run_to(cfg, step_to, models=None, start=0, best=None):
    torch.manual_seed(cfg.train.seed)
    models = models or build_models(cfg)
    reseed(cfg.train.seed, 0, start)
    batches = _batches(cfg)
    for _ in range(start):  # the data position of a straight run at ``start``
        batches.supervised()
    cfg.train.max_steps = step_to
    best = best if best is not None else new_best()
    logged = {}
    run(cfg, models, batches, _valid(), step=start, best=best, on_validation=lambda *a: None,
        log=lambda m, s: logged.setdefault(s, m))
    return models, best, logged


def test_resume_with_ema_and_plateau_schedule_continues_exactly(tmp_path):
    overrides = ("train.ema_decay=0.8", "train.lr_schedule=plateau", "train.plateau_patience=1",
                 "train.warmup_steps=3", "train.patience=50")
    straight, best_straight, logged = _run_to(_cfg(*overrides), 8)
    half_cfg = _cfg(*overrides)
    half, best_half, _ = _run_to(half_cfg, 4)
    save_training_state(str(tmp_path), half, 4, best_half, half_cfg, {"0": {}})
    resumed_cfg = _cfg(*overrides)
    torch.manual_seed(123)  # other fresh weights: everything must come from the checkpoint
    resumed = build_models(resumed_cfg)
    step, best, _ = load_training_state(str(tmp_path), resumed)
    assert step == 4 and resumed.schedule.state_dict() == half.schedule.state_dict()
    resumed, best, logged_resumed = _run_to(resumed_cfg, 8, resumed, start=4, best=best)
    for name, p in straight.ema.module.state_dict().items():
        assert torch.allclose(p.float(), resumed.ema.module.state_dict()[name].float(), atol=1e-6), name
    for name, p in straight.separator.state_dict().items():
        assert torch.allclose(p, resumed.separator.state_dict()[name], atol=1e-6), name
    assert logged_resumed[8]["lr"] == pytest.approx(logged[8]["lr"])
    assert [logged[s]["lr"] for s in (1, 2, 3)] == pytest.approx([0.01 / 3, 0.02 / 3, 0.01])  # the warm-up
    assert best["step"] == best_straight["step"] and best["score"] == pytest.approx(best_straight["score"])


def test_auto_precision_follows_the_processor():
    assert resolve_precision("auto", "cpu") == ("bf16" if native_bf16_cpu() else "fp32")
    assert resolve_precision("auto", "cuda") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("fp32", "cpu") == "fp32"


@pytest.mark.parametrize("semi", [False, True])
def test_bf16_autocast_trains_on_the_cpu_close_to_fp32(semi):
    """The custom convolutions take autocast's bf16 (a dtype mismatch before); the weights stay fp32."""
    extra = ["train.alpha=0.001", "train.beta=0.001", "train.n_critic=1", "model.critic_channels=4",
             "model.critic_layers=2"] if semi else []
    losses = {}
    for precision in ("fp32", "bf16"):
        cfg = _cfg(f"train.precision={precision}", *extra)
        torch.manual_seed(0)
        models = build_models(cfg)
        batches = _batches(cfg)
        out = train_step(models, batches.supervised, batches.unsupervised if semi else None, cfg)
        assert all(p.dtype == torch.float32 for p in models.separator.parameters())
        assert all(p.grad is None or p.grad.dtype == torch.float32 for p in models.separator.parameters())
        losses[precision] = {k: float(v) for k, v in out.items()}
        from semisep.training.convs import Conv2dS2

        seen = []  # autocast really runs the separator's convolutions in bf16 on the CPU
        conv = next(m for m in models.separator.modules() if isinstance(m, Conv2dS2))
        conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
        x = torch.randn(2, F, T)
        with autocast(x, precision):
            models.separator(x)
        assert seen == [torch.bfloat16 if precision == "bf16" else torch.float32]
    for key, value in losses["fp32"].items():
        assert losses["bf16"][key] == pytest.approx(value, rel=0.05, abs=0.02), key


def test_last_quarter_gain_and_the_plot(tmp_path):
    rising = [(s, s / 100) for s in range(100, 1001, 100)]
    assert last_quarter_gain(rising) == pytest.approx(10.0 - 7.0)
    flat = [(100, 1.0), (200, 2.0), (300, 2.5), (400, 2.4)]
    assert last_quarter_gain(flat) == 0.0  # the last quarter (after step 300) did not beat 2.5
    assert np.isnan(last_quarter_gain([]))
    assert last_quarter_gain([(100, float("nan")), (200, 1.0)]) == 0.0
    path = save({"a": [rising, rising[:5]], "b": [flat]}, tmp_path / "curves.png", "title")
    assert (tmp_path / "curves.png").stat().st_size > 5000 and path.endswith("curves.png")


def test_a_long_title_stays_inside_the_figure():
    """An experiment's name makes the plot's title long; it is wrapped, not cut at the edge."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from semisep.training.learning_curve import figure

    title = "sampled-mixtures-only-with-a-longer-name: validation vocal SDR (mean over seeds, band: lowest to highest)"
    fig = figure({"a": [[(100, 1.0), (200, 2.0)]]}, title)
    canvas = FigureCanvasAgg(fig)  # what savefig draws with
    canvas.draw()
    box = fig.axes[0].title.get_window_extent(canvas.get_renderer())
    page = fig.bbox
    assert page.x0 <= box.x0 and box.x1 <= page.x1, (box, page)
    assert fig.axes[0].title.get_text().replace("\n", " ") == title
