"""docker-compose.yaml and the Dockerfile, checked without a Docker engine (there is none here).

The compose file is validated against the Compose Specification's JSON schema (the copy check-jsonschema
ships, from PyPI), then
checked for what a user would notice: the official Airflow 3 services with their upstream commands and
dependencies, keiko's settings spelled as keiko reads them, model servers running the Deployment's command
at the addresses deploy uses, and one image built from ./Dockerfile for all of them. The Dockerfile is
parsed by a small parser below: its Airflow version is the lock's, and it installs the lock, the package,
include/ and dags/ and ends as a non-root user.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from keiko.config import SETTINGS
from keiko.modeldef import model_names

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
IMAGE = "keiko:latest"
PROJECT_DIR = "/opt/keiko"

# The official Airflow 3 docker-compose.yaml (apache/airflow, airflow-core/docs/howto/docker-compose/): its
# always-on services and their commands (None: the image's own).
OFFICIAL_SERVICES = {
    "postgres": None,
    "redis": None,
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-worker": "celery worker",
    "airflow-triggerer": "triggerer",
    "airflow-init": None,
}
AIRFLOW_SERVICES = [name for name in OFFICIAL_SERVICES if name.startswith("airflow-")]
HEALTHY, COMPLETED = "service_healthy", "service_completed_successfully"
# depends_on as upstream has it, for the long-running Airflow components.
UPSTREAM_DEPENDS_ON = {
    "airflow-apiserver": {"redis": HEALTHY, "postgres": HEALTHY, "airflow-init": COMPLETED},
    "airflow-scheduler": {"redis": HEALTHY, "postgres": HEALTHY, "airflow-init": COMPLETED},
    "airflow-dag-processor": {"redis": HEALTHY, "postgres": HEALTHY, "airflow-init": COMPLETED},
    "airflow-triggerer": {"redis": HEALTHY, "postgres": HEALTHY, "airflow-init": COMPLETED},
    "airflow-worker": {
        "redis": HEALTHY,
        "postgres": HEALTHY,
        "airflow-apiserver": HEALTHY,
        "airflow-init": COMPLETED,
    },
}


# --- compose helpers ---------------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value, env: dict[str, str] | None = None):
    """Compose's variable interpolation, recursively, with `env` as the shell environment (default: empty,
    so `${VAR:-default}` gives its default): what `docker compose config` would show."""
    env = env or {}
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.group(1) or match.group(4), match.group(2), match.group(3)
        current = env.get(name)
        if operator in (":-", "-"):
            use_default = current is None or (operator == ":-" and current == "")
            return argument if use_default else current
        if operator in (":?", "?"):
            raise AssertionError(f"${{{name}{operator}{argument}}}: a required variable")
        return current or ""

    return _VARIABLE.sub(replace, value)


def load_compose() -> dict:
    # safe_load resolves the anchors and `<<:` merge keys, as Compose does.
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def raw_compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def compose(raw_compose) -> dict:
    """The compose file as `docker compose config` would see it with no variables set."""
    return interpolate(raw_compose)


def env_files(service: dict) -> list[Path]:
    """The service's `env_file:` entries (a path, a list of paths or of {path: ...}), relative to the project."""
    found = service.get("env_file") or []
    found = [found] if isinstance(found, str) else found
    return [ROOT / (entry if isinstance(entry, str) else entry["path"]) for entry in found]


def read_env_file(path: Path) -> dict[str, str]:
    """An env file as Compose reads deploy/airflow.env: NAME=value lines, `#` comment lines, blank lines. The
    file keeps to what Compose and bash read alike: no quotes, `$` or inline comments (test_stack_settings.py)."""
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            found[name.strip()] = value
    return found


def own_environment(service: dict) -> dict[str, str]:
    """The service's `environment:` alone."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def environment(service: dict) -> dict[str, str]:
    """The environment the service's container gets: its env files in order, then `environment:` over them."""
    env: dict[str, str] = {}
    for path in env_files(service):
        env.update(read_env_file(path))
    return {**env, **own_environment(service)}


def words(value) -> list[str]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else shlex.split(value)


def invocation(service: dict) -> list[str]:
    """Entrypoint then command, as set here (an empty part means the image's own)."""
    return [*words(service.get("entrypoint")), *words(service.get("command"))]


def depends_on(service: dict) -> dict[str, str]:
    found = service.get("depends_on") or {}
    if isinstance(found, list):
        return dict.fromkeys(found, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in found.items()}


