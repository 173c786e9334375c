"""The run page, `{model}/{ds}/report.html`: what on-call reads first, redrawn after every step.

The pages here are drawn by the steps themselves (keiko.step_runner redraws the page as each step ends), so
each test checks what a reader of that run would see.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import typing
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from conftest import DS, UP_TO_REGISTER, run_step, run_steps, serve_replicas
from keiko.config import settings
from keiko.contract import (
    CALIBRATION_PLOT,
    DRIFT_PLOT,
    ROC_PLOT,
    CanaryCheck,
    CanaryEvent,
    CanaryRecord,
    CanaryVerdict,
    ProductionChange,
    RolloutEvent,
    RolloutState,
    RunLayout,
)
from keiko.pipeline import TASK_IDS
from keiko.process import EXIT_GATE_FAILED
from keiko.registry import open_registry
from keiko.report.page import RunFiles, page_data, read_run, render, run_page
from keiko.runs import RunRecord, StepRecord, write_step
from keiko.storage import open_store

SECTIONS = ("header", "steps", "gates", "volume", "drift", "metrics", "plots", "lineage", "deploy")


class Page(HTMLParser):
    """A drawn page: each section's visible text (entities decoded, whitespace collapsed), every link."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.html = html
        self.text: dict[str, str] = {}
        self.links: list[str] = []
        self._section: str | None = None
        self.feed(html)
        self.text = {name: " ".join(text.split()) for name, text in self.text.items()}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section":
            self._section = values["id"]
            self.text[self._section] = ""
        self.links += [values[name] or "" for name in ("href", "src") if name in values]

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._section:
            self.text[self._section] += data + " "


def run_dir(home: Path) -> Path:
    return home / "artifacts" / "ctr" / DS


def drawn_page(home: Path) -> Page:
    page = Page((run_dir(home) / "report.html").read_text())
    assert tuple(page.text) == SECTIONS  # every section, in this order
    return page


def assert_links_stay_in_the_run(page: Page, directory: Path) -> None:
    """Every link is relative and names a file of the run directory (the page is served from there)."""
    assert page.links
    for link in page.links:
        assert not re.match(r"^[a-z][a-z0-9+.-]*:|^/", link), f"{link}: not a relative path"
        target = (directory / link).resolve()
        assert target.is_relative_to(directory.resolve()), f"{link} leaves the run directory"
        assert target.is_file(), f"{link} does not exist"


def assert_png(path: Path) -> None:
    from matplotlib.image import imread

    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels[..., :3].std() > 0.05  # a drawing, not an empty canvas


@pytest.fixture
def deployed(run_home, monkeypatch):
    """run_home (extract..register for DS, v1 registered) deployed to two live replicas; their URLs."""
    with serve_replicas(2) as (_apps, urls):
        monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", ",".join(urls))
        run_steps("deploy", "gate_serving")
        yield urls


