"""museval evaluation of trained tiny models, inside the test suite (real museval, MLflow)."""

import json

import pytest

from semisep.evaluation.evaluate import evaluate
from semisep.pipeline.errors import SemisepError

pytestmark = pytest.mark.slow


def test_evaluate_scores_models_and_bounds(trained, tmp_path):
    from mlflow import MlflowClient

    cfg, results = trained
    res = evaluate(cfg, {k: r.model_dir for k, r in results.items()}, str(tmp_path / "eval"),
                   run_ids={k: r.run_id for k, r in results.items()}, progress=False, excerpts_by="semi-supervised")
    sdr = res.summary[(res.summary.metric == "SDR")].set_index(["method", "target"])
    assert set(sdr.index.get_level_values(0)) == {"supervised", "semi-supervised", "oracle_irm", "mixture", "repet_sim"}
    assert (sdr["tracks"] == 2).all()
    vocals = sdr.xs("vocals", level="target")["median"]
    assert vocals["oracle_irm"] > vocals["mixture"] + 5
    # the classical reference separates something: better than the mixture, below the oracle
    assert vocals["mixture"] < vocals["repet_sim"] < vocals["oracle_irm"]
    assert "| supervised |" in res.table and "| semi-supervised |" in res.table and "| repet_sim |" in res.table
    track_json = json.loads(next((tmp_path / "eval" / "supervised" / "test").glob("*.json")).read_text())
    assert {t["name"] for t in track_json["targets"]} == {"vocals", "accompaniment"}
    assert {"SDR", "SIR", "SAR", "ISR"} <= set(track_json["targets"][0]["frames"][0]["metrics"])
    assert (tmp_path / "eval" / "SDR.png").stat().st_size > 5000
    run = MlflowClient(cfg.tracking_uri).get_run(results["supervised"].run_id)
    assert "test_vocals_SDR_median" in run.data.metrics
    # the excerpts are those of the model named, not of the first one listed
    page = (tmp_path / "eval" / "report.html").read_text()
    assert "median vocal SDR of semi-supervised" in page and "median vocal SDR of supervised" not in page
    with pytest.raises(SemisepError, match="excerpts_by='remix' names none of the models evaluated"):
        evaluate(cfg, {k: r.model_dir for k, r in results.items()}, str(tmp_path / "again"), excerpts_by="remix")
    assert not (tmp_path / "again").exists()
