"""Benchmark: one keiko_ctr DAG run's wall time on the stack (`make stack`: CeleryExecutor, PostgreSQL, Redis, a
process per Airflow component) and on `airflow standalone` (`make airflow`: LocalExecutor, SQLite), and the
stack's start-up time.

The two shapes take turns (stack, standalone, stack, standalone, ...), so that a drift of this shared machine
reaches both. Each round starts its shape in a fresh KEIKO_HOME (empty registry, no artifacts) reading one
synthetic warehouse written at the start, waits until keiko_ctr is parsed, triggers the same run through the REST
API (ds 2026-11-21, `deploy: skip`: standalone has no model servers), times trigger -> success, and stops it.
Start-up is until every component is healthy (the stack: `scripts/stack.sh up` returned; standalone: its API
answers), then until keiko_ctr is parsed.

    .venv/bin/python bench/airflow_stack.py                 # 2 rounds each, ~12 minutes; writes bench/RESULTS.md
    .venv/bin/python bench/airflow_stack.py --rounds 3 --no-write
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

from airflow_shapes import operations_env, reachable_root, stack, standalone  # noqa: E402
from pipeline import CODE_DIRS, git_state, machine, write_section  # noqa: E402

DS = dt.date(2026, 11, 21)
PASSWORD = "keiko-bench-password"
CONF = {"deploy": "skip", "reason": "bench/airflow_stack.py"}
RUN_TIMEOUT = 900
SHAPES = ("stack", "standalone")


@dataclass
class Round:
    shape: str
    number: int
    healthy_s: float  # the shape's start until every component answered
    parsed_s: float  # ... until keiko_ctr was parsed
    run_s: float  # trigger -> success
    tasks_s: float  # the run's task instances' own durations, summed
    first_task_s: float  # trigger -> the first task started
    state: str


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each shape (default 2)")
    parser.add_argument("--rows-per-day", type=int, default=30_000, help="synthetic impressions a day (30,000)")
    parser.add_argument("--days", type=int, default=9, help="days of warehouse ending 2026-11-21 (9: ctr's window)")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md")
    parser.add_argument("--no-write", action="store_true", help="print the section, do not write RESULTS.md")
    return parser.parse_args(argv)


def client(url: str, deadline: float) -> httpx.Client:
    """Logged in as admin, once keiko_ctr is parsed."""
    session = httpx.Client(base_url=url, timeout=30)
    while True:
        try:
            token = session.post("/auth/token", json={"username": "admin", "password": PASSWORD})
            if token.is_success:  # 201 Created
                session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
                if session.get("/api/v2/dags/keiko_ctr").status_code == 200:
                    return session
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url}: keiko_ctr was not parsed in time")
        time.sleep(0.5)


def timed_run(session: httpx.Client) -> tuple[float, float, float, str]:
    """Trigger the run; (trigger -> end, the tasks' own seconds, trigger -> first task start, state)."""
    triggered = time.monotonic()
    response = session.post("/api/v2/dags/keiko_ctr/dagRuns", json={"logical_date": f"{DS}T02:00:00Z", "conf": CONF})
    response.raise_for_status()
    run_id = response.json()["dag_run_id"]
    while True:
        run = session.get(f"/api/v2/dags/keiko_ctr/dagRuns/{run_id}").json()
        if run["state"] in ("success", "failed"):
            break
        if time.monotonic() - triggered > RUN_TIMEOUT:
            raise SystemExit(f"{run_id} did not finish within {RUN_TIMEOUT} s")
        time.sleep(0.5)
    wall = time.monotonic() - triggered
    tasks = session.get(f"/api/v2/dags/keiko_ctr/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    own = sum(t["duration"] or 0.0 for t in tasks)
    starts = [dt.datetime.fromisoformat(t["start_date"]) for t in tasks if t["start_date"]]
    queued = dt.datetime.fromisoformat(run["queued_at"])
    first = (min(starts) - queued).total_seconds() if starts else float("nan")
    return wall, own, first, run["state"]


def one_round(shape: str, number: int, warehouse: Path) -> Round:
    root = reachable_root(f"keiko-bench-{shape}-")
    try:
        env = operations_env(root, warehouse, PASSWORD)
        started = time.monotonic()
        running = stack(root / "home", env) if shape == "stack" else standalone(root / "airflow", env)
        with running as shape_up:
            healthy = shape_up.startup_seconds
            session = client(shape_up.url, started + 300)
            parsed = time.monotonic() - started
            wall, own, first, state = timed_run(session)
        result = Round(shape, number, healthy, parsed, wall, own, first, state)
        print(
            f"  {shape} round {number}: healthy {healthy:.1f} s, parsed {parsed:.1f} s, run {wall:.1f} s ({state}), "
            f"tasks {own:.1f} s, first task after {first:.1f} s",
            flush=True,
        )
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def code_state() -> str:
    """The commit, and how many files of the code differ from it (their names are in pipeline.py's git_state)."""
    state = git_state()
    commit, _, changes = state.partition(", uncommitted changes in ")
    count = len(changes.split(", ")) if changes else 0
    return commit + (f", {count} files of {', '.join(CODE_DIRS)} with uncommitted changes" if count else "")


def median(rounds: list[Round], field: str, shape: str) -> float:
    return statistics.median(getattr(r, field) for r in rounds if r.shape == shape)


def report(args: argparse.Namespace, rounds: list[Round], info: dict[str, str], started: str) -> str:
    lines = [
        "## Airflow: the stack against standalone",
        "",
        f"`.venv/bin/python bench/airflow_stack.py --rounds {args.rounds} --rows-per-day {args.rows_per_day} "
        f"--days {args.days}` ({started}; {info['nproc']} cores, {info['cpu']}, load {info['load_start']} at start, "
        f"{info['load_end']} at end; {info['code']}).",
        "",
        f"One keiko_ctr run of {DS} (`{CONF}`) on {args.days} days x {args.rows_per_day:,} synthetic impressions, "
        "triggered through the REST API in a fresh KEIKO_HOME each round; the shapes took turns in this order. "
        "stack: `scripts/stack.sh up` (PostgreSQL, Redis, api-server, scheduler, dag-processor, triggerer, one "
        "Celery worker of concurrency 2, the model servers); standalone: `airflow standalone` (LocalExecutor, SQLite). "
        "Healthy: from the start until every component answered (the stack's `up` returned; standalone's API "
        "answered); parsed: until keiko_ctr could be triggered; run: trigger -> success; tasks: the task "
        "instances' own durations summed; first task: the run's queued time -> its first task's start.",
        "",
        "| round | shape | healthy s | parsed s | run s | tasks s | run - tasks s | first task s | state |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rounds:
        lines.append(
            f"| {r.number} | {r.shape} | {r.healthy_s:.1f} | {r.parsed_s:.1f} | {r.run_s:.1f} | {r.tasks_s:.1f} "
            f"| {r.run_s - r.tasks_s:.1f} | {r.first_task_s:.1f} | {r.state} |"
        )
    medians = {
        shape: {f: median(rounds, f, shape) for f in ("healthy_s", "parsed_s", "run_s", "tasks_s")} for shape in SHAPES
    }
    stack_m, alone_m = medians["stack"], medians["standalone"]
    lines += [
        "",
        f"- Medians over {args.rounds} rounds each: the run took **{stack_m['run_s']:.1f} s on the stack** and "
        f"**{alone_m['run_s']:.1f} s on standalone** ({stack_m['run_s'] / alone_m['run_s']:.2f}x); the tasks' own "
        f"seconds {stack_m['tasks_s']:.1f} against {alone_m['tasks_s']:.1f}.",
        f"- Start-up: the stack was healthy after **{stack_m['healthy_s']:.1f} s** and keiko_ctr parsed after "
        f"{stack_m['parsed_s']:.1f} s; standalone's API answered after {alone_m['healthy_s']:.1f} s, keiko_ctr "
        f"parsed after {alone_m['parsed_s']:.1f} s.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from keiko.synth import write_warehouse

    info = machine()
    info["load_start"], info["code"] = info["load"], code_state()
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    data = reachable_root("keiko-bench-warehouse-")
    try:
        print(f"== warehouse: {args.days} days x {args.rows_per_day:,} rows ending {DS}", flush=True)
        write_warehouse(data / "warehouse", DS, args.days, args.rows_per_day, progress=lambda _msg: None)
        rounds = []
        for number in range(1, args.rounds + 1):
            for shape in SHAPES:
                print(f"== {shape}, round {number}", flush=True)
                rounds.append(one_round(shape, number, data / "warehouse"))
    finally:
        shutil.rmtree(data, ignore_errors=True)
    info["load_end"] = machine()["load"]
    section = report(args, rounds, info, started)
    print("\n" + section)
    if not args.no_write:
        write_section(args.results, "airflow-stack", section)
        print(f"\nwritten to {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
