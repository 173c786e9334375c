import numpy as np
import pytest

from keiko.algorithms import get_algorithm, load_model_bytes
from keiko.algorithms.catboost_classifier import CatBoostModel, split_columns
from keiko.metrics import logloss

PARAMS = {"iterations": 200, "learning_rate": 0.1, "depth": 3, "patience": 20, "seed": 0, "thread_count": 2}


def make_data(n: int, seed: int):
    """A categorical field with known effects, a second one without, and a numeric one: a known best logloss."""
    rng = np.random.default_rng(seed)
    app, os_ = rng.integers(0, 40, n), rng.integers(0, 2, n)
    price = rng.random(n)
    effect = np.random.default_rng(99).normal(0, 0.8, 40)
    p = 1 / (1 + np.exp(-(-2.0 + effect[app] + 0.5 * price)))
    y = (rng.random(n) < p).astype(np.float64)
    features = {
        "app_id": app.astype(str).astype(object),
        "os": np.where(os_ == 1, "ios", "android").astype(object),
        "price": price,
    }
    return features, y, p


def fit(**params):
    train, y_train, _ = make_data(20_000, 0)
    valid, y_valid, _ = make_data(5_000, 1)
    return get_algorithm("catboost").fit(
        train, y_train, valid, y_valid, params={**PARAMS, **params}, feature_params={}, progress=lambda _m: None
    )


@pytest.fixture(scope="module")
def trained():
    return fit()


def test_string_columns_are_categorical_and_the_model_learns_them(trained):
    model, log = trained
    assert split_columns(make_data(10, 0)[0]) == (["price"], ["app_id", "os"])
    assert (model.numeric, model.categorical) == (["price"], ["app_id", "os"])
    test, y_test, p_true = make_data(20_000, 2)
    p = model.predict(test)
    constant = logloss(y_test, np.full_like(y_test, y_test.mean()))
    assert logloss(y_test, p) < constant
    assert logloss(y_test, p) < logloss(y_test, p_true) * 1.03  # within 3% of the Bayes-optimal logloss
    assert np.all((p > 0) & (p < 1))
    losses = [e["valid_logloss"] for e in log.epochs]
    assert losses[0] > min(losses) and log.best_epoch >= 1 and log.stopped_because


def test_same_training_same_bytes_and_a_round_trip_predicts_the_same(trained):
    model, _ = trained
    data = model.to_bytes()
    assert data.startswith(b"CBM1")  # CatBoost's own format, no pickle
    again, _ = fit()
    assert again.to_bytes() == data  # the random model_guid and finish time are pinned
    loaded = load_model_bytes(data)
    assert isinstance(loaded, CatBoostModel) and loaded.artifact_format == "cbm"
    test, _, _ = make_data(2_000, 3)
    np.testing.assert_array_equal(loaded.predict(test), model.predict(test))
    one_row = {name: values[:1] for name, values in test.items()}
    assert loaded.predict(one_row)[0] == model.predict(test)[0]  # one thread or many: the same answer
    assert loaded.describe()["trees"] == model.booster.tree_count_


def test_loading_refuses_foreign_models_and_garbage(trained, tmp_path):
    model, _ = trained
    with pytest.raises(ValueError, match="not a CatBoost model"):
        CatBoostModel.from_bytes(b"CBM1" + b"\0" * 64)
    foreign = model.booster.copy()
    del foreign.get_metadata()["keiko"]
    foreign.save_model(str(tmp_path / "foreign.cbm"))
    with pytest.raises(ValueError, match="without keiko's metadata"):
        load_model_bytes((tmp_path / "foreign.cbm").read_bytes())
    with pytest.raises(ValueError, match="not a model artifact of any known algorithm"):
        load_model_bytes(b"\x80\x04pickle")


def test_unknown_catboost_parameters_fail_with_catboost_naming_them():
    with pytest.raises(Exception, match="depht"):
        fit(depht=3)