@pytest.mark.server
def test_a_complete_run_shows_every_section(run_home, deployed):
    page = drawn_page(run_home)
    text = page.text
    evaluation = json.loads((run_dir(run_home) / "evaluation.json").read_text())
    v1 = open_registry(settings().registry_url).get("ctr", 1)

    assert "complete" in text["header"] and "failed" not in text["header"]
    assert "run param run_type manual" in text["header"] and "run param deploy auto" in text["header"]
    extract = json.loads((run_dir(run_home) / "stages" / "extract.json").read_text())
    assert f"data {extract['rows']:,} rows, window {extract['window_start']} .. {DS}" in text["header"]
    assert text["steps"].count("success") == 11  # every task of the DAG
    for gate in ("gate_raw", "gate_features", "gate_training", "gate_evaluation", "gate_serving"):
        # Data Docs are rendered for failed gates only: no link for a passed one
        assert re.search(rf"{gate} passed all \d+ expectations passed \d+ passed", text["gates"]), gate
    assert text["volume"].count(" window ") == 7 and "test day" in text["volume"]
    assert "Allowed band (green):" in text["volume"]
    assert "app_id" in text["drift"] and "< 0.05" in text["drift"]
    candidate = evaluation["candidate"]
    shown = f"candidate {candidate['logloss']:.5f} {candidate['auc']:.4f} {candidate['calibration']:.3f}"
    assert shown in text["metrics"]
    assert f"Bayes-optimal {evaluation['bayes_optimal_logloss']:.5f}" in text["metrics"]
    assert f"{evaluation['candidate_gap_to_bayes']:+.2%}" in text["metrics"]
    assert "candidate by os" in text["metrics"] and "candidate by position" in text["metrics"]
    assert "blessed: all 6 checks passed" in text["metrics"]
    assert "version v1 v1 status registered" in text["lineage"]  # this run's version is production now
    assert v1.artifact_sha256 in text["lineage"] and v1.features_sha256 in text["lineage"]
    assert "production none -> v1" in text["deploy"]
    for url in deployed:  # each replica's own timeline, in order
        at = r"\d\d:\d\d:\d\d\.\d{3}"
        events = rf"{at} loaded 1 {at} ready 1 sha256 \w+ {at} smoke passed 1 16 known answers"
        timeline = rf"{re.escape(url)} at \(UTC\) event version detail {events}"
        assert re.search(timeline, text["deploy"]), text["deploy"]

    images = [link for link in page.links if link.endswith(".png")]
    assert images == [DRIFT_PLOT, ROC_PLOT, CALIBRATION_PLOT]
    assert_links_stay_in_the_run(page, run_dir(run_home))
    for image in images:
        assert_png(run_dir(run_home) / image)


def test_a_run_stopped_by_a_gate_names_it_and_says_what_was_not_reached(run_home, project_copy, monkeypatch):
    # The model's own expectation: positions 1..2 only; the synthetic DSP logs have 1..4.
    expectation = {"column": "position", "min_value": 1, "max_value": 2}
    suite = {"expectations": [{"type": "expect_column_values_to_be_between", "kwargs": expectation}]}
    (project_copy / "include/models/ctr/expectations/raw.impressions.ranges.json").write_text(json.dumps(suite))
    # A new suite: each impressions day of the window is judged again, and each fails.
    # A new run of a day that ran before: the earlier run's evaluation, plots and registration stay on disk.
    monkeypatch.setenv("KEIKO_RUN_ID", "manual__rerun")
    run_steps("extract")
    assert run_step("gate_raw") == EXIT_GATE_FAILED

    page = drawn_page(run_home)
    text = page.text
    assert "failed at gate_raw" in text["header"]
    first = "first: impressions.ranges dt=2026-11-14 column_values_to_be_between on position"
    assert re.search(rf"gate_raw failed 8/\d+ expectations, {first}", text["header"]), text["header"]
    assert "manual__rerun" in text["header"]
    assert re.search(r"gate_raw failed [\d.]+ gate_raw failed 8/\d+ expectations", text["steps"])
    failed_gate = text["gates"].split("gate_features")[0]
    assert re.search(
        r"8 of \d+ expectations failed · Data Docs suite expectation column observed expected "
        r"impressions.ranges dt=2026-11-14 column_values_to_be_between position [\d,]+ unexpected \([\d.]+%\), "
        r"e\.g\. .* \[1, 2\]",
        failed_gate,
    ), failed_gate
    assert "gate_features no verdict not reached: the run failed at gate_raw" in text["gates"]
    assert "test day" in text["volume"]  # gate_raw measured the volume before it failed
    for section, step in (
        ("drift", "gate_features"),
        ("metrics", "evaluate"),
        ("plots", "evaluate"),
        ("deploy", "deploy"),
    ):
        assert f"{step} not reached: the run failed at gate_raw" in text[section], section
    assert "candidate" not in text["metrics"]  # the earlier run's evaluation is still on disk: not this run's
    assert "not reached" in text["lineage"] and "v1" not in text["lineage"]  # the earlier run's registration
    assert not [link for link in page.links if link.endswith(".png")]  # nor its plots
    assert text["steps"].count("not reached") == len(TASK_IDS) - 2  # every step after gate_raw