def model_servers(compose: dict) -> dict[str, dict]:
    """Services that run `keiko serve`."""
    found = {}
    for name, service in compose["services"].items():
        run = invocation(service)
        if any(run[i : i + 2] == ["keiko", "serve"] for i in range(len(run))):
            found[name] = service
    return found


def serve_arguments(service: dict) -> dict[str, str]:
    words_ = invocation(service)
    start = words_.index("serve")
    assert words_[start - 1] == "keiko", words_
    arguments = words_[start + 1 :]
    return dict(zip(arguments[::2], arguments[1::2], strict=True))


def published_ports(service: dict) -> dict[int, int]:
    """{host port: container port} of the short `ports` syntax."""
    ports = {}
    for spec in service.get("ports") or []:
        host, _, container = str(spec).rpartition(":")
        ports[int(host.rpartition(":")[2] or container)] = int(container)
    return ports


# --- the schema --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict:
    """compose-spec/compose-spec's schema/compose-spec.json, as check-jsonschema vendors it (pinned in the lock)."""
    from importlib.resources import files

    return json.loads((files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json").read_text())


@pytest.fixture(scope="module")
def validator(schema) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema)  # the draft the schema declares (2020-12)
    cls.check_schema(schema)
    return cls(schema)


def schema_errors(validator, document: dict) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]


def test_the_compose_file_is_valid_against_the_compose_specification(validator, raw_compose, compose):
    assert schema_errors(validator, raw_compose) == []
    assert schema_errors(validator, compose) == []  # and once the variables are substituted


def _ports_as_a_string(doc: dict) -> None:
    doc["services"]["airflow-apiserver"]["ports"] = "8080"


def _unknown_top_level_key(doc: dict) -> None:
    doc["service"] = {"oops": {"image": IMAGE}}


def _misspelled_condition(doc: dict) -> None:
    doc["services"]["airflow-worker"]["depends_on"]["redis"]["condition"] = "service_healty"


def _unknown_service_key(doc: dict) -> None:
    doc["services"]["keiko-ctr-server-1"]["healthcheck"]["test_command"] = ["CMD", "true"]


def _restart_is_a_boolean(doc: dict) -> None:
    doc["services"]["minio"]["restart"] = True


@pytest.mark.parametrize(
    ("breakage", "where"),
    [
        (_ports_as_a_string, "services/airflow-apiserver/ports"),
        (_unknown_top_level_key, "<root>"),
        (_misspelled_condition, "services/airflow-worker/depends_on"),
        (_unknown_service_key, "services/keiko-ctr-server-1/healthcheck"),
        (_restart_is_a_boolean, "services/minio/restart"),
    ],
    ids=lambda value: getattr(value, "__name__", "")[1:] or None,
)
def test_the_validation_rejects_a_broken_copy(validator, compose, breakage, where):
    broken = copy.deepcopy(compose)
    breakage(broken)
    errors = schema_errors(validator, broken)
    assert errors, f"{breakage.__name__} was accepted"
    assert any(error.startswith(where) for error in errors), errors


# --- what a user would notice ------------------------------------------------------------------------------


