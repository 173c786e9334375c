"""docker-compose.yaml and `make stack` (scripts/stack.sh) agree: the settings of deploy/airflow.env reach both,
neither sets one of them again, and what each sets on its own side is the same service at another address.

Nothing is started: the compose file is read as YAML, and the stack's settings are what `scripts/stack.sh env`
prints (the environment `up` gives every component, and writes to stack.env).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from airflow_shapes import read_stack_env
from test_compose import (
    AIRFLOW_SERVICES,
    IMAGE,
    ROOT,
    env_files,
    environment,
    interpolate,
    load_compose,
    own_environment,
)

from keiko.config import SETTINGS
from keiko.modeldef import model_names

SHARED = ROOT / "deploy" / "airflow.env"
STACK = ROOT / "scripts" / "stack.sh"
# What the shared file must hold at least: the settings docker-compose.yaml had in x-airflow-common that are
# neither host names nor paths.
SHARED_AT_LEAST = {
    "AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__AUTH_MANAGER", "AIRFLOW__CELERY__WORKER_CONCURRENCY",
    "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK", "KEIKO_WAREHOUSE", "KEIKO_STAGE_RUNNER", "KEIKO_DEPLOY_BACKEND",
}  # fmt: skip
# A line both Compose and bash read as the same NAME and value: no quotes, spaces, `$`, `#` or backslashes.
PLAIN_LINE = re.compile(r"[A-Z][A-Z0-9_]*=[^\s'\"$#\\]*")
STACK_PORTS = {
    "STACK_POSTGRES_PORT": "15433", "STACK_REDIS_PORT": "16380", "STACK_API_PORT": "18080",
    "STACK_SCHEDULER_HEALTH_PORT": "18974",
}  # fmt: skip


def shared() -> dict[str, str]:
    settings = {}
    for line in SHARED.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            assert name not in settings, f"deploy/airflow.env sets {name} twice"
            settings[name] = value
    return settings


@pytest.fixture(scope="module")
def compose() -> dict:
    return interpolate(load_compose())


def image_services(compose: dict) -> dict[str, dict]:
    """The services that run keiko's image: Airflow's components, the model servers and keiko's one-shots."""
    return {name: s for name, s in compose["services"].items() if s.get("image") == IMAGE}


def stack_env(**variables: str) -> str:
    """What `scripts/stack.sh env` prints, run with nothing of this environment but PATH, HOME and `variables`."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **variables}
    result = subprocess.run([str(STACK), "env"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def parsed(printed: str, folder: Path) -> dict[str, str]:
    """`printed` as stack.env, read back as tests/airflow_shapes.py reads it."""
    path = folder / "stack.env"
    path.write_text(printed)
    return read_stack_env(path)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> dict[str, str]:
    """The stack's settings for a KEIKO_HOME that does not exist (`env` must not create it), on given ports."""
    folder = tmp_path_factory.mktemp("stack-settings")
    printed = stack_env(KEIKO_HOME=str(folder / "home"), **STACK_PORTS)
    assert not (folder / "home").exists(), "`scripts/stack.sh env` wrote into KEIKO_HOME"
    return parsed(printed, folder)


# --- the file --------------------------------------------------------------------------------------------------


