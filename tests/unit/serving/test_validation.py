"""/predict's request validation: string fields have length limits from model.yaml, errors name the row and
field, and the row cap is found without parsing the rows."""

import json

import pytest
from pydantic import ValidationError

from keiko.errors import ModelConfigError
from keiko.modeldef import Serving
from keiko.serving.validation import describe_errors, request_adapter, too_many_rows

SCHEMA = {"os": "str", "device_model": "str", "position": "int", "floor_price": "float"}
ROW = {"os": "ios", "device_model": "iphone-12", "position": 1, "floor_price": 0.5}


def limits(**fields) -> Serving:
    return Serving(port=8601, **fields)


def errors_of(adapter, rows) -> list[dict]:
    with pytest.raises(ValidationError) as caught:
        adapter.validate_json(json.dumps({"rows": rows}))
    return describe_errors(caught.value.errors())


def test_each_string_field_has_its_limit_and_an_error_names_row_and_field():
    adapter = request_adapter(SCHEMA, limits(max_string_length=8, max_string_length_per_field={"device_model": 12}))
    assert adapter.validate_json(json.dumps({"rows": [ROW, {**ROW, "device_model": "d" * 12}]}))["rows"][1] == {
        **ROW,
        "device_model": "d" * 12,
    }
    described = errors_of(adapter, [ROW, {**ROW, "device_model": "d" * 13}, {**ROW, "os": "o" * 9}])
    assert [(e["row"], e["field"], e["error"]) for e in described] == [
        (1, "device_model", "String should have at most 12 characters"),
        (2, "os", "String should have at most 8 characters"),
    ]


def test_a_long_refused_value_is_not_echoed_back_whole():
    adapter = request_adapter(SCHEMA, limits())
    (error,) = errors_of(adapter, [{**ROW, "device_model": "d" * 1_000_000}])
    assert error["field"] == "device_model"
    assert error["got"] == "d" * 80 + "... (1,000,000 characters)"


def test_a_per_field_limit_for_a_field_that_is_not_a_string_is_refused_naming_it():
    with pytest.raises(ModelConfigError, match="position, ssp is not a string field of INPUT_SCHEMA"):
        request_adapter(SCHEMA, limits(max_string_length_per_field={"position": 4, "ssp": 8}))


def test_too_many_rows_counts_the_rows_and_leaves_the_rest_to_validation():
    body = json.dumps({"rows": [ROW] * 11}).encode()
    assert too_many_rows(body, max_rows=10) == 11
    assert too_many_rows(body, max_rows=11) is None
    # Rows that would not even validate are counted all the same: the cap comes before validation.
    assert too_many_rows(json.dumps({"rows": [{}] * 5000}).encode(), max_rows=1000) == 5000
    assert too_many_rows(json.dumps({"rows": [1] * 5000}).encode(), max_rows=1000) == 5000
    # Commas inside strings are not rows.
    assert too_many_rows(json.dumps({"rows": [{**ROW, "os": "," * 5000}]}).encode(), max_rows=1000) is None
    # Not {"rows": [...]}: validation says what is wrong with it.
    assert too_many_rows(b"," * 5000, max_rows=1000) is None
    assert too_many_rows(json.dumps({"rows": "," * 5000}).encode(), max_rows=1000) is None


def test_the_row_cap_is_the_configured_one():
    adapter = request_adapter(SCHEMA, limits(max_rows=3))
    assert len(adapter.validate_json(json.dumps({"rows": [ROW] * 3}))["rows"]) == 3
    (error,) = errors_of(adapter, [ROW] * 4)
    assert error["field"] == "rows" and "at most 3 items" in error["error"]
