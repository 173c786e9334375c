"""The inference protocol's tensors become /predict's rows, and every way a request can be wrong is named."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import numpy as np
import pytest

from keiko.serving.inference_protocol import (
    ModelGroup,
    ModelNotFound,
    ProtocolError,
    Tensor,
    TooManyRows,
    raw_scores,
    raw_tensor,
    rows_from_tensors,
)

KINDS = {"country": "str", "position": "int", "floor_price": "float", "event_time": "timestamp", "user_id": "int"}
REQUIRED = {"country", "position", "floor_price", "event_time"}


def tensors(n: int = 2, **replaced: Tensor) -> list[Tensor]:
    made = {
        "country": Tensor("country", "BYTES", [n], [b"JP", "US"][:n]),
        "position": Tensor("position", "INT64", [n, 1], [[1], [2]][:n]),  # the natural [n, 1] form
        "floor_price": Tensor("floor_price", "FP32", [n], np.array([0.5, 1.25][:n], dtype="<f4")),
        "event_time": Tensor("event_time", "BYTES", [n], ["2026-11-21T00:00:01", "2026-11-21T00:00:02"][:n]),
    }
    made.update(replaced)
    return [t for t in made.values() if t is not None]


def rows(given: list[Tensor], max_rows: int = 10) -> list[dict]:
    return rows_from_tensors(given, KINDS, REQUIRED, max_rows)


def test_tensors_become_rows_whatever_form_they_came_in():
    assert rows(tensors()) == [
        {"country": "JP", "position": 1, "floor_price": 0.5, "event_time": "2026-11-21T00:00:01"},
        {"country": "US", "position": 2, "floor_price": 1.25, "event_time": "2026-11-21T00:00:02"},
    ]
    with_user = rows([*tensors(1), Tensor("user_id", "INT64", [1], [42])])
    assert with_user[0]["user_id"] == 42  # an identifier: optional, kept for routing and the log


def test_the_raw_encoding_decodes_as_the_json_one():
    names = b"".join(struct.pack("<I", len(v)) + v for v in (b"JP", "日本".encode()))
    assert raw_tensor("country", "BYTES", [2], names).data == [b"JP", "日本".encode()]
    assert raw_tensor("position", "INT64", [2], np.array([3, 4], "<i8").tobytes()).data.tolist() == [3, 4]
    assert np.frombuffer(raw_scores([0.25, 0.5]), "<f8").tolist() == [0.25, 0.5]
    with pytest.raises(ProtocolError, match="runs past the end"):
        raw_tensor("country", "BYTES", [1], struct.pack("<I", 9) + b"JP")
    with pytest.raises(ProtocolError, match="not a whole number of INT64"):
        raw_tensor("position", "INT64", [1], b"\x01\x02\x03")


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (tensors(country=None), "missing input 'country'"),
        (
            tensors(position=Tensor("position", "BYTES", [2], [b"1", b"2"])),
            "'position' is BYTES: a int field takes INT64",
        ),
        (tensors(country=Tensor("country", "BYTES", [2, 2], [b"a"] * 4)), "shape [2, 2]: expected [n] or [n, 1]"),
        (tensors(country=Tensor("country", "BYTES", [3], [b"a"] * 2)), "holds 2 elements for shape [3]"),
        (tensors(country=Tensor("country", "BYTES", [1], [b"a"])), "input 'position' has 2 rows but 'country' has 1"),
        ([*tensors(), Tensor("colour", "BYTES", [2], [b"r", b"g"])], "unknown input 'colour'"),
        ([*tensors(), tensors()[0]], "input 'country' is given twice"),
        (tensors(country=Tensor("country", "BYTES", [2], [b"\xff", b"JP"])), "'country' element 0: not UTF-8"),
        ([Tensor(t.name, t.datatype, [0], []) for t in tensors()], "no rows"),
    ],
)
def test_a_wrong_request_is_refused_naming_what_is_wrong(given, message):
    with pytest.raises(ProtocolError) as refused:
        rows(given)
    assert message in str(refused.value)
    assert refused.value.status == 400


def test_more_rows_than_serving_max_rows_is_a_413():
    with pytest.raises(TooManyRows, match="at most 1 "):
        rows(tensors(), max_rows=1)


def server(name: str, schema: dict[str, str]) -> SimpleNamespace:
    return SimpleNamespace(name=name, schema=schema, limits=SimpleNamespace(max_rows=5), current=None, canary=None)


def test_a_group_names_hosted_models_and_takes_the_union_of_their_inputs():
    hosted = {"ctr": server("ctr", {"os": "str"}), "cvr": server("cvr", {"os": "str", "position": "int"})}
    group = ModelGroup.resolve("ctr+cvr", hosted)
    assert [s.name for s in group.servers] == ["ctr", "cvr"] and group.required == {"os", "position"}
    assert [o["name"] for o in group.metadata()["outputs"]] == ["ctr", "cvr"]
    assert [s.name for s in group.outputs(["cvr"])] == ["cvr"]
    with pytest.raises(ProtocolError, match="unknown output 'ads'"):
        group.outputs(["ads"])
    with pytest.raises(ProtocolError, match="output 'cvr' is asked for twice"):
        group.outputs(["cvr", "cvr"])
    with pytest.raises(ModelNotFound, match="model ads is not served here"):
        ModelGroup.resolve("ctr+ads", hosted)
    with pytest.raises(ModelNotFound, match="names a model twice"):
        ModelGroup.resolve("ctr+ctr", hosted)
    with pytest.raises(ProtocolError, match="a version names one model's"):
        group.version("3")
    clash = {"ctr": server("ctr", {"os": "str"}), "odd": server("odd", {"os": "int"})}
    with pytest.raises(ProtocolError, match="'os' is int for odd but str"):
        ModelGroup.resolve("ctr+odd", clash)
