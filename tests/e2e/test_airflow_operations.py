"""Operating keiko through a running Airflow in its production shape, the stack of `make stack` (scripts/stack.sh:
PostgreSQL, Redis, api-server, scheduler, dag-processor, triggerer and a Celery worker as processes of their own,
the registry in PostgreSQL, model servers): manual triggers through the REST API, backfills (one whose day waits
for its data, one cancelled by Ctrl-C), the "Run page" link and failure alerts, wait_for_data deferred in the
triggerer until its timeout, the run-late deadline alert, the production Asset and a DAG scheduled on it, and
`keiko rollback`.

The stack runs for this module in a temporary KEIKO_HOME on free ports (tests/airflow_shapes.py), with the
settings docker-compose.yaml shares with it (deploy/airflow.env) except that DAGs start unpaused and the
schedule is off (`[scheduler] use_job_schedule = False`), so only the runs a test starts exist.
"""

import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from airflow_shapes import operations_env, reachable_root, stack

from conftest import AIRFLOW, DS, END_DATE, ROOT, ROWS_PER_DAY, webhook_receiver

pytestmark = pytest.mark.slow

PASSWORD = "keiko-test-password"
DAYS = 12  # 2026-11-10..21: an 8-day window for every day from 11-17 on
BAD_DAY = "2026-11-10"  # null impression ids: gate_raw fails any run whose window holds it
FAILING_DS = "2026-11-17"
BACKFILL = ("2026-11-18", "2026-11-20")
RUN_TIMEOUT = 600


@pytest.fixture(scope="module")
def webhook():
    with webhook_receiver() as receiver:
        yield receiver


class Airflow:
    """A running Airflow and a client of its REST API, logged in as admin."""

    def __init__(self, url: str, env: dict[str, str], home: Path) -> None:
        self.url, self.env, self.home = url, env, home
        self.client = httpx.Client(base_url=url, timeout=30)

    def login(self) -> None:
        token = self.client.post("/auth/token", json={"username": "admin", "password": PASSWORD})
        token.raise_for_status()
        self.client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    def trigger(self, ds: str, conf: dict) -> httpx.Response:
        return self.client.post(
            "/api/v2/dags/keiko_ctr/dagRuns", json={"logical_date": f"{ds}T02:00:00Z", "conf": conf}
        )

    def wait(self, run_id: str) -> dict:
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            run = self.client.get(f"/api/v2/dags/keiko_ctr/dagRuns/{run_id}").json()
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(2)
        raise AssertionError(f"{run_id} did not finish within {RUN_TIMEOUT} s: {self.task_states(run_id)}")

    def task_states(self, run_id: str) -> dict[str, str]:
        tasks = self.client.get(f"/api/v2/dags/keiko_ctr/dagRuns/{run_id}/taskInstances").json()
        return {t["task_id"]: t["state"] for t in tasks["task_instances"]}

    def runs(self, run_type: str) -> list[dict]:
        runs = self.client.get("/api/v2/dags/keiko_ctr/dagRuns", params={"run_type": run_type}).json()
        return sorted(runs["dag_runs"], key=lambda r: r["logical_date"])

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=300)


FOLLOWER = '''\
"""Operations tests: a DAG downstream of keiko, queued on every change of ctr's production."""
import datetime as dt

from airflow.sdk import DAG, Asset, task

with DAG("follows_ctr_production", schedule=Asset("keiko://ctr/production"), start_date=dt.datetime(2026, 1, 1)):

    @task
    def served(**context):
        (events,) = context["triggering_asset_events"].values()
        return events[-1].extra["version"]

    served()
'''
# Waits short enough for a run past the data to end in a minute or two: (run.wait_for_data_hours, .deadline_hours).
RUN_POLICY = {"ctr": (0.02, 10), "cvr": (0.03, 0.01)}
# ctr's canary here: one step, judged on a few thousand requests of `keiko traffic`.
CANARY = {
    "steps": [{"weight": 0.5, "min_requests": 300, "min_outcomes": 800}],
    "max_hold_minutes": 10,
    "check_every_seconds": 3,
    # A retrain as good as production: at the default alpha (0.05) the step's online tests would breach by chance
    # once in 27 runs (3.7% of equal steps: bench/canary_looks.py); at 0.001, about once in 1,000.
    "analysis": {"alpha": 0.001},
}