def test_text_from_the_run_is_escaped(run_home, monkeypatch):
    for path in run_home.glob("registry.db*"):  # register again from scratch, with this trigger
        path.unlink()
    reason = "<script>alert('on-call')</script> & <b>retrain</b>"
    monkeypatch.setenv("KEIKO_RUN_PARAMS", json.dumps({"reason": reason}))
    run_steps("register")

    page = drawn_page(run_home)
    assert f"run param reason {reason}" in page.text["header"]  # shown as text ...
    assert "<script" not in page.html and "<b>" not in page.html  # ... never as markup
    assert "&lt;script&gt;alert(&#39;on-call&#39;)&lt;/script&gt; &amp; &lt;b&gt;retrain&lt;/b&gt;" in page.html


def test_a_run_with_no_step_recorded_draws_every_section():
    page = Page(render(page_data(RunFiles("ctr", DS, run=None))))
    assert tuple(page.text) == SECTIONS
    assert "no step of this run has been recorded yet" in page.text["header"]
    assert page.text["steps"].count("not run") == len(TASK_IDS)
    assert page.links == []


def recorded(outcomes: dict[str, str], messages: dict[str, str]) -> RunRecord:
    """A run record whose steps ended as `outcomes` says, in pipeline order, one second each from 17:00:00."""
    steps = {
        task: StepRecord(
            task, outcome, messages.get(task, f"{task} done"), "scheduled__1",
            f"2026-11-22T17:00:{i:02d}.000+00:00", f"2026-11-22T17:00:{i + 1:02d}.000+00:00", 1.0,
        )
        for i, (task, outcome) in enumerate(outcomes.items())
    }  # fmt: skip
    return RunRecord("ctr", DS, "scheduled__1", steps)


def test_a_skipped_deploy_completes_the_run_and_says_why():
    skip = "ctr v2 not deployed: rejected: logloss_regression 0.031 not [-inf, 0.005]; production stays v1"
    run = recorded({task: "success" for task in UP_TO_REGISTER} | {"deploy": "skipped"}, {"deploy": skip})
    text = Page(render(page_data(RunFiles("ctr", DS, run)))).text
    assert "complete (skipped: deploy)" in text["header"]
    # Airflow skips gate_serving and canary unrun, and rollback (trigger rule one_failed: nothing failed).
    assert text["steps"].endswith(
        f"deploy skipped 1.0 {skip} gate_serving skipped canary skipped promote skipped rollback skipped"
    )
    assert f"deploy skipped: {skip}" in text["deploy"]
    assert "gate_serving no verdict skipped: deploy was skipped" in text["gates"]


def test_a_failed_deploy_shows_each_replica_and_the_rollback():
    run = recorded({task: "success" for task in UP_TO_REGISTER} | {"deploy": "failed"}, {"deploy": "rolled back"})
    at = "2026-11-22T17:00:09.{:03d}+00:00".format
    events = [
        RolloutEvent(replica="http://a:8601", event="loaded", version=2, at=at(100)),
        RolloutEvent(replica="http://b:8602", event="failed", version=2, at=at(200), detail="409 <sha256>"),
        RolloutEvent(replica="http://a:8601", event="rolled back", version=1, at=at(300)),
    ]
    deploy = ProductionChange(
        model="ctr",
        action="deploy",
        from_version=1,
        to_version=2,
        reason="",
        requested_by="deploy of ctr v2 for run scheduled__1",
        backend="local",
        replicas=["http://a:8601", "http://b:8602"],
        started_at=at(0),
        finished_at=at(300),
        success=False,
        message="http://b:8602: load refused",
        rolled_back=True,
        alias_moved=False,
        events=events,
        record_uri="",
    )
    text = Page(render(page_data(RunFiles("ctr", DS, run, deploy=deploy)))).text
    assert "failed at deploy" in text["header"]
    assert "failed: http://b:8602: load refused; rolled back to the previous version" in text["deploy"]
    assert (
        "http://a:8601 at (UTC) event version detail 17:00:09.100 loaded 2 17:00:09.300 rolled back 1"
        in (text["deploy"])
    )
    assert "http://b:8602 at (UTC) event version detail 17:00:09.200 failed 2 409 <sha256>" in text["deploy"]


def chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("headless Chromium is needed to check the run page: apt-get install chromium (make test does)")
    return binary


@pytest.mark.browser
def test_the_page_renders_in_a_browser_with_its_plots(run_home, tmp_path):
    from matplotlib.image import imread

    report = run_dir(run_home) / "report.html"
    screenshot = tmp_path / "report.png"
    subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={screenshot}", "--window-size=1280,5000",
         report.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    pixels = (imread(screenshot)[..., :3] * 255).round().astype(int)
    assert pixels.shape[:2] == (5000, 1280)
    assert (pixels.min(axis=2) < 200).mean() > 0.01  # text, tables and plots, not a blank page
    # The plots' own colours (the page's CSS uses neither): the browser loaded the PNGs.
    for name, colour in (("drift chart's green bars", (44, 160, 44)), ("ROC's candidate curve", (31, 119, 180))):
        assert (np.abs(pixels - colour).max(axis=2) <= 2).sum() > 200, f"the {name} are not on the screenshot"


def canary_run(**fields) -> CanaryRecord:
    """A canary that held, passed step 1 (advanced to 50%), then breached step 2 and was reverted; at 17:00:1x."""
    at = "2026-11-22T17:{:02d}:00+00:00".format
    checks = [
        CanaryCheck(check="error rate (5xx)", stable=0.0, canary=0.0, allowed="<= +0.001", verdict="pass"),
        CanaryCheck(check="online logloss", stable=0.1211, canary=0.1385, allowed="<= +2%", verdict="breach",
                    detail="+14.4% [+9.1%, +19.6%]"),
    ]  # fmt: skip

    def verdict(minute: int, step: int, weight: float, kind: str, summary: str, found: list) -> CanaryVerdict:
        return CanaryVerdict(
            at=at(minute), step=step, weight=weight, held_minutes=minute - (10 if step == 1 else 20) + 0.25,
            verdict=kind, requests={"canary": 100 * minute, "stable": 900 * minute},
            outcomes={"canary": 50 * minute, "stable": 450 * minute},
            positives={"canary": minute, "stable": 9 * minute}, checks=found, summary=summary,
        )  # fmt: skip

    message = "canary of ctr v2 breached at step 2 (50%): online logloss +14.4%; reverted, v1 serves every user"
    record = dict(
        model="ctr", strategy="canary", version=2, stable_version=1, salt="ctr-v2-scheduled__1", run_id="scheduled__1",
        state="reverted", step=2, weight=0.5, started_at=at(10), step_started_at=at(20), baseline={},
        timeline=[
            CanaryEvent(at=at(10), step=1, weight=0.1, event="started", detail="v2 canary at 10% on 2 replica(s)"),
            CanaryEvent(at=at(20), step=2, weight=0.5, event="advanced", detail="v2 canary at 50% on 2 replica(s)"),
            CanaryEvent(at=at(31), step=2, weight=0.5, event="reverted", detail=message),
        ],
        verdicts=[
            verdict(12, 1, 0.1, "hold", "holding: online logloss <not enough data>", checks[:1]),
            verdict(20, 1, 0.1, "pass", "every check passed with its sample", checks[:1]),
            verdict(31, 2, 0.5, "breach", "online logloss +14.4% [+9.1%, +19.6%] > +2%", checks),
        ],
        finished_at=at(31), message=message,
    )  # fmt: skip
    return CanaryRecord(**record | fields)