def test_the_shared_file_is_plain_lines_of_known_settings():
    for number, line in enumerate(SHARED.read_text().splitlines(), 1):
        if line and not line.startswith("#"):
            assert PLAIN_LINE.fullmatch(line), f"deploy/airflow.env:{number}: {line!r} may read differently in bash"
    settings = shared()
    assert set(settings) >= SHARED_AT_LEAST, sorted(SHARED_AT_LEAST - set(settings))
    known = {setting.env for setting in SETTINGS}
    for name in settings:
        assert name.startswith("AIRFLOW__") or name in known, f"{name}: neither Airflow's nor a keiko setting"
    assert settings["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


# --- docker-compose.yaml ---------------------------------------------------------------------------------------


def test_every_service_of_the_image_reads_the_shared_file(compose):
    services = image_services(compose)
    assert set(AIRFLOW_SERVICES) <= set(services) and {"keiko-init", "keiko-synth"} <= set(services)
    for name, service in services.items():
        assert SHARED in [path.resolve() for path in env_files(service)], f"{name} has no env_file: deploy/airflow.env"
        env = environment(service)
        for setting, value in shared().items():
            assert env[setting] == value, f"{name}: {setting}={env[setting]!r}, deploy/airflow.env: {value!r}"


def test_no_compose_environment_sets_a_shared_setting_again(compose):
    """A service's `environment:` wins over its `env_file:`: none may name a shared setting, whatever the value."""
    for name, service in compose["services"].items():
        again = set(own_environment(service)) & set(shared())
        assert not again, f"{name} sets {sorted(again)} itself: they belong to deploy/airflow.env"


# --- scripts/stack.sh ------------------------------------------------------------------------------------------


def test_the_stack_takes_the_shared_settings_from_the_file(stack):
    for setting, value in shared().items():
        assert stack.get(setting) == value, f"the stack has {setting}={stack.get(setting)!r}, the file {value!r}"
    script = STACK.read_text()
    for setting in shared():
        assert setting not in script, f"scripts/stack.sh names {setting}: it must come from deploy/airflow.env"


def test_a_variable_of_the_callers_environment_wins_over_the_file_as_compose_environment_does(tmp_path):
    printed = stack_env(KEIKO_HOME=str(tmp_path / "home"), AIRFLOW__CELERY__WORKER_CONCURRENCY="3")
    assert parsed(printed, tmp_path)["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "3"


def _same_service(compose_url: str, stack_url: str, host: str, port: int | None) -> None:
    """Both URLs name the same service (scheme, credentials, database or path); compose by its service name,
    the stack on loopback at its own port."""
    ours, theirs = urlsplit(stack_url), urlsplit(compose_url)
    assert (ours.scheme, ours.username, ours.password, ours.path) == (
        theirs.scheme, theirs.username, theirs.password, theirs.path,
    ), (compose_url, stack_url)  # fmt: skip
    assert theirs.hostname == host, compose_url
    assert (ours.hostname, ours.port) == ("127.0.0.1", port), stack_url


def test_what_differs_is_the_same_service_at_the_stacks_address(compose, stack):
    worker = environment(compose["services"]["airflow-worker"])
    pg, redis = int(STACK_PORTS["STACK_POSTGRES_PORT"]), int(STACK_PORTS["STACK_REDIS_PORT"])
    api = int(STACK_PORTS["STACK_API_PORT"])
    for setting, host, port in (
        ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgres", pg),
        ("AIRFLOW__CELERY__RESULT_BACKEND", "postgres", pg),
        ("KEIKO_REGISTRY_URL", "postgres", pg),
        ("AIRFLOW__CELERY__BROKER_URL", "redis", redis),
        ("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "airflow-apiserver", api),
    ):
        _same_service(worker[setting], stack[setting], host, port)
    assert stack["AIRFLOW__API__BASE_URL"] == f"http://127.0.0.1:{api}"
    assert stack["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"] == STACK_PORTS["STACK_SCHEDULER_HEALTH_PORT"]
    # The same login (compose's default user, an admin) and a password file beside Airflow's config.
    assert stack["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == worker["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
    assert stack["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(
        Path(stack["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json"
    )
    assert Path(stack["AIRFLOW_CONFIG"]).parent == Path(stack["AIRFLOW_HOME"])
    # Airflow's own files under KEIKO_HOME/stack, with the stack's data and logs.
    assert Path(stack["AIRFLOW_HOME"]) == Path(stack["KEIKO_HOME"]) / "stack" / "airflow"


def test_the_stack_addresses_every_model_server_it_starts(stack):
    from keiko.modeldef import load_model

    for model in model_names():
        serving = load_model(model).config.serving
        urls = stack[f"KEIKO_SERVING_URLS_{model.upper()}"].split(",")
        assert urls == [f"http://127.0.0.1:{serving.port + i}" for i in range(serving.replicas)], model


def test_stack_env_reads_back_in_bash_as_it_is_parsed_here(tmp_path):
    """stack.env is for bash (scripts/backfill.sh sources it) and for tests/airflow_shapes.py alike."""
    connection = json.dumps({"conn_type": "http", "host": "http://127.0.0.1:9/hooks, x"})
    values = parsed(stack_env(KEIKO_HOME=str(tmp_path / "home"), AIRFLOW_CONN_KEIKO_ALERTS=connection), tmp_path)
    script = f"source {tmp_path / 'stack.env'} && python3 -c 'import json, os; print(json.dumps(dict(os.environ)))'"
    sourced = json.loads(subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout)
    assert values == {name: sourced[name] for name in values}
    assert values["AIRFLOW_CONN_KEIKO_ALERTS"] == connection
    assert values["KEIKO_SERVING_URLS_CTR"].count(",") == 1  # two replicas