def project(folder: Path) -> dict[str, str]:
    """A copy of include/ and dags/ with RUN_POLICY's waits and a DAG scheduled on ctr's production Asset."""
    shutil.copytree(ROOT / "include", folder / "include")
    shutil.copytree(ROOT / "dags", folder / "dags")
    for model, (wait, deadline) in RUN_POLICY.items():
        path = folder / "include" / "models" / model / "model.yaml"
        text = re.sub(r"wait_for_data_hours: [0-9.]+", f"wait_for_data_hours: {wait}", path.read_text())
        path.write_text(re.sub(r"deadline_hours: [0-9.]+", f"deadline_hours: {deadline}", text))
    ctr = folder / "include" / "models" / "ctr" / "model.yaml"
    config = yaml.safe_load(ctr.read_text())
    config["deploy"]["canary"] = CANARY
    ctr.write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / "dags" / "follows_ctr_production.py").write_text(FOLLOWER)
    return {"KEIKO_PROJECT_DIR": str(folder), "AIRFLOW__CORE__DAGS_FOLDER": str(folder / "dags")}


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, webhook):
    from keiko.synth import write_warehouse

    root = reachable_root("keiko-operations-")
    try:
        warehouse = root / "warehouse"
        faults = {dt.date.fromisoformat(BAD_DAY): ["null-key"]}
        write_warehouse(warehouse, END_DATE, DAYS, ROWS_PER_DAY, faults=faults, progress=lambda _msg: None)
        env = {**operations_env(root, warehouse, PASSWORD, alerts_url=webhook[0]), **project(root / "project")}
        env["POLL_SECONDS"] = "3"  # make backfill's progress
        with stack(root / "home", env) as running:
            airflow = Airflow(running.url, running.env, root)
            deadline = time.monotonic() + 300
            while True:  # ready when it logs us in and the DAG has been parsed
                try:
                    airflow.login()
                    if airflow.client.get("/api/v2/dags/keiko_ctr").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "keiko_ctr was not parsed within 300 s of the stack's start"
                time.sleep(2)
            yield airflow
    finally:
        # The components' and the tasks' logs outlive the stack where pytest keeps its temporary folders.
        kept, stack_dir = tmp_path_factory.mktemp("operations-logs"), root / "home" / "stack"
        for logs, name in ((stack_dir / "logs", "stack"), (stack_dir / "airflow" / "logs", "tasks")):
            if logs.is_dir():
                shutil.copytree(logs, kept / name)
        shutil.rmtree(root, ignore_errors=True)


def registry(airflow: Airflow):
    """The registry the stages wrote: the stack's PostgreSQL database, as the components have it."""
    from keiko.registry import open_registry

    return open_registry(airflow.env["KEIKO_REGISTRY_URL"])


@pytest.fixture(scope="module")
def manual_run(airflow):
    """A run of DS triggered through the REST API with every kind of parameter changed."""
    conf = {"window_days": 9, "max_epochs": 5, "deploy": "skip", "reason": "retrain after the <11-20> logging fix"}
    response = airflow.trigger(DS, conf)
    assert response.status_code == 200, response.text
    run = airflow.wait(response.json()["dag_run_id"])
    return conf, run


def test_a_manual_trigger_runs_with_its_params_and_the_registry_keeps_them(airflow, manual_run):
    conf, run = manual_run
    states = airflow.task_states(run["dag_run_id"])
    assert run["state"] == "success", states
    assert states["register"] == "success" and states["deploy"] == "skipped"  # deploy=skip
    (entry,) = registry(airflow).list("ctr")
    assert entry.window_start == "2026-11-13"  # 9 days, not model.yaml's 8
    assert entry.trigger == {
        "run_type": "manual",
        "deploy": "skip",
        "deploy_strategy": "rolling",
        "reason": conf["reason"],
        "window_days": 9,
        "algorithm": {"max_epochs": 5, "eta0": 1.0, "alpha": 1e-6},
    }
    train = json.loads((airflow.home / "home" / "artifacts" / "ctr" / DS / "stages" / "train.json").read_text())
    assert train["best_epoch"] <= 5


