"""The extract's window facts, counted in Arrow without a pandas copy (keiko.gates.raw)."""

import datetime as dt

import pyarrow as pa
import pytest

from keiko.gates.raw import daily_volume, repeated


@pytest.mark.parametrize(
    "values, expected",
    [
        (pa.chunked_array([[3, 1, 2], [1, 3, 3]]), 3),  # repeats across chunks count too
        (pa.chunked_array([[1, None, None, 2]]), 0),  # nulls are not repeats of each other
        (pa.chunked_array([["a", "b"], ["a", None]]), 1),
        (pa.chunked_array([[dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 1)]]), 1),
        (pa.chunked_array([[]], pa.int64()), 0),
    ],
)
def test_repeated_counts_values_seen_before(values, expected):
    assert repeated(values) == expected


def test_daily_volume_counts_every_row_and_averages_the_labels_present():
    table = pa.table(
        {
            "dt": ["2026-11-02", "2026-11-01", "2026-11-01", None, "2026-11-01"],
            "clicked": pa.array([1, 0, 1, 1, None], pa.int32()),
        }
    )
    daily = daily_volume(table, "clicked")
    assert daily["dt"].tolist() == ["2026-11-01", "2026-11-02"]  # in day order, rows without a day left out
    assert daily["rows"].tolist() == [3, 1]  # a row without a label is still a row of its day
    assert daily["label_rate"].tolist() == [0.5, 1.0]
