import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from keiko.metrics import auc, calibration, logloss


def test_metrics_match_scikit_learn_including_ties():
    rng = np.random.default_rng(0)
    p = np.round(rng.random(5_000), 2)  # many ties
    y = (rng.random(5_000) < p).astype(float)
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert logloss(y, p) == pytest.approx(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15)), rel=1e-9)


def test_calibration_is_sum_of_predictions_over_positives():
    assert calibration(np.array([1, 0, 1, 0]), np.array([0.5, 0.5, 0.25, 0.25])) == pytest.approx(0.75)


def test_auc_is_undefined_with_one_class():
    assert np.isnan(auc(np.zeros(3), np.array([0.1, 0.2, 0.3])))