@pytest.mark.parametrize(
    "conf, refused",
    [
        ({"window_days": 1}, "window_days"),
        ({"deploy": "sometimes"}, "sometimes"),
        ({"max_epochs": "many"}, "max_epochs"),
        ({"eta0": 0}, "eta0"),
        ({"reason": "x" * 501}, "reason"),
    ],
)
def test_an_invalid_trigger_is_refused_before_anything_runs(airflow, conf, refused):
    before = {r["dag_run_id"] for r in airflow.runs("manual")}
    response = airflow.trigger("2026-11-19", conf)
    assert response.status_code == 400, response.text
    assert refused in response.text
    assert {r["dag_run_id"] for r in airflow.runs("manual")} == before  # no run was created


def test_a_backfill_registers_history_reproducibly_and_never_deploys(airflow, manual_run):
    store = registry(airflow)
    (production,) = [v.version for v in store.list("ctr") if v.ds == DS]
    store.move_alias("ctr", production, note="test: what serves today")
    days = [dt.date.fromisoformat(BACKFILL[0]) + dt.timedelta(days=i) for i in range(3)]

    def backfill(*command: str) -> tuple[dict[str, str], str]:
        """Run the backfill to its end; each day's model sha256, and what the command printed."""
        # On SQLite `backfill create` can meet "database is locked"; Airflow removes the half-made backfill, or,
        # when that removal is locked out too, its scheduler does after 2 minutes: until then, ask again.
        met_lock, deadline = False, time.monotonic() + 240
        while True:
            result = subprocess.run(command, env=airflow.env, cwd=ROOT, capture_output=True, text=True, timeout=1200)
            met_lock = met_lock or "database is locked" in result.stderr
            orphan = met_lock and "Another backfill is running" in result.stderr
            if not ("database is locked" in result.stderr or orphan) or time.monotonic() > deadline:
                break
            time.sleep(10)
        assert result.returncode == 0, result.stdout + result.stderr
        runs = [r for r in airflow.runs("backfill") if r["logical_date"][:10] in {d.isoformat() for d in days}]
        assert len(runs) == 3, runs
        for run in runs:
            finished = airflow.wait(run["dag_run_id"])
            states = airflow.task_states(run["dag_run_id"])
            assert finished["state"] == "success", states
            assert states["register"] == "success" and states["deploy"] == "skipped", states
        return {
            day.isoformat(): json.loads(
                (airflow.home / "home" / "artifacts" / "ctr" / day.isoformat() / "stages" / "train.json").read_text()
            )["model_sha256"]
            for day in days
        }, result.stdout

    # For people: `make backfill` follows the runs to their end and prints the registry.
    first, printed = backfill("make", "backfill", "MODEL=ctr", f"FROM={BACKFILL[0]}", f"TO={BACKFILL[1]}")
    assert "keiko_ctr backfill 2026-11-18..2026-11-20: 3/3 runs finished {'success': 3} done" in printed
    # The days run side by side (the backfill's max_active_runs): version numbers follow no day order.
    history = sorted((v for v in store.list("ctr") if v.ds != DS), key=lambda v: v.ds)
    assert [(v.ds, v.status) for v in history] == [(d.isoformat(), "historical") for d in days]
    assert {v.ds: v.artifact_sha256 for v in history} == first
    assert all(v.trigger["run_type"] == "backfill" for v in history)
    assert store.alias("ctr") == production
    for day in days:
        assert not (airflow.home / "home" / "artifacts" / "ctr" / day.isoformat() / "deploy.json").exists()

    # Airflow's own command, as in the issue; the days ran already, so they are reprocessed.
    again, _ = backfill(
        AIRFLOW, "backfill", "create", "--dag-id", "keiko_ctr", "--from-date", BACKFILL[0],
        "--to-date", f"{BACKFILL[1]}T23:59:59", "--reprocess-behavior", "completed",
    )  # fmt: skip
    assert again == first  # same data, code and params: the same bytes
    assert store.list("ctr") == sorted([store.get("ctr", production), *history], key=lambda v: v.version)  # no new
    assert store.alias("ctr") == production


