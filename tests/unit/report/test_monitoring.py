"""The monitoring page, `{model}/monitor/index.html`, and `keiko monitor`'s lines: the monitor's days side by side.

The days here are written as the monitor's steps write them (typed results in the monitor's run folders, a
deploy record in a model run's folder), so each test reads what a monitor run would have left.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from keiko.contract import (
    DriftGateResult,
    GateOutcome,
    JoinOutcomesResult,
    Metrics,
    ModelLayout,
    OnlineGateResult,
    ProductionChange,
    RunLayout,
    VersionOnline,
    VolumeGateResult,
)
from keiko.modeldef import load_model
from keiko.pipeline import MONITOR_DAG
from keiko.report.monitoring import Alarm, Change, monitor_series, production_changes, summary_lines
from keiko.report.monitoring import write_monitoring_page as draw
from keiko.storage import ArtifactStore

OLD, DAY1, DAY2, DAY3, DAY4 = "2026-10-01", "2026-11-19", "2026-11-20", "2026-11-21", "2026-11-22"
CALIBRATION_ALARM = GateOutcome(
    suite="online v3",
    expectation="expect_column_values_to_be_between",
    column="calibration",
    observed="1.31",
    expected="[0.85, 1.15]",
    passed=False,
    value=1.31,
)
TRAINING_ROWS = {"2026-11-12": 200_000, "2026-11-15": 198_000, "2026-11-18": 196_000, "2026-11-21": 194_000}
PNG = b"\x89PNG\r\n\x1a\n"


def metrics(logloss: float, auc: float = 0.74, calibration: float = 1.0, rows: int = 30_000) -> Metrics:
    return Metrics(rows=rows, positives=900, logloss=logloss, auc=auc, calibration=calibration, mean_prediction=0.03)


def gate(outcomes: list[GateOutcome]) -> dict:
    """The fields every GateResult has, for these outcomes."""
    failed = sum(not o.passed for o in outcomes)
    return {"success": not failed, "expectations": len(outcomes), "failed": failed, "outcomes": outcomes}


def version(number: int, calibration: float, logloss: float = 0.132) -> VersionOnline:
    offline = metrics(0.128, auc=0.75)
    return VersionOnline(
        version=number,
        online=metrics(logloss, calibration=calibration),
        offline=offline,
        logloss_gap=logloss / offline.logloss - 1,
        auc_drop=offline.auc - 0.74,
        judged=True,
    )


def write_day(store: ArtifactStore, day: str, served: dict[str, int], calibration: dict[str, float]) -> None:
    """Every monitor result of `day`: `served` answered rows per version, `calibration` their online figure;
    gate_online fails (with v3's CALIBRATION_ALARM) on a calibration outside model.yaml's 1 +- 0.15."""
    layout = RunLayout(store, "ctr", day, MONITOR_DAG)
    answered = sum(served.values())
    layout.write_result(
        JoinOutcomesResult(
            day=day,
            online_uri=layout.online,
            online_sha256="ab",
            population=answered + 30,
            answered=answered,
            outcomes=900,
            versions=served,
            bayes_optimal_logloss=0.125,
        )
    )
    alarms = [CALIBRATION_ALARM] if any(abs(c - 1) > 0.15 for c in calibration.values()) else []
    layout.write_result(
        OnlineGateResult(
            gate="online",
            data_docs="",
            day=day,
            versions={v: version(int(v), c) for v, c in calibration.items()},
            **gate(alarms),
        )
    )
    layout.write_result(
        DriftGateResult(
            gate="drift",
            data_docs="",
            day=day,
            divergence={v: {"app_id": 0.004, "os": 0.011, "score": 0.002} for v in served},
            unseen_share={v: {"app_id": 0.001, "os": 0.0} for v in served},
            **gate([]),
        )
    )
    layout.write_result(
        VolumeGateResult(
            gate="volume",
            data_docs="",
            day=day,
            answered_share=answered / (answered + 30),
            training_rows=TRAINING_ROWS,
            offline_logloss=dict.fromkeys(TRAINING_ROWS, 0.128),
            rows_daily_change=-0.0034,
            logloss_daily_change=0.0,
            **gate([]),
        )
    )


def deploy(store: ArtifactStore, day: str, to_version: int, success: bool) -> None:
    layout = RunLayout(store, "ctr", day)
    change = ProductionChange(
        model="ctr",
        action="deploy",
        from_version=to_version - 1,
        to_version=to_version,
        reason="registered",
        requested_by=f"keiko_ctr {day}",
        backend="replicas",
        replicas=["http://127.0.0.1:8001"],
        started_at=f"{day}T01:00:00+00:00",
        finished_at=f"{day}T01:00:05+00:00",
        success=success,
        message="ok" if success else "the server did not confirm",
        rolled_back=not success,
        alias_moved=success,
        events=[],
        record_uri=layout.deploy_record,
    )
    layout.write(layout.deploy_record, change)


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    """Five monitored days of ctr: OLD (v1, outside the last 30 days); DAY1 v2 alone, v3 deployed by DAY1's run;
    DAY2 v3 on 75 % of the traffic with its calibration off (the alarm); DAY3 v3 alone; DAY4 with only
    join_outcomes and an unreadable gate_drift."""
    store = ArtifactStore((tmp_path / "artifacts").as_uri())
    write_day(store, OLD, {"1": 30_000}, {"1": 1.0})
    write_day(store, DAY1, {"2": 30_000}, {"2": 1.01})
    write_day(store, DAY2, {"2": 7_500, "3": 22_500}, {"2": 0.99, "3": 1.31})
    write_day(store, DAY3, {"3": 30_000}, {"3": 1.02})
    write_day(store, DAY4, {"3": 29_000}, {"3": 1.0})
    layout = RunLayout(store, "ctr", DAY4, MONITOR_DAG)
    for task in ("gate_online", "gate_volume"):  # the day's monitor stopped after join_outcomes
        store.delete(layout.step_result(task))
    store.write_bytes(layout.step_result("gate_drift"), b'{"gate": "drift"}')  # another keiko version's, say
    deploy(store, DAY1, 3, success=True)
    deploy(store, DAY2, 4, success=False)  # no marker: the alias did not move
    return store


class Links(HTMLParser):
    """A page's visible text (whitespace collapsed) and every link (href, src)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.links: list[str] = []
        self.parts: list[str] = []
        self.feed(html)
        self.text = " ".join(" ".join(self.parts).split())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value or "" for name, value in attrs if name in ("href", "src")]

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def test_the_series_holds_each_day_oldest_first_with_its_figures_and_alarms(store):
    series = monitor_series(store, "ctr")
    assert [day.day for day in series] == [OLD, DAY1, DAY2, DAY3, DAY4]

    first, alarmed, calm, partial = series[1:]
    assert first.alarms == () and [v.version for v in first.versions] == [2]
    v2, v3 = alarmed.versions
    assert (v2.version, v2.share, v3.version, v3.share) == (2, 0.25, 3, 0.75)
    assert v3.online.calibration == 1.31 and v3.online.logloss == 0.132 and v3.offline.logloss == 0.128
    assert v3.logloss_gap == pytest.approx(0.132 / 0.128 - 1) and v3.auc_drop == pytest.approx(0.01)
    assert v3.divergence == ("os", 0.011) and v3.unseen == ("app_id", 0.001)  # the largest of each
    assert alarmed.alarms == (Alarm("gate_online", "online v3", "calibration", "1.31", "[0.85, 1.15]"),)
    assert alarmed.alarms[0].version == 3
    assert alarmed.answered_share == pytest.approx(30_000 / 30_030) and alarmed.bayes_optimal_logloss == 0.125
    assert calm.alarms == () and calm.training_rows == TRAINING_ROWS and calm.rows_daily_change == -0.0034

    # A day with only join_outcomes is a day: the other figures are absent, the bad file named and skipped.
    assert partial.unreadable == ("gate_drift",) and partial.alarms == ()
    (only,) = partial.versions
    assert (only.version, only.share, only.online, only.divergence) == (3, 1.0, None, None)
    assert partial.answered_share == pytest.approx(29_000 / 29_030)  # from the join, without gate_volume
    assert (partial.training_rows, partial.rows_daily_change) == ({}, None)


