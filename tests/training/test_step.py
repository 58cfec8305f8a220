import torch

from pipeline.config import load_config
from training.losses import supervised_loss
from training.step import batches_from_arrays, build_models, train_step

SMALL = ["model.base_channels=4", "model.critic_channels=4", "model.critic_layers=3",
         "data.excerpt_frames=32", "train.batch_size=4"]


def _data(seed=0, n=8):
    g = torch.Generator().manual_seed(seed)
    mag_v = torch.rand(n, 256, 32, generator=g) * 2
    mag_a = torch.rand(n, 256, 32, generator=g) * 2
    return {"mixture": torch.log1p(mag_v + mag_a), "vocals": torch.log1p(mag_v), "accompaniment": torch.log1p(mag_a)}


def test_supervised_baseline_builds_and_steps_no_critic():
    cfg = load_config(None, SMALL + ["train.alpha=0", "train.beta=0"])
    models = build_models(cfg)
    assert models.critics == {} and models.opt_critics == {}
    data = _data()
    batch = {k: v[:4] for k, v in data.items()}
    unpaired_calls = []

    def next_unpaired():
        unpaired_calls.append(1)
        return batch

    expected = supervised_loss(models.separator(batch["mixture"]), batch["vocals"], batch["accompaniment"]).item()
    metrics = train_step(models, lambda: batch, next_unpaired, cfg)
    assert unpaired_calls == []
    assert set(metrics) == {"loss", "loss_s"}
    assert abs(metrics["loss"] - expected) < 1e-6 and metrics["loss"] == metrics["loss_s"]


def test_semi_supervised_step_updates_critics_and_adds_terms():
    cfg = load_config(None, SMALL + ["train.n_critic=3"])
    models = build_models(cfg)
    before = {k: [p.clone() for p in c.parameters()] for k, c in models.critics.items()}
    it = batches_from_arrays(_data(), 4, seed=0)
    metrics = train_step(models, lambda: next(it), lambda: next(it), cfg)
    assert {"loss_u", "loss_add", "wasserstein_vocals", "gradient_penalty_accompaniment"} <= set(metrics)
    expected = metrics["loss_s"] + cfg.train.alpha * metrics["loss_u"] + cfg.train.beta * metrics["loss_add"]
    assert abs(metrics["loss"] - expected) < 1e-5
    for k, c in models.critics.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[k], c.parameters()))


def _song_batch(cfg):
    """Four excerpts of a generated song as the model sees them."""
    from pipeline.audio import resample, to_mono
    from pipeline.demo_corpus import render_song
    from pipeline.spectrogram import features

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
    first = train_step(models, lambda: batch, None, cfg)["loss_s"]
    for _ in range(300):
        last = train_step(models, lambda: batch, None, cfg)["loss_s"]
    assert last < first / 10, (first, last)
