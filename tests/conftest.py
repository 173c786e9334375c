"""Shared fixtures: an isolated Airflow home, a small synthetic warehouse and one pipeline run.

Airflow writes airflow.cfg into AIRFLOW_HOME on first import, so the environment is set here,
before any test module imports airflow.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="keiko-tests-"))
os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["KEIKO_HOME"] = str(_SESSION_DIR / "default-home")
os.environ.pop("KEIKO_PROJECT_DIR", None)

END_DATE = dt.date(2026, 11, 21)
DS = END_DATE.isoformat()
ROWS_PER_DAY = 30_000
DAYS = 9  # ctr's 8-day window for DS and for the day before it (history tests)
UP_TO_REGISTER = (
    "extract", "gate_raw", "features", "gate_features", "train", "gate_training",
    "evaluate", "gate_evaluation", "register",
)  # fmt: skip


@pytest.fixture(scope="session")
def warehouse_dir() -> Path:
    from keiko.synth import write_warehouse

    directory = _SESSION_DIR / "warehouse"
    write_warehouse(directory, END_DATE, DAYS, ROWS_PER_DAY, seed=7, progress=lambda _msg: None)
    return directory


class RegistryClock:
    """The registry's lease clock (keiko.registry.now_ms), moved by a test instead of by waiting: a lease's
    expiry then never depends on how fast this machine is."""

    def __init__(self) -> None:
        self.ms = time.time_ns() // 1_000_000

    def __call__(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> None:
        self.ms += int(seconds * 1000)


@pytest.fixture
def registry_clock(monkeypatch: pytest.MonkeyPatch) -> RegistryClock:
    import keiko.registry
    import keiko.registry.dynamodb
    import keiko.registry.sql

    clock = RegistryClock()
    for module in (keiko.registry, keiko.registry.sql, keiko.registry.dynamodb):  # each imported the name
        monkeypatch.setattr(module, "now_ms", clock)
    return clock


def use_home(patch: pytest.MonkeyPatch, home: Path, warehouse_dir: Path) -> None:
    """Point keiko at `home`, reading the shared session warehouse; model servers log their answers under
    `home` (`served/predictions`), so no test adds a table to the shared warehouse."""
    patch.setenv("KEIKO_HOME", str(home))
    patch.setenv("KEIKO_WAREHOUSE_DIR", str(warehouse_dir))
    patch.setenv("KEIKO_PREDICTION_LOG_URL", (home / "served" / "predictions").as_uri())


@pytest.fixture
def keiko_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warehouse_dir: Path) -> Path:
    """An empty KEIKO_HOME (artifacts, registry) reading the shared session warehouse."""
    home = tmp_path / "home"
    use_home(monkeypatch, home, warehouse_dir)
    return home


def run_step(step: str, ds: str = DS, model: str = "ctr") -> int:
    """Run one pipeline step in-process, named as its DAG task ("extract", "gate_raw", ...); its exit code."""
    from keiko.cli import main

    kind, name = ("gate", step.removeprefix("gate_")) if step.startswith("gate_") else ("stage", step)
    return main([kind, name, "--model", model, "--ds", ds])


def run_steps(*steps: str, ds: str = DS, model: str = "ctr") -> None:
    for step in steps:
        code = run_step(step, ds, model)
        assert code == 0, f"{step} exited {code}"


@pytest.fixture(scope="session")
def pipeline_home(warehouse_dir: Path) -> Path:
    """A home where extract..register, gates included, ran once for DS (v1 registered, nothing deployed)."""
    home = _SESSION_DIR / "pipeline-home"
    with pytest.MonkeyPatch.context() as patch:
        use_home(patch, home, warehouse_dir)
        run_steps(*UP_TO_REGISTER)
    return home


def copy_home(source: Path, target: Path) -> Path:
    """Copy a KEIKO_HOME; artifact URIs in its registry and step results are absolute, so point them at the copy."""
    from sqlalchemy import create_engine, text

    shutil.copytree(source, target)
    for result in target.glob("artifacts/*/*/*/*.json"):  # stages/<stage>.json, gates/<suite>.json, steps/...
        result.write_text(result.read_text().replace(source.as_uri(), target.as_uri()))
    engine = create_engine(f"sqlite:///{target / 'registry.db'}")
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE model_versions SET artifact_uri = replace(artifact_uri, :old, :new)"),
            {"old": source.as_uri(), "new": target.as_uri()},
        )
    engine.dispose()
    return target


@pytest.fixture
def run_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pipeline_home: Path, warehouse_dir: Path) -> Path:
    """A private copy of `pipeline_home` (tests may change its registry and artifacts)."""
    home = copy_home(pipeline_home, tmp_path / "home")
    use_home(monkeypatch, home, warehouse_dir)
    return home


@pytest.fixture
def one_row(run_home) -> list[dict]:
    """One request row of ctr's test day (as /predict takes it)."""
    from keiko.stages.context import StageContext
    from keiko.summary import sample_rows

    return sample_rows(StageContext.create("ctr", dt.date.fromisoformat(DS)), n=1)