def test_the_series_is_a_window_of_calendar_days(store):
    assert [day.day for day in monitor_series(store, "ctr", days=2, until=DAY3)] == [DAY2, DAY3]
    assert [day.day for day in monitor_series(store, "ctr", days=30)] == [DAY1, DAY2, DAY3, DAY4]  # not OLD


def test_an_alarm_names_the_check_when_its_gate_has_several():
    online = Alarm("gate_online", "online v3", "calibration", "1.31", "[0.85, 1.15]")
    drift = Alarm("gate_drift", "divergence v3", "app_id", "0.21", "< 0.05")
    assert online.describe() == "gate_online calibration v3 1.31 (expected [0.85, 1.15])"
    assert drift.describe() == "gate_drift divergence app_id v3 0.21 (expected < 0.05)"
    assert Alarm("gate_volume", "answered", "answered_share", "0.9", "[0.99, 1]").version is None


def test_only_changes_that_moved_production_are_markers(store):
    assert production_changes(store, "ctr") == [Change(DAY1, 3, "deploy")]


def test_summary_lines_show_traffic_metrics_and_the_alarm(store):
    lines = summary_lines(store, load_model("ctr"))
    assert lines[0] == f"ctr monitor: 4 day(s) {DAY1}..{DAY4} (the last 14 days), 1 with alarms"
    by_day = {line.split()[0]: line for line in lines[1:-2]}
    assert list(by_day) == [DAY1, DAY2, DAY3, DAY4]
    assert "v2 25% v3 75%" in by_day[DAY2]
    assert "calib v2 0.990, v3 1.310" in by_day[DAY2]
    assert "logloss v2 0.13200 / 0.12800 (+3.1%)" in by_day[DAY2]
    assert by_day[DAY2].endswith("ALARM: gate_online calibration v3 1.31 (expected [0.85, 1.15])")
    assert by_day[DAY1].endswith("ok") and "[deploy v3]" in by_day[DAY1]
    assert by_day[DAY4].endswith("ok (unreadable: gate_drift)")
    assert lines[-2] == (
        f"trend ({DAY3}, over 4 runs 2026-11-12..2026-11-21): training rows -0.34%/day (limit -1.5%), "
        "offline logloss +0.00%/day (limit +1.0%)"
    )
    assert lines[-1] == f"page: {ModelLayout(store, 'ctr').monitoring_page}"