def test_a_failed_run_alerts_the_webhook_and_links_its_run_page(airflow, webhook):
    _, received = webhook
    response = airflow.trigger(FAILING_DS, {"reason": "on-call drill"})
    assert response.status_code == 200, response.text
    run_id = response.json()["dag_run_id"]
    assert airflow.wait(run_id)["state"] == "failed"
    assert airflow.task_states(run_id)["gate_raw"] == "failed"

    deadline = time.monotonic() + 120  # the run's alert comes from the DAG processor, a little later
    while len([m for m in received if m["run_id"] == run_id]) < 2 and time.monotonic() < deadline:
        time.sleep(1)
    alerts = {m["kind"]: m for m in received if m["run_id"] == run_id}
    assert alerts.keys() == {"task failed", "run failed"}, received
    page = f"{airflow.url}/keiko/runs/ctr/{FAILING_DS}/"
    for alert in alerts.values():
        assert (alert["model"], alert["ds"], alert["task"], alert["run_page"]) == ("ctr", FAILING_DS, "gate_raw", page)
        assert alert["reason"].startswith("gate_raw failed") and "impression_id" in alert["reason"]
        assert alert["text"].startswith(f"keiko ctr {FAILING_DS}: ")

    links = airflow.client.get(f"/api/v2/dags/keiko_ctr/dagRuns/{run_id}/taskInstances/gate_raw/links").json()
    assert links["extra_links"] == {"Run page": page}
    report = airflow.client.get(page)
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "gate_raw" in report.text and "impression_id" in report.text
    assert httpx.get(page).status_code == 401  # the page is Airflow's: no token, no page


# --- waiting for data, late runs, the production Asset ------------------------------------------------------


def trigger(airflow: Airflow, dag_id: str, logical_date: str, conf: dict) -> str:
    response = airflow.client.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": logical_date, "conf": conf})
    assert response.status_code == 200, response.text
    return response.json()["dag_run_id"]


def task_instance(airflow: Airflow, dag_id: str, run_id: str, task_id: str) -> dict:
    return airflow.client.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}").json()


