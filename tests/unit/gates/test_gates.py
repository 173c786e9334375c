"""Each gate passes on clean data and stops on the corruption it exists for, naming the expectation."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import DS
from keiko.cli import main
from keiko.config import settings
from keiko.process import EXIT_GATE_FAILED, EXIT_USER_ERROR
from keiko.registry import open_registry


def day_dir(home):
    return home / "artifacts" / "ctr" / DS


def gate(suite: str) -> int:
    return main(["gate", suite, "--model", "ctr", "--ds", DS])


def rewrite_raw(home, change):
    path = day_dir(home) / "raw.parquet"
    pq.write_table(change(pq.read_table(path)), path)


def set_column(table: pa.Table, name: str, values) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def test_clean_run_passes_every_gate_records_its_phases_and_renders_no_data_docs(run_home):
    for suite in ("raw", "features", "training", "evaluation"):
        result = json.loads((day_dir(run_home) / "gates" / f"{suite}.json").read_text())
        assert result["success"] and result["failed"] == 0 and result["expectations"] >= 6, suite
        assert {"start", "import keiko", "read", "validate", "write", "own work"} <= set(result["phases"]), suite
        assert result["data_docs"] == "" and not (day_dir(run_home) / "gates" / suite / "data_docs").exists()
    blessing = json.loads((day_dir(run_home) / "blessing.json").read_text())
    assert blessing["blessed"] and "no production model: absolute only" in blessing["reasons"][0]


RAW_CORRUPTIONS = {
    "missing column": (lambda t: t.drop_columns(["country"]), "column_to_exist", "country"),
    "wrong type": (
        lambda t: set_column(t, "position", pc.cast(t["position"], pa.string())),
        "in_type_list",
        "position",
    ),
    "null key": (
        lambda t: set_column(
            t, "impression_id", pa.array([None] * 10 + t["impression_id"].to_pylist()[10:], pa.int64())
        ),
        "be_between",  # the first day's rows: the `window` suite counts nulls in every row of the extract
        "impression_id nulls",
    ),
    "duplicated rows": (lambda t: pa.concat_tables([t, t.slice(0, 500)]), "be_between", "impression_id repeated"),
    "label outside 0/1": (
        lambda t: set_column(t, "clicked", pc.if_else(pc.equal(t["dt"], DS), 2, t["clicked"])),
        "be_between",
        "clicked outside {0, 1}",
    ),
    "label collapse": (
        lambda t: set_column(t, "clicked", pa.array(np.zeros(t.num_rows, dtype=np.int64))),
        "be_between",
        "label_rate",
    ),
    "missing day": (lambda t: t.filter(pc.not_equal(t["dt"], "2026-11-18")), "distinct_values_to_equal_set", "dt"),
    "volume drop to 30%": (
        # Keep every row but 70% of 2026-11-19's: that day's volume shrinks unnoticed by row-level checks.
        lambda t: t.filter(pc.or_(pc.not_equal(t["dt"], "2026-11-19"), pa.array(np.arange(t.num_rows) % 10 < 3))),
        "be_between",
        "rows",
    ),
}


@pytest.mark.parametrize("corruption", RAW_CORRUPTIONS)
def test_gate_raw_stops_bad_data(run_home, corruption, capsys):
    change, expectation, column = RAW_CORRUPTIONS[corruption]
    rewrite_raw(run_home, change)
    capsys.readouterr()
    assert gate("raw") == EXIT_GATE_FAILED
    captured = capsys.readouterr()
    table = captured.out[captured.out.index("gate_raw FAILED") :]
    assert "suite" in table and "observed" in table and "expected" in table
    assert any(expectation in line and column in line for line in table.splitlines()), table
    assert captured.err.startswith("keiko: gate_raw failed")
    result = json.loads((day_dir(run_home) / "gates" / "raw.json").read_text())
    assert not result["success"]
    assert result["data_docs"].endswith("/gates/raw/data_docs/index.html") and "data docs" in result["phases"]
    assert (day_dir(run_home) / "gates" / "raw" / "data_docs" / "index.html").is_file()
    assert f"Data Docs: {result['data_docs']}" in table


def test_a_passing_rerun_removes_the_failed_runs_data_docs(run_home):
    raw = day_dir(run_home) / "raw.parquet"
    clean = raw.read_bytes()
    rewrite_raw(run_home, RAW_CORRUPTIONS["null key"][0])
    assert gate("raw") == EXIT_GATE_FAILED
    docs = day_dir(run_home) / "gates" / "raw" / "data_docs"
    assert (docs / "index.html").is_file()
    raw.write_bytes(clean)
    assert gate("raw") == 0
    assert not docs.exists()
    assert json.loads((day_dir(run_home) / "gates" / "raw.json").read_text())["data_docs"] == ""


@pytest.mark.parametrize(
    "change",
    [
        lambda ids: pa.array(np.full(len(ids), 1000)),  # every impression from one app
        lambda ids: pc.add(ids, 100_000),  # ids re-encoded upstream: none of them known any more
    ],
    ids=["one app", "re-encoded ids"],
)
def test_gate_features_catches_drift(run_home, change):
    test_day = pc.equal(pq.read_table(day_dir(run_home) / "raw.parquet")["dt"], DS)
    rewrite_raw(run_home, lambda t: set_column(t, "app_id", pc.if_else(test_day, change(t["app_id"]), t["app_id"])))
    assert gate("features") == EXIT_GATE_FAILED
    result = json.loads((day_dir(run_home) / "gates" / "features.json").read_text())
    failed = [o for o in result["outcomes"] if not o["passed"]]
    assert [(o["suite"], o["column"]) for o in failed] == [("drift", "app_id")]


def test_volume_reference_includes_earlier_passing_runs(run_home):
    import datetime as dt

    from keiko.gates.raw import earlier_daily_counts
    from keiko.modeldef import load_model
    from keiko.stages.context import StageContext

    # A window later, the passing gate_raw of DS is history: its daily counts feed the median.
    recorded = json.loads((day_dir(run_home) / "gates" / "raw.json").read_text())["daily_rows"]
    window_days = load_model("ctr").config.window_days
    later = StageContext.create("ctr", dt.date.fromisoformat(DS) + dt.timedelta(days=window_days))
    assert earlier_daily_counts(later) == recorded and len(recorded) == window_days
    assert earlier_daily_counts(StageContext.create("ctr", dt.date.fromisoformat(DS))) == {}


def test_gate_training_enforces_the_artifact_budget(run_home, project_copy):
    path = project_copy / "include" / "models" / "ctr" / "model.yaml"
    path.write_text(path.read_text().replace("max_artifact_mb: 64", "max_artifact_mb: 0.01"))
    assert gate("training") == EXIT_GATE_FAILED
    result = json.loads((day_dir(run_home) / "gates" / "training.json").read_text())
    assert [o["column"] for o in result["outcomes"] if not o["passed"]] == ["artifact_mb"]


def test_a_nan_metric_is_never_blessed(run_home):
    path = day_dir(run_home) / "evaluation.json"
    evaluation = json.loads(path.read_text())
    evaluation["candidate"]["auc"] = float("nan")
    path.write_text(json.dumps(evaluation))
    assert gate("evaluation") == EXIT_GATE_FAILED
    blessing = json.loads((day_dir(run_home) / "blessing.json").read_text())
    assert blessing["blessed"] is False and any(r.startswith("auc") for r in blessing["reasons"])


def test_register_refuses_a_missing_or_stale_blessing(run_home, capsys):
    blessing = day_dir(run_home) / "blessing.json"
    evaluation = day_dir(run_home) / "evaluation.json"
    evaluation.write_text(evaluation.read_text().replace('"test_rows"', '"test_rows" ', 1))  # another evaluation
    assert main(["stage", "register", "--model", "ctr", "--ds", DS]) == EXIT_USER_ERROR
    assert "judged another candidate or evaluation" in capsys.readouterr().err
    blessing.unlink()
    assert main(["stage", "register", "--model", "ctr", "--ds", DS]) == EXIT_USER_ERROR
    assert "gate_evaluation did not reach a verdict" in capsys.readouterr().err
    assert [v.version for v in open_registry(settings().registry_url).list("ctr")] == [1]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("raw.row.json", '{"expectations": []}', "gate_raw has no suite 'row'; its suites: impressions, "),
        ("raw.daily.json", '{"expectations": [{"type": "expect_nonsense"}]}', "expect_nonsense not found"),
        ("raw.daily.json", '{"expectations": [{"type": "expect_column_to_exist", "kwargs": {}}]}', "column"),
    ],
)
def test_a_broken_model_suite_file_is_a_clear_error(run_home, project_copy, capsys, name, content, message):
    (project_copy / "include" / "models" / "ctr" / "expectations" / name).write_text(content)
    assert gate("raw") == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert name in err and message in err, err