def test_the_page_names_the_alarm_day_and_links_the_pictures_it_drew(store):
    uri = draw(store, None, load_model("ctr"))
    assert uri == ModelLayout(store, "ctr").monitoring_page
    page = Links(store.read_bytes(uri).decode())

    alarm_row = page.text.partition(f"{DAY2} v2 25% v3 75%")[2].partition(DAY1)[0]  # the newest day first
    assert "gate_online calibration v3 1.31 (expected [0.85, 1.15])" in alarm_row
    assert "1.310" in alarm_row and "ok" not in alarm_row
    assert f"{DAY1} v2 100% deploy v3" in page.text
    assert f"newest day {DAY4}: ok" in page.text
    assert f"5 monitored day(s) in the last 90 days, {OLD} .. {DAY4}" in page.text
    assert "unreadable result: gate_drift" in page.text
    # OLD is outside the last 30 days: not in the table, but the 90-day picture is drawn for it.
    assert f"{OLD} v1 100%" not in page.text
    assert page.links == ["plots/last_30_days.png", "plots/last_90_days.png"]
    folder = uri.rsplit("/", 1)[0]
    for link in page.links:
        assert store.read_bytes(f"{folder}/{link}").startswith(PNG)


def test_no_monitor_run_yet_says_how_to_run_one(tmp_path):
    store = ArtifactStore((tmp_path / "artifacts").as_uri())
    assert monitor_series(store, "ctr") == []
    command = "keiko run --model ctr --ds <day> --monitor"
    assert summary_lines(store, load_model("ctr")) == [f"ctr: no monitor run yet: run `{command}`"]
    page = Links(store.read_bytes(draw(store, None, load_model("ctr"))).decode())
    assert "no monitor run yet" in page.text and command in page.text and page.links == []
