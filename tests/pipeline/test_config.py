import pytest

from pipeline.config import load_config
from pipeline.errors import SemisepError


def test_overrides_reach_nested_settings():
    cfg = load_config("configs/demo.yaml", ["train.alpha=0", "train.max_steps=7"])
    assert cfg.train.alpha == 0 and cfg.train.max_steps == 7
    assert cfg.train.semi_supervised  # beta is still 0.001


def test_paper_config_holds_the_papers_settings():
    cfg = load_config("configs/paper.yaml")
    t = cfg.transform
    assert (t.sample_rate, t.n_fft, t.hop_length) == (8192, 512, 256)
    tr = cfg.train
    assert (tr.batch_size, tr.lr, tr.alpha, tr.beta, tr.n_critic, tr.gp_lambda) == (64, 5e-5, 0.001, 0.001, 5, 10.0)


def test_unknown_setting_is_named():
    with pytest.raises(SemisepError, match="unknown setting 'alpah'"):
        load_config(None, ["train.alpah=1"])


def test_excerpt_must_fit_the_unet():
    with pytest.raises(SemisepError, match="excerpt_frames=30"):
        load_config(None, ["data.excerpt_frames=30"])