@pytest.fixture
def project_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of include/ that a test may edit; KEIKO_PROJECT_DIR points at it."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "include", project / "include")
    monkeypatch.setenv("KEIKO_PROJECT_DIR", str(project))
    return project


# Test tiers: the fixtures that put a test in one (pytest resolves fixtures transitively); the others are
# marked in their modules. `fast` is every test in none of them.
FIXTURE_TIERS = {"pipeline_home": "pipeline", "moto_endpoint": "aws", "redis_server": "server"}
HEAVY_TIERS = ("pipeline", "aws", "server", "browser", "slow")


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, tier in FIXTURE_TIERS.items():
            if fixture in item.fixturenames:
                item.add_marker(tier)
        if not any(item.get_closest_marker(tier) for tier in HEAVY_TIERS):
            item.add_marker("fast")


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@contextlib.contextmanager
def serve_in_thread(app, **config):
    """Run an ASGI app with uvicorn on a free loopback port (`config`: more uvicorn.Config arguments, such as
    http="h11"); yields its base URL."""
    import uvicorn

    class _Server(uvicorn.Server):
        def install_signal_handlers(self):  # not the main thread
            pass

    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def schemathesis_run(url: str, max_examples: int = 25) -> subprocess.CompletedProcess:
    """schemathesis' every check against the live server at `url`, from its own /openapi.json (the checks, their
    exceptions and why, in tests/integration/schemathesis.toml); its output is the failure message."""
    config = ROOT / "tests" / "integration" / "schemathesis.toml"
    return subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(config), "run",
         f"{url}/openapi.json", "--max-examples", str(max_examples), "--workers", "1",
         "--seed", "7"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@contextlib.contextmanager
def webhook_receiver():
    """A loopback HTTP server that keeps the JSON body of every POST; yields (its URL, the bodies)."""
    import http.server

    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/keiko", received
    finally:
        server.shutdown()


@contextlib.contextmanager
def serve_replicas(count: int, model: str = "ctr"):
    """`count` model-server replicas of `model` in threads; yields (apps, urls)."""
    from keiko.serving.app import create_app

    apps = [create_app(model) for _ in range(count)]
    with contextlib.ExitStack() as stack:
        yield apps, [stack.enter_context(serve_in_thread(app)) for app in apps]


def serving(urls: list[str]) -> list[tuple[int, int | None]]:
    """(version, canary version or None) each model server at `urls` reports."""
    from keiko.serving.client import ModelServerClient

    answers = []
    for url in urls:
        with ModelServerClient(url) as server:
            status = server.version()
        answers.append((status["version"], status["canary"] and status["canary"]["version"]))
    return answers


def v1_bytes(model: str = "ctr") -> bytes:
    """The artifact of `model`'s v1 in the current KEIKO_HOME."""
    from keiko.config import settings
    from keiko.registry import open_registry
    from keiko.storage import open_store

    v1 = open_registry(settings().registry_url).get(model, 1)
    return open_store(settings()).read_bytes(v1.artifact_uri)


def register_variant(artifact: bytes, *, sha256: str | None = None, window_start: str, model: str = "ctr") -> int:
    """Another version of `model` whose artifact is `artifact` (and, to break it, a sha256 that is not its own)."""
    from keiko.config import settings
    from keiko.registry import open_registry

    registry = open_registry(settings().registry_url)
    v1 = registry.get(model, 1)
    path = settings().home / "artifacts" / model / "variants" / f"{window_start}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(artifact)
    fields = {k: getattr(v1, k) for k in ("ds", "window_end", "code_version", "config_sha256", "features_sha256")}
    registration = registry.register(
        model=model,
        window_start=window_start,
        artifact_uri=path.as_uri(),
        artifact_sha256=sha256 or hashlib.sha256(artifact).hexdigest(),
        algorithm=v1.algorithm,
        metrics=v1.metrics,
        **fields,
    )
    # A window_start equal to v1's would be v1's identity: registration is idempotent, no new version.
    assert registration.created, f"window_start {window_start} gives v1's identity: pick another"
    return registration.version.version


