"""`keiko status`: each model's production version, how long it has served, and how its last run ended."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from conftest import DS, free_port
from keiko.cli import main
from keiko.config import settings
from keiko.oncall import age
from keiko.process import EXIT_RETRYABLE, EXIT_USER_ERROR
from keiko.registry import open_registry

MISSING_DAY = "2027-01-10"  # the warehouse has no such partition: extract fails


def status(capsys: pytest.CaptureFixture, *flags: str) -> str:
    capsys.readouterr()
    assert main(["status", *flags]) == 0
    return capsys.readouterr().out


def rows(table: str) -> dict[str, list[str]]:
    """The table's cells by model (columns are two spaces or more apart)."""
    header, *body = (re.split(r"\s{2,}", line) for line in table.rstrip("\n").split("\n"))
    assert header == ["model", "production", "since", "for", "data to", "last run", "outcome", "step: message"]
    return {cells[0]: cells for cells in body}


def test_without_runs_or_production_every_model_reads_none(keiko_home, capsys):
    table = rows(status(capsys))
    assert set(table) == {"ctr", "cvr", "user_value"}
    assert table["ctr"] == ["ctr", "none", "-", "-", "-", "none", "-"]
    assert json.loads(status(capsys, "--json")) == [
        {"model": "ctr", "production": None, "last_run": None},
        {"model": "cvr", "production": None, "last_run": None},
        {"model": "user_value", "production": None, "last_run": None},
    ]


def test_a_registered_but_undeployed_run_is_incomplete_at_register(run_home, capsys):
    table = rows(status(capsys))
    assert table["ctr"][:7] == ["ctr", "none", "-", "-", "-", DS, "incomplete"]
    assert table["ctr"][7] == "register success: register done in " + table["ctr"][7].split(" done in ")[1]
    assert table["cvr"][1] == "none" and table["cvr"][5] == "none"


def test_production_age_and_a_failed_last_run(run_home, capsys):
    registry = open_registry(settings().registry_url)
    registry.move_alias("ctr", 1, note="deploy run test")
    moved_at = registry.history("ctr")[-1]["at"]
    assert main(["stage", "extract", "--model", "ctr", "--ds", MISSING_DAY]) == EXIT_USER_ERROR

    ctr = json.loads(status(capsys, "--json"))[0]
    assert ctr["production"]["version"] == 1 and ctr["production"]["window_end"] == DS
    moved = dt.datetime.fromisoformat(moved_at).replace(tzinfo=dt.UTC)  # SQLite gives it back naive: UTC
    assert dt.datetime.fromisoformat(ctr["production"]["since"]) == moved
    assert 0 <= ctr["production"]["age_seconds"] < 120
    run = ctr["last_run"]
    assert (run["ds"], run["outcome"], run["step"], run["step_outcome"]) == (MISSING_DAY, "failed", "extract", "failed")
    assert "missing warehouse partitions" in run["message"]

    ctr_row = rows(status(capsys))["ctr"]
    assert ctr_row[:3] == ["ctr", "v1", moved.strftime("%Y-%m-%d %H:%M UTC")] and re.fullmatch(
        r"\d+[sm]", ctr_row[3]
    )  # served for seconds
    assert ctr_row[4:7] == [DS, MISSING_DAY, "failed"]
    assert ctr_row[7].startswith("extract failed: missing warehouse partitions in ")
    assert len(ctr_row[7]) <= 120  # the table keeps a line per model; --json has the whole message


@pytest.mark.parametrize(("retries_left", "outcome"), [("1", "retrying"), ("0", "failed")])
def test_a_failure_airflow_will_retry_reads_retrying_until_the_last_try(
    run_home, monkeypatch, capsys, retries_left, outcome
):
    """Not "failed" while Airflow still retries (a model server down); a user's error is failed on its first try."""
    monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", f"http://127.0.0.1:{free_port()}")  # down
    monkeypatch.setenv("KEIKO_RETRIES_LEFT", retries_left)
    assert main(["stage", "deploy", "--model", "ctr", "--ds", DS]) == EXIT_RETRYABLE
    run = json.loads(status(capsys, "--json"))[0]["last_run"]
    assert (run["outcome"], run["step"], run["step_outcome"]) == (outcome, "deploy", outcome)
    assert rows(status(capsys))["ctr"][7].startswith(f"deploy {outcome}: deploy of ctr to v1 failed")

    assert main(["stage", "extract", "--model", "ctr", "--ds", MISSING_DAY]) == EXIT_USER_ERROR  # tries left or not
    assert json.loads(status(capsys, "--json"))[0]["last_run"]["outcome"] == "failed"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59, "59s"), (61, "1m"), (3_600 * 3 + 300, "3h 05m"), (86_400 * 2 + 3_600 * 4, "2d 04h")],
)
def test_ages_read_in_their_two_largest_units(seconds, text):
    assert age(seconds) == text
