import json

from conftest import DS


def test_evaluation_reports_metrics_and_the_bayes_optimal_ceiling(pipeline_home):
    evaluation = json.loads((pipeline_home / "artifacts" / "ctr" / DS / "evaluation.json").read_text())
    candidate, bayes = evaluation["candidate"], evaluation["bayes_optimal_logloss"]
    assert evaluation["production"] is None
    assert 0 < bayes < candidate["logloss"]  # nobody beats the truth on average
    assert candidate["logloss"] < 1.1 * bayes
    assert candidate["auc"] > 0.6
    assert set(evaluation["slices"]) == {"os", "position"}
    assert sum(s["rows"] for s in evaluation["slices"]["os"].values()) == evaluation["test_rows"]
