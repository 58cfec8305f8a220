import torch

import bench.reference_step as reference
from semisep.pipeline.config import load_config
from semisep.training.losses import supervised_loss
from semisep.training.step import as_floats, build_models, train_step

# fp32: these tests compare the step's arithmetic with references to 1e-6; `auto` would be bf16 on a
# processor with native bf16 (CI's machines differ: avx512_bf16 on some), and the 2026-11-27 reference
# step was never autocast-safe
SMALL = ["model.base_channels=4", "model.critic_channels=4", "model.critic_layers=3",
         "data.excerpt_frames=32", "train.batch_size=4", "train.alpha=0.001", "train.beta=0.001",
         "train.precision=fp32"]


def _data(seed=0, n=8):
    g = torch.Generator().manual_seed(seed)
    mag_v = torch.rand(n, 256, 32, generator=g) * 2
    mag_a = torch.rand(n, 256, 32, generator=g) * 2
    return {"mixture": torch.log1p(mag_v + mag_a), "vocals": torch.log1p(mag_v), "accompaniment": torch.log1p(mag_a)}


def _stream(data, batch=4):
    """Endless batches cycling through ``data``."""
    k = 0
    while True:
        rows = torch.arange(k, k + batch) % len(data["mixture"])
        yield {name: v[rows] for name, v in data.items()}
        k += batch


def test_supervised_baseline_builds_and_steps_no_critic():
    cfg = load_config(None, SMALL + ["train.alpha=0", "train.beta=0"])
    models = build_models(cfg)
    assert models.critics == {} and models.opt_critics is None
    batch = {k: v[:4] for k, v in _data().items()}
    unpaired_calls = []

    def next_unpaired():
        unpaired_calls.append(1)
        return batch

    expected = supervised_loss(models.separator(batch["mixture"]), batch["vocals"], batch["accompaniment"]).item()
    metrics = as_floats(train_step(models, lambda: batch, next_unpaired, cfg))
    assert unpaired_calls == []
    assert set(metrics) == {"loss", "loss_s"}
    assert abs(metrics["loss"] - expected) < 1e-6 and metrics["loss"] == metrics["loss_s"]


def test_semi_supervised_step_updates_critics_and_adds_terms():
    cfg = load_config(None, SMALL + ["train.n_critic=3"])
    models = build_models(cfg)
    before = {k: [p.clone() for p in c.parameters()] for k, c in models.critics.items()}
    it = _stream(_data())
    metrics = as_floats(train_step(models, lambda: next(it), lambda: next(it), cfg))
    assert {"loss_u", "loss_add", "wasserstein_vocals", "gradient_penalty_accompaniment"} <= set(metrics)
    expected = metrics["loss_s"] + cfg.train.alpha * metrics["loss_u"] + cfg.train.beta * metrics["loss_add"]
    assert abs(metrics["loss"] - expected) < 1e-5
    for k, c in models.critics.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[k], c.parameters()))


def _equal_start(cfg):
    """The reference step's models (2026-11-27) and today's, from the same weights, in float64."""
    torch.manual_seed(0)
    old = reference.build_models(cfg)
    new = build_models(cfg)
    new.separator.load_state_dict(old.separator.state_dict())
    for source, critic in new.critics.items():
        critic.load_state_dict(old.critics[source].state_dict())
    for m in (old.separator, new.separator, *old.critics.values(), *new.critics.values()):
        m.double()
    return old, new