def candidate_day(ds: str, version: int) -> str:
    """A run of `ds` whose register step recorded `version`: a copy of DS's run directory (golden set
    included), which is what `keiko stage deploy --ds <ds>` deploys. For variants of v1 (register_variant
    with v1's artifact), whose known answers are v1's."""
    from keiko.config import settings
    from keiko.contract import RegisterResult, RunLayout
    from keiko.registry import open_registry
    from keiko.storage import open_store

    artifacts = settings().home / "artifacts" / "ctr"
    shutil.copytree(artifacts / DS, artifacts / ds)
    entry = open_registry(settings().registry_url).get("ctr", version)
    RunLayout(open_store(settings()), "ctr", ds).write_result(
        RegisterResult(version=version, status=entry.status, created=True, artifact_sha256=entry.artifact_sha256)
    )
    return ds


def kill_a_writer_mid_write(target: Path) -> Path:
    """What a writer SIGKILLed mid-write leaves: a real `keiko.atomic.write_atomically` of `target`, in a
    process killed after writing its temporary file and before renaming it; that file's path."""
    script = f"""if True:
        import os, signal
        from pathlib import Path
        from keiko.atomic import write_atomically

        def write_then_die(temp):
            temp.write_bytes(b"half of a file")
            os.kill(os.getpid(), signal.SIGKILL)

        write_atomically(Path({str(target)!r}), write_then_die)
    """
    before = set(target.parent.glob(".tmp-*"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr
    (left,) = set(target.parent.glob(".tmp-*")) - before
    return left


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _holding(lock: threading.RLock, method):
    @functools.wraps(method)
    def locked(*args, **kwargs):
        with lock:
            return method(*args, **kwargs)

    return locked


def _serialize_moto_dynamodb(patch: pytest.MonkeyPatch) -> None:
    """Every operation of moto's DynamoDB backend under one lock.

    moto's ThreadedMotoServer serves each request in its own thread, and DynamoDBBackend takes no lock
    (moto 5.2.5, moto/dynamodb/models/__init__.py): transact_write_items evaluates each condition and
    then writes, so two transactions putting the same key with attribute_not_exists(pk) can both
    commit; and a cancelled transaction rolls back by restoring deep copies of its tables taken when
    it started, erasing what other requests committed meanwhile. Real DynamoDB serializes conflicting
    transactions (the loser is cancelled with ConditionalCheckFailed or TransactionConflict), which is
    what the registry relies on. Reentrant: backend methods call each other.
    """
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    for name, member in list(vars(DynamoDBBackend).items()):
        if not name.startswith("_") and inspect.isfunction(member):
            patch.setattr(DynamoDBBackend, name, _holding(lock, member))


@pytest.fixture(scope="session")
def moto_endpoint():
    """moto in server mode: S3, DynamoDB and Athena as real HTTP APIs on loopback (one per test session).

    Its DynamoDB is serialized as real DynamoDB is (see _serialize_moto_dynamodb)."""
    from moto.server import ThreadedMotoServer

    patch = pytest.MonkeyPatch()
    _serialize_moto_dynamodb(patch)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
    patch.undo()


def start_redis_server(directory: Path) -> tuple[subprocess.Popen, str]:
    """A redis-server (no persistence) on a free loopback port, its files in `directory`, answering PING;
    (the process, its URL). Fails, never skips, if redis-server is not installed."""
    import redis

    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server is not installed: `make stack-packages` installs it")
    log = directory / "redis-server.log"
    for _attempt in range(3):  # a free port may be taken by another process before redis-server binds it
        port = free_port()
        with log.open("w") as output:  # a file, not a pipe nobody reads: a full pipe would block the server
            process = subprocess.Popen(
                [executable, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                 "--dir", str(directory), "--daemonize", "no"],
                stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        deadline = time.monotonic() + 30
        try:
            while process.poll() is None:
                try:
                    if client.ping():
                        return process, f"redis://127.0.0.1:{port}/0"
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    process.kill()
                    pytest.fail(f"redis-server on port {port} did not answer PING within 30 s: {log.read_text()}")
                time.sleep(0.02)
        finally:
            client.close()
        if "in use" not in log.read_text():
            break
    pytest.fail(f"redis-server exited {process.returncode}: {log.read_text()}")


@pytest.fixture(scope="session")
def redis_server():
    """A redis-server of this test session on a free loopback port (no persistence); its URL."""
    directory = Path(tempfile.mkdtemp(prefix="redis-", dir=_SESSION_DIR))
    process, url = start_redis_server(directory)
    yield url
    process.kill()
    process.wait(timeout=10)


AWS_CONN_ID = "keiko_aws"


def aws_connection_env(endpoint: str) -> dict[str, str]:
    """The environment that points keiko at the moto server through the Airflow connection `keiko_aws`.

    Credentials and endpoint live only in the connection, as in production; AWS_* variables that could
    reach a real account are blanked.
    """
    connection = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"region_name": "us-east-1", "endpoint_url": endpoint},
    }
    return {
        f"AIRFLOW_CONN_{AWS_CONN_ID.upper()}": json.dumps(connection),
        "KEIKO_AWS_CONN_ID": AWS_CONN_ID,
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_CONFIG_FILE": "/dev/null",
    }


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> str:
    """This test's keiko talks to the moto server through the Airflow connection `keiko_aws`; its endpoint."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in aws_connection_env(moto_endpoint).items():
        monkeypatch.setenv(name, value)
    return moto_endpoint


AIRFLOW = str(ROOT / ".venv" / "bin" / "airflow") if (ROOT / ".venv" / "bin" / "airflow").exists() else "airflow"


@contextlib.contextmanager
def airflow_and_servers(env: dict[str, str], model: str, replicas: int = 1):
    """Airflow's metadata DB for `env`, and `replicas` `keiko serve` processes of `model` on free loopback
    ports; yields (env with KEIKO_SERVING_URLS_<MODEL> naming them, their URLs). Stopped on exit."""
    import httpx

    urls = [f"http://127.0.0.1:{free_port()}" for _ in range(replicas)]
    served = (Path(env["KEIKO_HOME"]) / "served" / "predictions").as_uri()  # as use_home: not the shared warehouse
    env = {"KEIKO_PREDICTION_LOG_URL": served, **env, f"KEIKO_SERVING_URLS_{model.upper()}": ",".join(urls)}
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    serve = [sys.executable, "-m", "keiko", "serve", "--model", model, "--no-grpc", "--replicas", "1", "--port"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT}
    servers = [subprocess.Popen([*serve, url.rsplit(":", 1)[1]], env=env, **quiet) for url in urls]
    try:
        for url in urls:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"keiko serve --model {model} at {url} did not come up within 60 s")
                time.sleep(0.1)
        yield env, urls
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=10)


def dags_test(env: dict[str, str], model: str) -> str:
    """`airflow dags test keiko_<model> DS`, which must succeed; its output."""
    result = subprocess.run(
        [AIRFLOW, "dags", "test", f"keiko_{model}", DS], env=env, capture_output=True, text=True, timeout=900
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def live_day_then_monitor(env: dict[str, str], model: str, day: dt.date, rows: int, rows_per_request: int) -> str:
    """`keiko traffic` for `day` through the servers `env` names, once every answer is in the prediction log
    (the servers write it every few seconds) `airflow dags test keiko_monitor_<model>` for the run that judges
    `day`, which must succeed; its output."""
    from keiko.modeldef import load_model
    from keiko.warehouse import DuckDBWarehouse

    traffic = [sys.executable, "-m", "keiko", "traffic", "--model", model, "--day", day.isoformat()]
    traffic += ["--rows", str(rows), "--rows-per-request", str(rows_per_request)]
    subprocess.run(traffic, env=env, check=True, capture_output=True, timeout=600)
    warehouse = Path(env["KEIKO_WAREHOUSE_DIR"])
    assert env["KEIKO_PREDICTION_LOG_URL"] == (warehouse / "predictions").as_uri()  # where the monitor reads it

    def logged() -> int:
        if "predictions" not in DuckDBWarehouse(warehouse).tables():
            return 0
        count = f"SELECT count(*) FROM predictions WHERE model = '{model}'"
        return DuckDBWarehouse(warehouse).query(count).column(0)[0].as_py()

    deadline = time.monotonic() + 60
    while logged() < rows:
        assert time.monotonic() < deadline, "the servers did not log every answer within 60 s"
        time.sleep(1)
    run_day = day + dt.timedelta(days=load_model(model).config.monitor_lag_days)
    result = subprocess.run(
        [AIRFLOW, "dags", "test", f"keiko_monitor_{model}", run_day.isoformat()],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output
