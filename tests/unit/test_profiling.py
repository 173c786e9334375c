"""The training profile lists every value a string or int column took, when there are few enough to list."""

import pyarrow as pa
import pytest

from keiko import profiling
from keiko.columns import from_arrow


@pytest.mark.parametrize("kind", ["str", "int"])
def test_seen_values_are_listed_only_up_to_the_limit(monkeypatch, kind):
    monkeypatch.setattr(profiling, "MAX_SEEN_VALUES", 2)
    values = ["a", "b", "c"] if kind == "str" else [1, 2, 3]
    array = pa.array(values).dictionary_encode() if kind == "str" else pa.array(values, pa.int64())
    column = from_arrow(pa.table({"x": array}), {"x": kind})["x"]
    assert "seen" not in profiling.profile_column(column, kind)
    assert profiling.profile_column(column[:2], kind)["seen"] == values[:2]


def test_numbers_keep_their_training_range():
    ints = from_arrow(pa.table({"x": pa.array([7, 3, 5], pa.int64())}), {"x": "int"})["x"]
    floats = from_arrow(pa.table({"x": pa.array([0.5, float("nan"), 2.5])}), {"x": "float"})["x"]
    assert {k: profiling.profile_column(ints, "int")[k] for k in ("min", "max")} == {"min": 3, "max": 7}
    assert {k: profiling.profile_column(floats, "float")[k] for k in ("min", "max")} == {"min": 0.5, "max": 2.5}