def test_step_computes_the_reference_steps_losses_and_updates():
    """Float64, so that only the maths can differ: tolerance 1e-9 on losses and parameters after
    three steps (Adam moves each parameter by up to lr = 1e-3 per step)."""
    for extra in (["train.alpha=0", "train.beta=0"], ["train.n_critic=2"], ["train.n_critic=2", "train.alpha=0.01"]):
        cfg = load_config(None, SMALL + extra)
        old, new = _equal_start(cfg)
        data = {k: v.double() for k, v in _data(seed=3, n=12).items()}
        histories = []
        for module, models in ((reference, old), (None, new)):
            it = _stream(data)
            torch.manual_seed(7)  # the penalty's interpolation weights are drawn in the same order
            step = module.train_step if module else train_step
            histories.append([{k: float(v) for k, v in step(models, lambda: next(it), lambda: next(it), cfg).items()}
                              for _ in range(3)])
        for got, want in zip(histories[1], histories[0]):
            assert got.keys() == want.keys()
            for key in want:
                assert abs(got[key] - want[key]) <= 1e-9 * max(1.0, abs(want[key])), (extra, key, got[key], want[key])
        pairs = [(old.separator, new.separator)] + [(old.critics[s], new.critics[s]) for s in new.critics]
        for a, b in pairs:
            for (name, p), q in zip(a.named_parameters(), b.parameters()):
                assert torch.allclose(p, q, rtol=0, atol=1e-9), (extra, name, (p - q).abs().max().item())


def _grads(module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}


def _assert_same_grads(got: dict, want: dict, what) -> None:
    assert got.keys() == want.keys() and want, (what, sorted(set(got) ^ set(want)))
    for name, w in want.items():
        scale = max(1e-12, w.abs().max().item())
        assert (got[name] - w).abs().max().item() <= 1e-9 * scale, (what, name, (got[name] - w).abs().max().item(), scale)


def test_step_computes_the_reference_steps_gradients_before_the_optimiser():
    """Every parameter's gradient, before Adam (which would cancel a per-tensor scale error),
    against the 2026-11-27 step's, in float64: the critics' after a critic update, the
    separator's after a separator update, for the supervised and the semi-supervised step."""
    from semisep.training.step import SOURCES, critic_update, separator_update

    for extra in (["train.alpha=0", "train.beta=0"], ["train.n_critic=2"], ["train.alpha=0.01", "train.beta=0"]):
        cfg = load_config(None, SMALL + extra)
        t = cfg.train
        old, new = _equal_start(cfg)
        data = {k: v.double() for k, v in _data(seed=5, n=12).items()}
        paired = {k: v[:4] for k, v in data.items()}
        unpaired = {k: v[4:8] for k, v in data.items()}
        if new.critics:
            eps = torch.rand(4, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
            reference.critic_update(old, unpaired, t.gp_lambda, eps=eps)
            critic_update(new, unpaired, t.gp_lambda, eps={s: eps for s in SOURCES})
            for source in SOURCES:
                _assert_same_grads(_grads(new.critics[source]), _grads(old.critics[source]), (extra, source))
        semi = unpaired if t.semi_supervised else None
        reference.separator_update(old, paired, semi, t.alpha, t.beta)
        separator_update(new, paired, semi, t.alpha, t.beta)
        _assert_same_grads(_grads(new.separator), _grads(old.separator), (extra, "separator"))


def _song_batch(cfg):
    """Four excerpts of a generated song as the model sees them."""
    from semisep.pipeline.demo_corpus import render_song
    from semisep.pipeline.spectrogram import features, resample, to_mono

    song = render_song(0, "studio", 6.0)
    out = {}
    for k, v in song.items():
        x = torch.from_numpy(resample(to_mono(v), 44100, 8192).astype("float32"))
        f = features(x, cfg.transform)
        out[k] = torch.stack([f[:, s:s + 32] for s in (40, 80, 120, 160)])
    return out


def test_separator_overfits_one_paired_batch():
    torch.manual_seed(0)
    cfg = load_config(None, SMALL + ["train.alpha=0", "train.beta=0", "train.lr=0.003", "model.base_channels=8"])
    models = build_models(cfg)
    batch = _song_batch(cfg)
    first = float(train_step(models, lambda: batch, None, cfg)["loss_s"])
    for _ in range(300):
        last = float(train_step(models, lambda: batch, None, cfg)["loss_s"])
    assert last < first / 10, (first, last)