def test_a_canary_run_shows_its_rollout_events_and_verdicts_in_time_order():
    run = recorded({task: "success" for task in (*UP_TO_REGISTER, "deploy", "gate_serving")} | {"canary": "failed"}, {})
    page = Page(render(page_data(RunFiles("ctr", DS, run, canary=canary_run()))))
    assert tuple(page.text) == (*SECTIONS, "rollout")  # after the deploy, only for a run that started one
    text = page.text["rollout"]
    assert text.startswith(
        "9. Rollout strategy canary canary v2 stable v1 (production while it runs) salt ctr-v2-scheduled__1 "
        "state reverted started 2026-11-22 17:10:00 finished 2026-11-22 17:31:00 message canary of ctr v2 breached"
    ), text
    timeline = text.split("Timeline", 1)[1]
    rows = [
        "2026-11-22 17:10:00 1 10% started v2 canary at 10% on 2 replica(s)",
        "2026-11-22 17:12:00 1 10% verdict hold 2.2 1,200 / 10,800 600 / 5,400 (12 / 108) "
        "holding: online logloss <not enough data> 1 check",
        "2026-11-22 17:20:00 1 10% verdict pass 10.2 2,000 / 18,000 1,000 / 9,000 (20 / 180) "
        "every check passed with its sample 1 check check stable canary allowed verdict detail "
        "error rate (5xx) 0 0 <= +0.001 pass",
        "2026-11-22 17:20:00 2 50% advanced v2 canary at 50% on 2 replica(s)",  # the verdict, then what it did
        "2026-11-22 17:31:00 2 50% verdict breach 11.2 3,100 / 27,900",
        "online logloss 0.1211 0.1385 <= +2% breach +14.4% [+9.1%, +19.6%]",
        "2026-11-22 17:31:00 2 50% reverted canary of ctr v2 breached at step 2",
    ]
    positions = [timeline.index(row) for row in rows]
    assert positions == sorted(positions), timeline
    assert "<not enough data>" not in page.html and "&lt;not enough data&gt;" in page.html  # escaped


@pytest.mark.parametrize("state", typing.get_args(RolloutState))
def test_a_rollout_in_any_state_has_its_section(state):
    """A canary awaiting a person's decision once made the page fail to render ("run page not updated")."""
    run = recorded({task: "success" for task in (*UP_TO_REGISTER, "deploy", "gate_serving", "canary")}, {})
    page = Page(render(page_data(RunFiles("ctr", DS, run, canary=canary_run(state=state)))))
    assert f"state {state} " in page.text["rollout"]


def test_the_rollout_is_read_from_this_runs_deploy_only(keiko_home):
    store = open_store(settings())
    layout = RunLayout(store, "ctr", DS)
    deploy = StepRecord("deploy", "success", "v2 canary at 10%", "scheduled__1", "2026-11-22T17:10:00.400+00:00",
                        "2026-11-22T17:10:01.000+00:00", 0.6)  # fmt: skip
    write_step(layout, deploy)
    record = canary_run(state="running", finished_at=None, message="", timeline=canary_run().timeline[:1])
    layout.write(layout.canary_record, record)  # started in the deploy's second (whole seconds): this run's
    assert read_run(store, "ctr", DS, None).canary == record
    assert "rollout" in Page(run_page(store, "ctr", DS)).text
    later = dataclasses.replace(deploy, run_id="scheduled__2", started_at="2026-11-23T09:00:00.000+00:00",
                                finished_at="2026-11-23T09:00:01.000+00:00")  # fmt: skip
    write_step(layout, later)  # a rerun's deploy: the canary.json on disk is the earlier run's
    assert read_run(store, "ctr", DS, None).canary is None
    assert "rollout" not in Page(run_page(store, "ctr", DS)).text