def test_every_official_airflow_service_is_there_with_its_upstream_command(compose):
    services = compose["services"]
    missing = set(OFFICIAL_SERVICES) - set(services)
    assert not missing, f"missing from docker-compose.yaml: {sorted(missing)}"
    for name, command in OFFICIAL_SERVICES.items():
        if command is not None:
            assert services[name].get("command") == command, name
            assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
            assert services[name].get("restart") == "always", name
    assert environment(services["airflow-worker"])["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert services["airflow-init"]["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


@pytest.mark.parametrize("name", sorted(UPSTREAM_DEPENDS_ON))
def test_airflow_services_wait_for_what_upstream_waits_for(compose, name):
    found = depends_on(compose["services"][name])
    for dependency, condition in UPSTREAM_DEPENDS_ON[name].items():
        assert found.get(dependency) == condition, f"{name} depends_on {dependency}: {found.get(dependency)}"


def test_every_depends_on_names_a_service_that_can_satisfy_it(compose):
    services = compose["services"]
    for name, service in services.items():
        for dependency, condition in depends_on(service).items():
            assert dependency in services, f"{name} depends on {dependency!r}, which is not a service"
            target = services[dependency]
            if condition == HEALTHY:
                assert target.get("healthcheck", {}).get("test"), f"{name} waits for {dependency}'s healthcheck"
            elif condition == COMPLETED:
                assert target.get("restart", "no") == "no", f"{name} waits for {dependency} to exit"
                assert not target.get("profiles"), f"{name} waits for {dependency}, which is behind a profile"
            else:
                assert condition == "service_started", f"{name}: {condition}"
    # and no cycle: every service can start
    started: set[str] = set()
    while len(started) < len(services):
        ready = {n for n, s in services.items() if n not in started and set(depends_on(s)) <= started}
        assert ready, f"depends_on cycle among {sorted(set(services) - started)}"
        started |= ready


def test_every_keiko_variable_is_a_known_setting(compose):
    # KEIKO_SERVING_URLS_<MODEL> is a pattern
    known = [re.compile(re.sub(r"<[A-Z]+>", "[A-Z0-9_]+", setting.env)) for setting in SETTINGS]
    seen = set()
    for name, service in compose["services"].items():
        for variable in environment(service):
            if variable.startswith("KEIKO_"):
                seen.add(variable)
                assert any(p.fullmatch(variable) for p in known), f"{name}: {variable} is not in keiko.config.SETTINGS"
    # what the brief of the stack asks for is set at all
    assert {"KEIKO_ARTIFACT_ROOT", "KEIKO_REGISTRY_URL", "KEIKO_AWS_CONN_ID", "KEIKO_SERVING_URLS_CTR"} <= seen
    assert {"KEIKO_ADMIN_TOKEN", "KEIKO_STAGE_RUNNER", "KEIKO_DEPLOY_BACKEND", "KEIKO_WAREHOUSE_DIR"} <= seen


def test_keiko_reads_the_worker_settings_as_meant(compose, monkeypatch):
    """The Celery worker runs the stages: keiko's own settings() must read its environment as intended."""
    from keiko.config import settings
    from keiko.modeldef import load_model

    # from this checkout's include/, before the environment changes
    servings = {name: load_model(name).config.serving for name in model_names()}
    worker = compose["services"]["airflow-worker"]
    for variable in [v for v in os.environ if v.startswith("KEIKO_")]:
        monkeypatch.delenv(variable)
    for variable, value in environment(worker).items():
        if variable.startswith("KEIKO_"):
            monkeypatch.setenv(variable, value)
    config = settings()
    assert (config.stage_runner, config.deploy_backend, config.warehouse) == ("local", "local", "duckdb")
    assert config.artifact_root == "s3://keiko-artifacts/keiko"
    assert urlsplit(config.registry_url).hostname == "postgres"

    servers = model_servers(compose)
    addressed = set()
    for model, serving in servings.items():
        urls = config.serving_urls(model, serving.port, serving.replicas)
        assert len(urls) >= serving.replicas, f"{model} {urls}: fewer than model.yaml's {serving.replicas} replicas"
        for url in urls:
            parts = urlsplit(url)
            assert parts.hostname in servers, f"{url}: no model-server service {parts.hostname!r}"
            arguments = serve_arguments(servers[parts.hostname])
            assert arguments["--model"] == model, f"{url} serves {arguments['--model']}, not {model}"
            assert int(arguments["--port"]) == parts.port, f"{url}: the server listens on {arguments['--port']}"
            addressed.add(parts.hostname)
    assert set(servers) == addressed, "a model server deploy would never move"


def kubernetes_server(model: str) -> dict:
    """The model-server container of `model`'s Deployment in deploy/k8s/, with the pod's security context."""
    path = ROOT / "deploy" / "k8s" / f"{model}-server.yaml"
    deployment = next(d for d in yaml.safe_load_all(path.read_text()) if d["kind"] == "Deployment")
    container = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "model-server")
    pod = deployment["spec"]["template"]["spec"].get("securityContext", {})
    return {**container, "security": {**pod, **container.get("securityContext", {})}}


