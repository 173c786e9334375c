import json

import pytest

from conftest import DS
from keiko.stages.evaluate import compare


def test_no_production_means_absolute_judgement_only():
    verdict = compare({"logloss": 0.12}, None, 0.002)
    assert verdict["candidate_not_worse"] and verdict["reason"] == "no production model yet"


@pytest.mark.parametrize(("candidate", "allowed"), [(0.1200, True), (0.1202, True), (0.1203, False)])
def test_candidate_must_not_be_worse_than_production_beyond_the_tolerance(candidate, allowed):
    verdict = compare({"logloss": candidate}, {"logloss": 0.1200, "version": 3}, 0.002)
    assert verdict["candidate_not_worse"] is allowed
    assert "candidate logloss" in verdict["reason"] and "production" in verdict["reason"]


def test_evaluation_reports_metrics_and_the_bayes_optimal_ceiling(pipeline_home):
    evaluation = json.loads((pipeline_home / "artifacts" / "ctr" / DS / "evaluation.json").read_text())
    candidate, bayes = evaluation["candidate"], evaluation["bayes_optimal_logloss"]
    assert evaluation["production"] is None
    assert 0 < bayes < candidate["logloss"]  # nobody beats the truth on average
    assert candidate["logloss"] < 1.1 * bayes
    assert candidate["auc"] > 0.6
    assert set(evaluation["slices"]) == {"os", "position"}
    assert sum(s["rows"] for s in evaluation["slices"]["os"].values()) == evaluation["test_rows"]
