"""Airflow on this machine in its two shapes, started for one KEIKO_HOME and stopped on exit: the stack
(scripts/stack.sh, `make stack`: PostgreSQL, Redis, CeleryExecutor, a process per component, the model servers)
and `airflow standalone` (`make airflow`: SQLite, LocalExecutor, one process tree).

Used by tests/e2e/test_airflow_operations.py and bench/airflow_stack.py; it imports nothing of the tests'
conftest, so that the benchmark can use it as it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
STACK = ROOT / "scripts" / "stack.sh"
AIRFLOW = str(ROOT / ".venv" / "bin" / "airflow") if (ROOT / ".venv" / "bin" / "airflow").exists() else "airflow"
# The stack's own listening ports (scripts/stack.sh): each gets a free one, so that a stack can run beside
# `make stack`, `make airflow` or another test session's stack.
STACK_PORTS = (
    "STACK_POSTGRES_PORT", "STACK_REDIS_PORT", "STACK_API_PORT", "STACK_SCHEDULER_HEALTH_PORT",
    "STACK_WORKER_LOG_PORT", "STACK_TRIGGERER_LOG_PORT",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Running:
    """A running Airflow: its URL, the environment its components have (for the CLI and keiko's settings), and
    how long it took to answer."""

    url: str
    env: dict[str, str]
    startup_seconds: float
    output: str  # what starting it printed (the stack's timings)


def reachable_root(prefix: str) -> Path:
    """A new folder for a stack's KEIKO_HOME that the stack's PostgreSQL can reach.

    As root, PostgreSQL runs as the `postgres` user (it refuses root), which must be able to walk down to its data
    folder; pytest's temporary folders are under /tmp/pytest-of-<user>, mode 0700. This one is in the system's
    temporary folder, mode 0711: others may pass through, not list it. The caller removes it."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o711)
    return root


def read_stack_env(path: Path) -> dict[str, str]:
    """stack.env's `export NAME=<bash-quoted value>` lines as a dict."""
    found = {}
    for line in path.read_text().splitlines():
        name, _, quoted = line.removeprefix("export ").partition("=")
        (found[name],) = shlex.split(quoted) or [""]
    return found


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return f"\n--- {path.name} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def stack(home: Path, env: dict[str, str], *, replicas: int = 1) -> Iterator[Running]:
    """`scripts/stack.sh up` for KEIKO_HOME=`home`, every port a free one and `replicas` model-server replicas per
    model; `env` is the caller's environment (its AIRFLOW_* and KEIKO_* settings reach every component, and win
    over deploy/airflow.env). `scripts/stack.sh down` on exit, also when `up` failed half-way."""
    from keiko.modeldef import model_names

    env = {**env, "KEIKO_HOME": str(home), "STACK_SERVE_REPLICAS": str(replicas)}
    env.update({name: str(free_port()) for name in STACK_PORTS})
    env.update({f"STACK_SERVE_PORT_{model.upper()}": str(free_port()) for model in model_names()})
    started = time.monotonic()
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(_stack_down, env)
        up = subprocess.run([str(STACK), "up"], env=env, capture_output=True, text=True, timeout=600)
        seconds = time.monotonic() - started
        if up.returncode != 0:
            logs = "".join(_tail(p) for p in sorted((home / "stack" / "logs").glob("*.log")))
            raise RuntimeError(f"scripts/stack.sh up failed ({up.returncode}):\n{up.stdout}{up.stderr}{logs}")
        components = {**env, **read_stack_env(home / "stack" / "stack.env")}
        yield Running(components["AIRFLOW__API__BASE_URL"], components, seconds, up.stdout)


def _stack_down(env: dict[str, str]) -> None:
    down = subprocess.run([str(STACK), "down"], env=env, capture_output=True, text=True, timeout=300)
    if down.returncode != 0:
        raise RuntimeError(f"scripts/stack.sh down failed ({down.returncode}):\n{down.stdout}{down.stderr}")


@contextlib.contextmanager
def standalone(airflow_home: Path, env: dict[str, str]) -> Iterator[Running]:
    """`airflow standalone` (scheduler, DAG processor, triggerer, API server, LocalExecutor on SQLite) in
    `airflow_home`, its API on a free port; `env` as for stack(). Up once the API answers; stopped on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **env,
        "PATH": f"{Path(AIRFLOW).parent}{os.pathsep}{env['PATH']}",  # standalone starts `airflow ...`
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
    }
    airflow_home.mkdir(parents=True, exist_ok=True)
    log_path = airflow_home / "standalone.log"
    started = time.monotonic()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [AIRFLOW, "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = started + 300
            while True:
                assert process.poll() is None, _tail(log_path, 60)
                try:
                    if httpx.get(f"{url}/api/v2/version", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, _tail(log_path, 60)
                time.sleep(1)
            yield Running(url, env, time.monotonic() - started, "")
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def operations_env(root: Path, warehouse: Path, password: str, alerts_url: str | None = None) -> dict[str, str]:
    """What the operations tests and the benchmark run Airflow with, in either shape: this process's environment,
    KEIKO_HOME=`root`/home reading `warehouse`, the login admin / `password` (its password file in `root`), DAGs
    unpaused and the schedule off (only the runs one starts exist), and failure alerts to `alerts_url`. The DAGs
    and plugins are this checkout's, without Airflow's examples, as the Makefile exports them."""
    (root / "passwords.json").write_text(json.dumps({"admin": password}))
    env = {
        **os.environ,
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "KEIKO_HOME": str(root / "home"),
        "KEIKO_WAREHOUSE_DIR": str(warehouse),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(root / "passwords.json"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    }
    if alerts_url:
        env["AIRFLOW_CONN_KEIKO_ALERTS"] = json.dumps({"conn_type": "http", "host": alerts_url})
    return env
