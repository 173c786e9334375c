import json

import pytest

from conftest import DS
from keiko.modeldef import Thresholds
from keiko.stages.evaluate import decide

THRESHOLDS = Thresholds(min_auc=0.6, max_logloss=0.2, calibration_tolerance=0.1, max_regression=0.002)
GOOD = {"logloss": 0.12, "auc": 0.7, "calibration": 1.01}


def test_no_production_means_absolute_thresholds_alone_decide():
    decision = decide(GOOD, None, THRESHOLDS)
    assert decision["deployable"] and not decision["production_exists"]
    assert "no production model yet: absolute thresholds alone decide" in decision["reason"]


@pytest.mark.parametrize(
    ("change", "failed"),
    [
        ({"auc": 0.55}, "min_auc"),
        ({"logloss": 0.25}, "max_logloss"),
        ({"calibration": 1.2}, "calibration"),
        ({"auc": float("nan")}, "min_auc"),  # a missing metric fails; it never passes by accident
        ({"logloss": float("nan")}, "max_logloss"),
    ],
)
def test_absolute_thresholds_block_deployment(change, failed):
    decision = decide({**GOOD, **change}, None, THRESHOLDS)
    assert not decision["deployable"]
    assert [c["check"] for c in decision["checks"] if not c["passed"]] == [failed]
    assert decision["reason"].startswith(failed)


@pytest.mark.parametrize(("candidate", "allowed"), [(0.1200, True), (0.1202, True), (0.1203, False)])
def test_candidate_must_not_be_worse_than_production_beyond_the_tolerance(candidate, allowed):
    decision = decide({**GOOD, "logloss": candidate}, {"logloss": 0.1200, "version": 3}, THRESHOLDS)
    assert decision["deployable"] is allowed
    assert f"candidate logloss {candidate:.5f} vs production v3 0.12000" in decision["reason"]


def test_evaluation_reports_metrics_and_the_bayes_optimal_ceiling(pipeline_home):
    evaluation = json.loads((pipeline_home / "artifacts" / "ctr" / DS / "evaluation.json").read_text())
    candidate, bayes = evaluation["candidate"], evaluation["bayes_optimal_logloss"]
    assert evaluation["production"] is None
    assert 0 < bayes < candidate["logloss"]  # nobody beats the truth on average
    assert candidate["logloss"] < 1.1 * bayes
    assert candidate["auc"] > 0.6
    assert set(evaluation["slices"]) == {"os", "position"}
    assert sum(s["rows"] for s in evaluation["slices"]["os"].values()) == evaluation["test_rows"]
