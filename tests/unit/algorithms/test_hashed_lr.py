import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier

from keiko.algorithms import get_algorithm, load_model_bytes
from keiko.algorithms.hashed_lr import HashedLRModel, _one_hot
from keiko.errors import ModelConfigError
from keiko.metrics import auc, logloss

BITS = 12


def make_data(n: int, seed: int):
    """Two categorical slots with known effects: learnable, with a known best logloss."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 50, n), rng.integers(0, 20, n)
    effect_a, effect_b = np.random.default_rng(99).normal(0, 1.0, 50), np.random.default_rng(98).normal(0, 0.7, 20)
    p = 1 / (1 + np.exp(-(-2.5 + effect_a[a] + effect_b[b])))
    y = (rng.random(n) < p).astype(np.float64)
    features = {"a": a.astype(np.int32), "b": (b + 100).astype(np.int32)}
    return features, y, p


def fit(**params):
    train, y_train, _ = make_data(40_000, 0)
    valid, y_valid, _ = make_data(10_000, 1)
    algorithm = get_algorithm("hashed_logistic_regression")
    return algorithm.fit(
        train, y_train, valid, y_valid, params={"max_epochs": 6, **params}, feature_params={"hash_bits": BITS},
        progress=lambda _m: None,
    )  # fmt: skip


def test_training_lowers_the_loss_and_learns_signal():
    model, log = fit()
    test, y_test, p_true = make_data(20_000, 2)
    losses = [e["valid_logloss"] for e in log.epochs]
    assert losses[0] > min(losses)  # the loss went down
    p = model.predict(test)
    constant = logloss(y_test, np.full_like(y_test, y_test.mean()))
    assert logloss(y_test, p) < 0.97 * constant
    assert auc(y_test, p) > 0.65  # as in the seed's test_train: a clear margin over 0.5
    assert logloss(y_test, p) < 1.03 * logloss(y_test, p_true)  # near the best possible
    assert 0.9 < p.sum() / y_test.sum() < 1.1


def test_early_stopping_records_why_it_stopped():
    _, log = fit(max_epochs=30, patience=1, min_relative_improvement=1e-2)
    assert len(log.epochs) < 30
    assert "did not improve" in log.stopped_because
    assert 1 <= log.best_epoch <= len(log.epochs)


def test_weight_lookup_equals_scikit_learn_predict_proba():
    model, _ = fit()
    test, _, _ = make_data(500, 3)
    reference = SGDClassifier(loss="log_loss")
    reference.coef_ = model.weights.reshape(1, -1)
    reference.intercept_ = np.array([model.bias])
    reference.classes_ = np.array([0, 1])
    expected = reference.predict_proba(_one_hot(test, model.slots, 2**BITS))[:, 1]
    np.testing.assert_allclose(model.predict(test), expected, rtol=0, atol=1e-12)


def test_saved_bytes_are_deterministic_and_round_trip():
    model, _ = fit()
    data = model.to_bytes()
    assert data == HashedLRModel.from_bytes(data).to_bytes()
    loaded = load_model_bytes(data)
    test, _, _ = make_data(100, 4)
    np.testing.assert_array_equal(loaded.predict(test), model.predict(test))
    assert loaded.describe()["feature_params"] == {"hash_bits": BITS}


def test_loading_refuses_pickles_and_foreign_files():
    import io
    import pickle

    buffer = io.BytesIO()
    np.savez(buffer, weights=np.array([object()], dtype=object), meta=np.zeros(1))
    with pytest.raises(ValueError):
        load_model_bytes(buffer.getvalue())
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do, as long as nothing is unpickled
        load_model_bytes(pickle.dumps({"weights": [1.0]}))


def test_unknown_algorithm_is_a_config_error():
    with pytest.raises(ModelConfigError, match="unknown algorithm 'xgboost'"):
        get_algorithm("xgboost")
