import pytest

from semisep.pipeline.config import load_config
from semisep.pipeline.errors import SemisepError


def test_overrides_reach_nested_settings():
    cfg = load_config("configs/demo.yaml", ["train.alpha=0.01", "train.max_steps=7"])
    assert cfg.train.alpha == 0.01 and cfg.train.max_steps == 7
    assert cfg.train.beta == 0 and cfg.train.remix == 0.75  # the rest stays as the file says


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


@pytest.mark.parametrize("override, message", [
    ("train.alpha=-1", "train.alpha=-1.0: must be >= 0.0"),
    ("train=5", "train: a section, not a value"),
    ("data.dtype=int8", "data.dtype='int8': use one of 'float16', 'float32'"),
    ("train.max_steps=2.5", "train.max_steps=2.5: expected a whole number"),
    ("train.use_gpu=maybe", "train.use_gpu='maybe': expected true or false"),
    ("train.lr=[1,", "not valid YAML"),
    ("train", "write it as section.key=value"),
    ("train.remix=1.5", "train.remix=1.5: must be >= 0.0 and <= 0.99"),
    ("pseudo.student_dropout=1", "pseudo.student_dropout=1.0: must be >= 0.0 and <= 0.99"),
    ("pseudo.vocal_scales=[1, 0]", "pseudo.vocal_scales=[1, 0]: give a list of scales above 0 and at most 1"),
    ("pseudo.repet_weights=[0, 1.5]", "pseudo.repet_weights=[0, 1.5]: give a list of weights between 0 and 1"),
    ("data.task_resources={ingest: lots}", "data.task_resources.ingest='lots': expected a number"),
])
def test_values_are_checked_by_type_and_range_at_load_time(override, message):
    with pytest.raises(SemisepError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(None, [override])


def test_values_are_converted_to_their_settings_type():
    cfg = load_config(None, ["train.lr=1e-4", "train.max_steps=300.0", "data.task_resources={ingest: 1}"])
    assert cfg.train.lr == 0.0001 and isinstance(cfg.train.lr, float)  # YAML 1.1 reads 1e-4 as text
    assert cfg.train.max_steps == 300 and isinstance(cfg.train.max_steps, int)
    assert cfg.data.task_resources == {"ingest": 1.0}


def test_workers_are_a_number_or_an_elastic_range():
    assert load_config(None, ["train.num_workers=2", "train.batch_size=4"]).train.num_workers == 2
    t = load_config(None, ["train.num_workers=[1, 2]", "train.batch_size=4"]).train
    assert t.elastic and (t.min_workers, t.max_workers) == (1, 2)
    assert not load_config(None, ["train.num_workers=2", "train.batch_size=4"]).train.elastic


@pytest.mark.parametrize("overrides, message", [
    (["train.num_workers=[2, 1]"], r"train.num_workers=\[2, 1\]: expected \[min, max\] with 1 <= min <= max"),
    (["train.num_workers=[1, 2, 3]"], "expected a number, or"),
    (["train.num_workers=0"], "expected a number >= 1"),
    (["train.num_workers=[2, 4]", "train.batch_size=64"], r"batch_size=64 must divide by train.num_workers=\[2, 4\] "
                                                           r"\(every number of workers in the range\)"),
    (["train.num_workers=[1, 2]", "train.batch_size=4", "train.reader=memory"], "needs train.reader=stream"),
    (["train.shuffle_buffer=1"], "train.shuffle_buffer=1: must be >= 2"),
    (["pseudo.student=teacher", "pseudo.student_channels=32"], "a student fine-tuned from its teacher keeps its size"),
])
def test_elastic_settings_that_cannot_work_are_refused(overrides, message):
    with pytest.raises(SemisepError, match=message):
        load_config(None, overrides)


@pytest.mark.parametrize("frames", [48, 80])
def test_critic_layers_must_divide_the_excerpt_even_for_a_supervised_config(frames):
    """excerpt_frames 48 or 80 fits the 4-level U-Net (16) but not 5 critic layers (32): refused when
    the file is read, not at the first critic update of a sweep's first adversarial trial."""
    with pytest.raises(SemisepError, match=f"data.excerpt_frames={frames} must be a multiple of 2\\*\\*model.critic_layers=32"):
        load_config(None, [f"data.excerpt_frames={frames}", "model.critic_layers=5"])
    assert load_config(None, [f"data.excerpt_frames={frames}", "model.critic_layers=4"]).data.excerpt_frames == frames
