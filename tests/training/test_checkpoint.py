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
