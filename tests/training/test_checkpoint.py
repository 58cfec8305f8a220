"""Checkpoints and model files: resume finds the run of exactly the name asked for."""

from semisep.training.train import _latest_checkpoint


def test_resume_matches_the_run_name_exactly(tmp_path):
    for run, step in (("semi-supervised-20261127-080000", 40), ("semi-20261127-070000", 20),
                      ("semi-20261127-090000", 10), ("semi-x-20261127-100000", 99)):
        folder = tmp_path / run / f"step_{step:07d}"
        folder.mkdir(parents=True)
        (folder / "state.pt").write_bytes(b"")
    # the newest run called exactly "semi" (not semi-supervised, not semi-x), its latest step
    assert _latest_checkpoint(str(tmp_path), "semi") == str(tmp_path / "semi-20261127-090000" / "step_0000010")
    assert _latest_checkpoint(str(tmp_path), "semi-supervised").endswith("semi-supervised-20261127-080000/step_0000040")
    assert _latest_checkpoint(str(tmp_path), "sem") is None


def test_init_model_starts_training_from_a_saved_separator_of_the_same_architecture(tmp_path):
    """train.init_model: the separator starts with the saved weights (fine-tuning), not fresh ones
    of the seed; a model of another architecture is refused naming both."""
    import pytest
    import torch

    from semisep.pipeline.config import load_config
    from semisep.pipeline.errors import SemisepError
    from semisep.training.checkpoint import save_model
    from semisep.training.step import build_models

    cfg = load_config(None, ["model.depth=2", "model.base_channels=4", "data.excerpt_frames=32"])
    torch.manual_seed(1)
    teacher = build_models(cfg).separator
    save_model(tmp_path / "teacher", teacher.state_dict(), cfg, {})
    torch.manual_seed(2)
    fresh = build_models(cfg).separator
    cfg.train.init_model = str(tmp_path / "teacher")
    torch.manual_seed(2)
    started = build_models(cfg).separator
    for name, value in started.state_dict().items():
        assert torch.equal(value, teacher.state_dict()[name])
    assert any(not torch.equal(v, fresh.state_dict()[k]) for k, v in started.state_dict().items())
    cfg.model.base_channels = 8
    with pytest.raises(SemisepError, match=r"train.init_model .*teacher: its separator has .*'base_channels': 4.*"
                                           r"base_channels=8; fine-tuning needs the same architecture"):
        build_models(cfg)