def test_model_servers_run_the_kubernetes_command_and_are_reachable(compose):
    servers = model_servers(compose)
    assert {serve_arguments(s)["--model"] for s in servers.values()} == set(model_names()), sorted(servers)
    host_ports = []
    for name, service in servers.items():
        container = kubernetes_server(serve_arguments(service)["--model"])
        security = container["security"]
        run = invocation(service)
        # The image's /entrypoint would prefix `airflow`: the servers replace it (dumb-init only).
        assert run[: -len(container["command"])] in ([], ["/usr/bin/dumb-init", "--"]), f"{name}: {run}"
        assert run[-len(container["command"]) :] == container["command"], f"{name} runs {run}"
        assert service["image"] == container["image"] == IMAGE
        assert environment(service).get("KEIKO_ADMIN_TOKEN"), f"{name}: --host 0.0.0.0 needs KEIKO_ADMIN_TOKEN"
        assert service.get("healthcheck", {}).get("test"), name
        # as the Deployment runs it, so a permission problem shows up here first
        if "runAsUser" in security:
            assert service.get("user") == f"{security['runAsUser']}:{security.get('runAsGroup', 0)}", name
        assert service.get("read_only", False) == security.get("readOnlyRootFilesystem", False), name
        container_port = int(serve_arguments(service)["--port"])
        assert container_port in published_ports(service).values(), f"{name}: {container_port} is not published"
        grpc_port = int(serve_arguments(service)["--grpc-port"])
        assert grpc_port in published_ports(service).values(), f"{name}: gRPC {grpc_port} is not published"
        host_ports += list(published_ports(service))
    assert len(host_ports) == len(set(host_ports)), f"two services publish the same host port: {host_ports}"


def test_one_image_built_here_runs_airflow_and_the_model_servers(compose):
    services = compose["services"]
    built = {name: s for name, s in services.items() if "build" in s}
    for name, service in built.items():
        context = service["build"] if isinstance(service["build"], str) else service["build"].get("context", ".")
        dockerfile = "Dockerfile" if isinstance(service["build"], str) else service["build"].get("dockerfile")
        assert (context, dockerfile or "Dockerfile") == (".", "Dockerfile"), name
        assert service.get("image") == IMAGE, f"{name} builds ./Dockerfile but tags it {service.get('image')}"
    users = [*AIRFLOW_SERVICES, *model_servers(compose)]
    for name in users:
        assert services[name].get("image") == IMAGE and name in built, f"{name} does not run the image built here"
    images = {s.get("image") for s in services.values()}
    for image in images - {IMAGE}:
        assert ":" in image and not image.endswith(":latest"), f"{image} is not pinned"


def test_the_minio_connection_matches_the_store_and_the_bucket(compose):
    services = compose["services"]
    worker = environment(services["airflow-worker"])
    conn_id = worker["KEIKO_AWS_CONN_ID"]
    for name, service in services.items():
        env = environment(service)
        if "KEIKO_AWS_CONN_ID" in env:
            assert f"AIRFLOW_CONN_{env['KEIKO_AWS_CONN_ID'].upper()}" in env, f"{name} has no such connection"
    connection = json.loads(worker[f"AIRFLOW_CONN_{conn_id.upper()}"])
    minio = environment(services["minio"])
    assert connection["conn_type"] == "aws"
    assert (connection["login"], connection["password"]) == (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])
    endpoint = urlsplit(connection["extra"]["endpoint_url"])
    assert (endpoint.hostname, endpoint.port) == ("minio", 9000)
    bucket = urlsplit(worker["KEIKO_ARTIFACT_ROOT"]).netloc
    assert invocation(services["minio-init"])[-1] == f"minio/{bucket}", "minio-init creates another bucket"
    mc_host = urlsplit(environment(services["minio-init"])["MC_HOST_minio"])
    assert (mc_host.username, mc_host.password) == (connection["login"], connection["password"])
    assert mc_host.hostname == "minio"


def test_the_warehouse_volume_reaches_the_synth_and_the_worker(compose):
    services = compose["services"]
    directory = environment(services["airflow-worker"])["KEIKO_WAREHOUSE_DIR"]
    for name in ("keiko-synth", "airflow-worker"):
        mounts = {str(v).split(":")[1] for v in services[name].get("volumes", [])}
        assert directory in mounts, f"{name} does not mount {directory}"
    assert "keiko synth" in invocation(services["keiko-synth"])[-1]