def task_log(airflow: Airflow, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
    response = airflow.client.get(
        f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
        params={"full_content": True},
        headers={"Accept": "application/json"},
    )
    content = response.json().get("content", [])
    return "\n".join(e.get("event", "") if isinstance(e, dict) else str(e) for e in content)


def until(what: str, check, timeout: float, every: float = 2):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(every)
    return found


def test_a_default_date_trigger_waits_deferred_for_its_data_then_fails_in_one_line(airflow, webhook):
    """The form's logical date is now, past the data: wait_for_data says within a minute what it waits for, in the
    triggerer (deferred), the run-late alert comes at cvr's deadline, and at the wait's end one line, no retries."""
    _, received = webhook
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    run_id = trigger(airflow, "keiko_cvr", now.isoformat().replace("+00:00", "Z"), {})
    day = now.date().isoformat()

    def waiting() -> str | None:
        ti = task_instance(airflow, "keiko_cvr", run_id, "wait_for_data")
        text = task_log(airflow, "keiko_cvr", run_id, "wait_for_data") if ti.get("state") == "deferred" else ""
        return text if "waiting for partitions" in text else None

    log = until("wait_for_data deferred, saying what it waits for", waiting, timeout=60)
    after_the_data = (END_DATE + dt.timedelta(days=1)).isoformat()
    assert re.search(rf"waiting for partitions clicks/dt={after_the_data}, .* missing; data window \S+\.\.{day}\)", log)
    assert "for up to 0.03 h" in log  # the project's cvr model.yaml (fixture): run.wait_for_data_hours

    late = until("the run-late alert", lambda: [m for m in received if m["kind"] == "run late"], timeout=120)
    assert (late[0]["model"], late[0]["ds"], late[0]["run_id"]) == ("cvr", day, run_id)
    assert "not finished 0.01 h after it was queued" in late[0]["reason"]

    def ended() -> str | None:
        state = airflow.client.get(f"/api/v2/dags/keiko_cvr/dagRuns/{run_id}").json()["state"]
        return state if state in ("success", "failed") else None

    assert until("the run's end", ended, timeout=300) == "failed"
    ti = task_instance(airflow, "keiko_cvr", run_id, "wait_for_data")
    assert ti["state"] == "failed" and ti["try_number"] == 1  # a timeout is final
    log = task_log(airflow, "keiko_cvr", run_id, "wait_for_data")
    assert "wait_for_data: " in log and " partitions still missing after 0.03 h: clicks/dt=" in log, log[-2000:]
    assert task_instance(airflow, "keiko_cvr", run_id, "extract")["state"] == "upstream_failed"

    def failure_alerts() -> dict | None:
        sent = {m["kind"]: m for m in received if m["run_id"] == run_id}
        return sent if {"task failed", "run failed"} <= sent.keys() else None

    alerts = until("the failure alerts", failure_alerts, timeout=120)
    assert alerts["task failed"]["task"] == "wait_for_data"
    assert "partitions still missing" in alerts["task failed"]["reason"]
    # Its run page, `keiko why` and `keiko status` name it: wait_for_data records its failure as the steps do.
    page = airflow.client.get(alerts["run failed"]["run_page"])
    assert page.status_code == 200 and "failed at wait_for_data" in page.text
    assert "partitions still missing" in page.text


def test_a_logged_out_browser_is_sent_to_the_login_page_and_back(airflow):
    page = f"{airflow.url}/keiko/runs/ctr/{DS}/"
    response = httpx.get(page, headers={"Accept": "text/html"}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/auth/login?next=")
    login = httpx.get(f"{airflow.url}{response.headers['location']}")
    assert login.status_code == 200 and "text/html" in login.headers["content-type"]


def backfill_process(airflow: Airflow, first: str, last: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["make", "backfill", "MODEL=ctr", f"FROM={first}", f"TO={last}"],
        env=airflow.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )  # fmt: skip


def active_backfill(airflow: Airflow) -> subprocess.CompletedProcess:
    command = [str(Path(AIRFLOW).parent / "python"), "-m", "keiko.oncall.backfill", "active", "--model", "ctr"]
    return subprocess.run(command, env=airflow.env, capture_output=True, text=True, timeout=120)


def test_a_backfill_day_without_its_data_shows_what_it_waits_for_fails_and_blocks_nothing(airflow):
    day = (END_DATE + dt.timedelta(days=1)).isoformat()
    process = backfill_process(airflow, day, day)
    printed, _ = process.communicate(timeout=600)
    assert process.returncode != 0, printed
    waiting = (
        f"  {day} running: wait_for_data deferred, waiting for clicks/dt={day}, impressions/dt={day} (2 of 16 missing)"
    )
    assert waiting in printed, printed
    assert f"  {day} failed: failed at wait_for_data: " in printed, printed
    assert "backfill: some days failed (above)" in printed
    assert active_backfill(airflow).returncode == 0  # complete: the next backfill may start


def test_ctrl_c_on_make_backfill_cancels_the_backfill(airflow):
    day = (END_DATE + dt.timedelta(days=2)).isoformat()
    process = backfill_process(airflow, day, day)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "waiting for" in line:
            break
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: the signal to the foreground process group
    rest, _ = process.communicate(timeout=120)
    assert process.returncode in (-signal.SIGINT, 2, 130), "".join(lines) + rest
    assert "cancelled backfill" in rest
    assert active_backfill(airflow).returncode == 0


def test_a_deploy_publishes_the_production_asset_a_dag_scheduled_on_it_runs_and_rollback_reverts(airflow, manual_run):
    from keiko.serving.client import ModelServerClient

    store, served = registry(airflow), []

    def published() -> list[dict]:
        events = airflow.client.get("/api/v2/assets/events", params={"source_dag_id": "keiko_ctr"}).json()
        return sorted(events["asset_events"], key=lambda event: event["timestamp"])

    before = len(published())
    # The manual run's version, now deployed (unless an earlier test's run deployed it already: then nothing moves),
    # then DS retrained with model.yaml's params: a new version, deployed as a scheduled run deploys it. (The
    # backfill's days are registered as history, which never serves.) 02:00 of DS has its run already, hence 03:00
    # and 04:00.
    again = {**manual_run[0], "deploy": "force"}
    previous = store.alias("ctr")
    for logical_date, conf in ((f"{DS}T03:00:00Z", again), (f"{DS}T04:00:00Z", {"reason": "operations drill"})):
        run_id = trigger(airflow, "keiko_ctr", logical_date, conf)
        assert airflow.wait(run_id)["state"] == "success", airflow.task_states(run_id)
        served.append(store.alias("ctr"))
    assert served[0] != served[1]

    # An event for each move of production, and none for a deploy that moved nothing.
    moves = [v for v, last in zip(served, [previous, *served], strict=False) if v != last]
    events = published()[before:]
    assert [e["uri"] for e in events] == ["keiko://ctr/production"] * len(moves)
    assert [e["extra"]["version"] for e in events] == moves  # each deploy's result is its event's extra
    assert events[-1]["extra"]["previous_version"] == served[0]

    # The DAG scheduled on it has the events queued: its run starts on the scheduler's next loop where the schedule is
    # on (here it is off, `[scheduler] use_job_schedule = False`, which holds asset-triggered runs back as well).
    queued = airflow.client.get("/api/v2/dags/follows_ctr_production/assets/queuedEvents").json()["queued_events"]
    assert [event["asset_id"] for event in queued] == [events[-1]["asset_id"]], queued

    rollback = subprocess.run(
        [str(Path(AIRFLOW).parent / "keiko"), "rollback", "ctr", "--reason", "operations drill"],
        env=airflow.env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert rollback.returncode == 0, rollback.stdout + rollback.stderr
    assert store.alias("ctr") == served[0]
    for url in airflow.env["KEIKO_SERVING_URLS_CTR"].split(","):
        with ModelServerClient(url) as server:
            assert server.version()["version"] == served[0]


def test_a_canary_a_person_approves_in_the_airflow_ui_is_promoted(airflow, manual_run):
    """A forced deploy as a canary: after its step passes, approve_promotion (Airflow's HITLOperator) waits for a
    person; the answer given through the REST API (what the UI's Required actions sends) is what promote applies."""
    import threading

    store = registry(airflow)
    # Production the manual run's version (window 9, 5 epochs), whatever the tests before left; the canary is DS
    # retrained with model.yaml's params, another version.
    (manual,) = [v for v in store.list("ctr") if v.trigger.get("reason") == manual_run[0]["reason"]]
    if store.alias("ctr") != manual.version:
        keiko = str(Path(AIRFLOW).parent / "keiko")
        back = [keiko, "rollback", "ctr", "--to", str(manual.version), "--reason", "approval drill"]
        assert subprocess.run(back, env=airflow.env, capture_output=True, timeout=300).returncode == 0
    before = store.alias("ctr")
    stop = threading.Event()

    def traffic() -> None:  # days of traffic through the replicas, once they serve the canary
        url = airflow.env["KEIKO_SERVING_URLS_CTR"].split(",")[0]
        while not stop.is_set() and httpx.get(f"{url}/version").json()["canary"] is None:
            time.sleep(1)
        day = END_DATE + dt.timedelta(days=1)
        while not stop.is_set():
            command = [str(Path(AIRFLOW).parent / "keiko"), "traffic", "--model", "ctr", "--day", day.isoformat()]
            subprocess.run([*command, "--rows", "3000"], env=airflow.env, capture_output=True, timeout=300)
            day += dt.timedelta(days=1)

    feeding = threading.Thread(target=traffic, daemon=True)
    feeding.start()
    conf = {"deploy_strategy": "canary", "deploy": "force", "reason": "approval drill"}
    run_id = trigger(airflow, "keiko_ctr", f"{DS}T05:00:00Z", conf)
    details = f"/api/v2/dags/keiko_ctr/dagRuns/{run_id}/taskInstances/approve_promotion/-1/hitlDetails"
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while (asked := airflow.client.get(details)).status_code != 200:
            states = airflow.task_states(run_id)
            assert "failed" not in states.values() and time.monotonic() < deadline, states
            time.sleep(2)
    finally:
        stop.set()
    asked = asked.json()
    candidate = registry(airflow).get("ctr", int(re.search(r"promote v(\d+)", asked["subject"])[1]))
    assert asked["subject"] == f"ctr: promote v{candidate.version} over v{before}?" and candidate.version != before
    assert asked["options"] == ["Promote", "Keep stable"] and "the run asked deploy=force" in asked["body"]
    assert "verdict: PASS" in asked["body"] and asked["response_received"] is False
    assert store.alias("ctr") == before  # nothing moves while a person decides

    answered = airflow.client.patch(details, json={"chosen_options": ["Promote"]})
    assert answered.status_code == 200, answered.text
    assert airflow.wait(run_id)["state"] == "success", airflow.task_states(run_id)
    states = airflow.task_states(run_id)
    assert (states["canary"], states["approve_promotion"], states["promote"]) == ("success",) * 3
    assert store.alias("ctr") == candidate.version
    why = subprocess.run(
        [str(Path(AIRFLOW).parent / "keiko"), "why", "ctr", DS], env=airflow.env, capture_output=True, text=True
    ).stdout
    assert f"PROMOTED: v{candidate.version} became production" in why, why
