"""Per-row scoring from cached slot weights answers exactly what the vectorised feature code answers."""

import dataclasses
import json
import types

import numpy as np
import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

from conftest import DS
from keiko.modeldef import load_model
from keiko.rollout import json_rows
from keiko.serving.app import create_app
from keiko.serving.model_server import ROW_PATH_MAX_ROWS
from keiko.serving.row_scorer import RowScorer
from keiko.serving.validation import request_adapter

pytestmark = pytest.mark.server

CTR = load_model("ctr")
FEATURES = CTR.features


@pytest.fixture
def app(run_home):
    app = create_app("ctr", load_production=False)
    app.state.server.load(1)
    return app


@pytest.fixture
def golden(run_home):
    return pq.read_table(run_home / "artifacts" / "ctr" / DS / "golden.parquet")


def request_rows(golden) -> list[dict]:
    """The golden rows as a client sends them (JSON, ISO timestamps)."""
    return json_rows(golden.drop_columns(["impression_id", "expected_prediction"]))


def parsed(rows: list[dict]) -> list[dict]:
    """`rows` after the server's own request validation (ISO strings become datetimes, ...)."""
    return request_adapter(FEATURES.INPUT_SCHEMA, CTR.config.serving).validate_json(json.dumps({"rows": rows}))["rows"]


def unseen(rows: list[dict]) -> list[dict]:
    """Variants of `rows` with values training never saw, and the edge cases of the derived features."""
    base = rows[:4]
    return [
        {**base[0], "app_id": 10**12 + 7},
        {**base[1], "app_id": -1, "device_model": "brand-new-phone-2027 (ünïcode)"},
        {**base[2], "device_model": "", "floor_price": 0},
        {**base[3], "floor_price": 0.0, "event_time": "2026-11-21T23:30:00.123456+09:00"},
        {**base[0], "event_time": "2026-11-21T00:15:00-05:30", "floor_price": 1e9},
        {**base[1], "event_time": "1969-12-31T23:59:59.999999", "floor_price": -3.5},
        {**base[2], "os": "TempleOS", "country": "XX", "advertiser_category": "never-seen", "position": 99},
    ]