def test_the_minio_connection_reaches_an_s3_api(compose, moto_endpoint, monkeypatch):
    """The connection as written, with moto's S3 server in MinIO's place (an S3 API on loopback): the
    amazon provider takes its credentials and endpoint, and keiko's s3fs filesystem writes under the
    artifact root through it, as the stages and the model servers will."""
    from keiko.aws import aws_client, s3_filesystem

    worker = environment(compose["services"]["airflow-worker"])
    conn_id = worker["KEIKO_AWS_CONN_ID"]
    connection = json.loads(worker[f"AIRFLOW_CONN_{conn_id.upper()}"])
    connection["extra"]["endpoint_url"] = moto_endpoint
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))

    root = urlsplit(worker["KEIKO_ARTIFACT_ROOT"])
    bucket, key = root.netloc, f"{root.path.strip('/')}/compose-check-{uuid.uuid4().hex}.txt"
    s3 = aws_client("s3", conn_id)
    if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=bucket)  # what minio-init does
    s3fs = s3_filesystem(conn_id)
    s3fs.pipe(f"{bucket}/{key}", b"written through the compose connection")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"written through the compose connection"


# --- the Dockerfile ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    name: str  # upper case
    value: str  # the rest of the logical line, continuations joined
    line: int

    @property
    def flags(self) -> dict[str, str]:
        return dict(re.findall(r"(?:^|\s)--([a-z-]+)=(\S+)", self.value))

    @property
    def operands(self) -> list[str]:
        """Arguments after the --flags; JSON (exec) form as written."""
        rest = re.sub(r"(?:^|\s)--[a-z-]+=\S+", " ", self.value).strip()
        return json.loads(rest) if rest.startswith("[") else shlex.split(rest)


def parse_dockerfile(text: str) -> list[Instruction]:
    """Dockerfile instructions: comment lines dropped (also inside continuations, as Docker does), lines
    ending in the escape character joined. Heredocs are not supported (and not used)."""
    instructions, pending, start = [], "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#") or (not line.strip() and not pending):
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical = (pending + line).strip()
        pending = ""
        name, _, value = logical.partition(" ")
        assert "<<" not in value or name.upper() != "RUN", f"line {start}: heredocs are not parsed here"
        instructions.append(Instruction(name.upper(), value.strip(), start))
    assert not pending, "the Dockerfile ends inside a continuation"
    return instructions


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def of(dockerfile: list[Instruction], name: str) -> list[Instruction]:
    return [i for i in dockerfile if i.name == name]


def copies(dockerfile: list[Instruction]) -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context."""
    found = []
    for instruction in of(dockerfile, "COPY"):
        assert "from" not in instruction.flags, "single stage: every COPY is from the build context"
        *sources, destination = instruction.operands
        found.append((sources, destination))
    return found


def copied_to(dockerfile: list[Instruction], source: str) -> str:
    """Where the build-context path `source` lands in the image."""
    for sources, destination in copies(dockerfile):
        for candidate in sources:
            if candidate.rstrip("/") == source.rstrip("/"):
                if destination.endswith("/") and len(sources) == 1 and not Path(ROOT / source).is_dir():
                    return destination + Path(source).name
                return destination.rstrip("/") or "/"
    raise AssertionError(f"the Dockerfile does not COPY {source}")


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell script, split at `&&`, `||`, `;`, `|` and braces."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in {"&&", "||", ";", "|", "{", "}"}:
            commands, current = [*commands, current] if current else commands, []
        else:
            current.append(token)
    return [*commands, current] if current else commands


def pip_installs(dockerfile: list[Instruction]) -> list[list[str]]:
    """The argument lists of every `pip install` in a RUN."""
    return [
        argv[2:]
        for instruction in of(dockerfile, "RUN")
        for argv in shell_commands(instruction.value)
        if argv[:2] == ["pip", "install"]
    ]


def lock_pin(package: str) -> str:
    match = re.search(rf"^{re.escape(package)}==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert match, f"requirements.txt does not pin {package}"
    return match.group(1)


def test_the_base_image_is_the_locked_airflow_on_the_locked_python(dockerfile):
    (base,) = of(dockerfile, "FROM")
    image, _, tag = base.operands[0].partition(":")
    assert image == "apache/airflow", image
    match = re.fullmatch(r"(\d+\.\d+\.\d+)-python(\d+\.\d+)", tag)
    assert match, f"FROM {base.operands[0]}: not a pinned apache/airflow:<version>-python<x.y> tag"
    assert match.group(1) == lock_pin("apache-airflow"), "the FROM tag and requirements.txt disagree on Airflow"
    assert f"apache-airflow=={match.group(1)}" in (ROOT / "requirements.in").read_text().splitlines()
    lock_python = re.search(r"--python(?:-version)? (\d+\.\d+)", (ROOT / "requirements.txt").read_text())
    assert match.group(2) == lock_python.group(1), "the image's Python is not the one the lock was resolved for"


def test_the_lock_is_copied_and_installed_without_moving_airflow(dockerfile):
    destination = copied_to(dockerfile, "requirements.txt")
    installs = [argv for argv in pip_installs(dockerfile) if "-r" in argv]
    assert installs, "no `pip install -r`"
    (argv,) = installs
    assert argv[argv.index("-r") + 1] == destination
    assert "--no-cache-dir" in argv
    # requirements.txt pins apache-airflow; the install names the base image's version again, as the
    # official image's docs do, so the resolver cannot move it.
    assert any(re.fullmatch(r"apache-airflow==(\$\{?AIRFLOW_VERSION\}?|[\d.]+)", a) for a in argv), argv
    assert not {"-c", "--constraint", "-e", "--editable", "--user"} & set(argv)


def test_the_package_include_and_dags_are_in_the_image(dockerfile):
    assert copied_to(dockerfile, "include/") == f"{PROJECT_DIR}/include"
    assert copied_to(dockerfile, "dags/") == f"{PROJECT_DIR}/dags"
    # The package: pyproject.toml and plugins/keiko side by side, installed from there, not editable.
    pyproject = Path(copied_to(dockerfile, "pyproject.toml"))
    assert copied_to(dockerfile, "plugins/keiko") == str(pyproject.parent / "plugins" / "keiko")
    installs = [argv for argv in pip_installs(dockerfile) if str(pyproject.parent) in argv]
    assert installs, f"the package copied to {pyproject.parent} is never pip-installed"
    for argv in installs:
        assert not {"-e", "--editable"} & set(argv), "the package is installed editable"
    env = {}
    for instruction in of(dockerfile, "ENV"):
        env.update(dict(re.findall(r"(\w+)=(\S+)", instruction.value)))
    assert env["KEIKO_PROJECT_DIR"] == PROJECT_DIR
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == f"{PROJECT_DIR}/dags"


def test_the_image_ends_as_a_non_root_user_with_airflows_entrypoint(dockerfile):
    users = of(dockerfile, "USER")
    assert users, "no USER: the base image's would apply, but say it"
    user = users[-1].operands[0].split(":")[0]
    assert user not in {"root", "0"}, f"the image ends as {users[-1].value}"
    assert user.isdigit(), "numeric, so that Kubernetes' runAsNonRoot can check it"
    # The official entrypoint stays: the Airflow components need it, the other uses replace it.
    assert not of(dockerfile, "ENTRYPOINT") and not of(dockerfile, "CMD")


# --- .dockerignore -----------------------------------------------------------------------------------------


def _dockerignore_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex on slash-separated paths."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _dockerignore_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            verdict = not negated
    return verdict


def test_the_build_context_is_only_what_the_image_needs(dockerfile):
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    for path in (".venv/bin/python", ".keiko/registry.db", ".git/HEAD", "tests/deploy/test_compose.py",
                 ".pytest_cache/v", "plugins/keiko.egg-info/PKG-INFO", "plugins/keiko/__pycache__/cli.cpython-311.pyc",
                 "bench/out/x.json", "docker-compose.yaml"):  # fmt: skip
        assert ignored(path, patterns), f"{path} would be sent to the Docker daemon"
    for sources, _destination in copies(dockerfile):
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"COPY {source}: not in the repository"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            for file in files:
                relative = file.relative_to(ROOT).as_posix()
                if "__pycache__" in relative:
                    continue
                assert not ignored(relative, patterns), f"COPY {source}: .dockerignore leaves out {relative}"


def test_the_image_ships_the_data_docs_assets_the_makefile_installs(dockerfile):
    """keiko.gates.data_docs needs bootstrap-table in pods too: the same version and bytes as `make install`."""
    makefile = dict(
        re.findall(r"^(BOOTSTRAP_TABLE_(?:VERSION|SHA512)) := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    )
    args = dict(i.value.split("=", 1) for i in of(dockerfile, "ARG") if i.value.startswith("BOOTSTRAP_TABLE_"))
    assert args == makefile and len(args) == 2
    (run,) = [i for i in of(dockerfile, "RUN") if "bootstrap-table" in i.value]
    assert "sha512sum --check" in run.value and "python -c 'import sys; print(sys.prefix)')/share/keiko" in run.value