def test_row_scores_equal_the_golden_offline_predictions_also_from_the_cache(app, golden):
    scorer = app.state.server.current.row_scorer
    assert isinstance(scorer.__self__, RowScorer)
    rows = parsed(request_rows(golden))
    expected = golden["expected_prediction"].to_numpy()
    assert len(rows) == len(expected) == 500

    assert scorer.__self__.arrays is False  # ctr's derived() runs on the row's scalars
    first = [scorer(row) for row in rows]
    misses = [weight.cache_info().misses for _, weight in scorer.__self__.slots]
    second = [scorer(row) for row in rows]

    np.testing.assert_allclose(first, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(second, expected, rtol=0, atol=1e-12)
    assert first == second
    # The second pass was answered from the caches: no slot computed a weight again.
    assert [weight.cache_info().misses for _, weight in scorer.__self__.slots] == misses


def test_row_scores_equal_the_vectorised_path_for_values_never_seen(app, golden):
    server = app.state.server
    loaded = server.current
    rows = parsed(unseen(request_rows(golden)))
    vectorised = server.score_vectorised(loaded, rows)  # all rows in one batch: multi-value columns
    for pass_ in range(2):  # misses, then cache hits
        row_by_row = [loaded.row_scorer(row) for row in rows]
        np.testing.assert_allclose(row_by_row, vectorised, rtol=0, atol=1e-12, err_msg=f"pass {pass_}")
    for row, score in zip(rows, vectorised, strict=True):  # and each row alone through the vectorised path
        assert abs(server.score_vectorised(loaded, [row])[0] - score) <= 1e-12


def test_a_derived_that_needs_arrays_gets_one_element_columns_and_the_same_scores(app, golden):
    def needs_arrays(columns):
        assert len(columns["event_time"]) == 1  # a numpy scalar has no len()
        return FEATURES.derived(columns)

    module = types.ModuleType("needs_arrays")
    module.INPUT_SCHEMA, module.SLOTS, module.derived = FEATURES.INPUT_SCHEMA, FEATURES.SLOTS, needs_arrays
    scorer = RowScorer(module, app.state.server.current.model)
    assert scorer.arrays is True
    rows = parsed(request_rows(golden))
    np.testing.assert_allclose([scorer.score(row) for row in rows], golden["expected_prediction"], rtol=0, atol=1e-12)


def test_a_tz_aware_event_time_scores_as_the_same_instant_in_naive_utc(app, golden):
    scorer = app.state.server.current.row_scorer
    row = request_rows(golden)[0]
    tokyo, utc, local_clock = parsed(
        [
            {**row, "event_time": "2026-11-21T23:30:00+09:00"},
            {**row, "event_time": "2026-11-21T14:30:00"},  # naive timestamps are UTC
            {**row, "event_time": "2026-11-21T23:30:00"},
        ]
    )
    assert scorer(tokyo) == scorer(utc)
    vectorised = app.state.server.score_vectorised(app.state.server.current, [tokyo, utc, local_clock])
    assert vectorised[0] == vectorised[1]
    assert scorer(local_clock) != scorer(utc)  # the hour is a feature: 23h is not 14h


def test_row_scorer_only_for_a_feature_module_with_slots(app):
    model = app.state.server.current.model
    scorer = model.row_scorer(FEATURES)
    assert isinstance(scorer.__self__, RowScorer)
    no_slots = types.ModuleType("no_slots")
    no_slots.INPUT_SCHEMA, no_slots.derived = FEATURES.INPUT_SCHEMA, FEATURES.derived
    assert model.row_scorer(no_slots) is None
    no_derived = types.ModuleType("no_derived")
    no_derived.INPUT_SCHEMA, no_derived.SLOTS = FEATURES.INPUT_SCHEMA, FEATURES.SLOTS
    assert model.row_scorer(no_derived) is None


def test_without_a_row_scorer_small_requests_take_the_vectorised_path(app, golden):
    server = app.state.server
    rows = parsed(request_rows(golden)[:3])
    without = dataclasses.replace(server.current, row_scorer=None)
    np.testing.assert_allclose(
        server.score(without, rows), golden["expected_prediction"].to_numpy()[:3], rtol=0, atol=1e-12
    )


def test_one_row_requests_answer_what_a_large_vectorised_request_answers(app, golden, monkeypatch):
    server = app.state.server
    batches = []
    score_vectorised = server.score_vectorised

    def counting(loaded, rows):
        batches.append(len(rows))
        return score_vectorised(loaded, rows)

    monkeypatch.setattr(server, "score_vectorised", counting)
    golden_rows = request_rows(golden)
    rows = unseen(golden_rows) + golden_rows[: ROW_PATH_MAX_ROWS + 1 - len(unseen(golden_rows))]
    assert len(rows) == ROW_PATH_MAX_ROWS + 1
    with TestClient(app) as client:
        large = client.post("/predict", json={"rows": rows})
        assert large.status_code == 200 and batches == [ROW_PATH_MAX_ROWS + 1]
        largest_row_path = client.post("/predict", json={"rows": rows[:ROW_PATH_MAX_ROWS]})
        singles = [client.post("/predict", json={"rows": [row]}) for row in rows]
    assert batches == [ROW_PATH_MAX_ROWS + 1]  # everything else was scored row by row
    assert {answer.json()["model_version"] for answer in [large, largest_row_path, *singles]} == {1}
    predictions = large.json()["predictions"]
    np.testing.assert_allclose(largest_row_path.json()["predictions"], predictions[:-1], rtol=0, atol=1e-12)
    np.testing.assert_allclose([s.json()["predictions"][0] for s in singles], predictions, rtol=0, atol=1e-12)
    expected = golden["expected_prediction"].to_numpy()[: ROW_PATH_MAX_ROWS + 1 - len(unseen(golden_rows))]
    np.testing.assert_allclose(predictions[len(unseen(golden_rows)) :], expected, rtol=0, atol=1e-12)
