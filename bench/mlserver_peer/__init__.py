"""MLServer 1.7.1 as a peer of keiko's model server: keiko's own model and feature code in an MLServer custom runtime.

The peer answers the Open Inference Protocol (KServe V2): REST `POST /v2/models/<name>/infer` with one input
tensor per field of the feature module's INPUT_SCHEMA, one FP64 output named after the model. It runs in a
virtualenv of its own (ensure_env()): MLServer pins FastAPI below 0.116 and keiko's project pins a newer one,
so the two cannot share the project's .venv. keiko itself is not installed there: PYTHONPATH puts the checkout's
plugins/ on the path, so the peer scores with the very code keiko serves with (the runtime, .runtime, imports
keiko.algorithms and the model's features.py).

This module imports nothing but the standard library, so both the project's .venv (bench/serving.py, which
calls ensure_env() and command()) and the MLServer process (which imports .runtime through this package) can
import it.

    from mlserver_peer import command, ensure_env, oip_body
    ensure_env()                                           # once; a few minutes the first time
    argv, env = command("ctr", artifact, 8711, workdir)    # then Popen(argv, env=env), two ports at once
    httpx.post("http://127.0.0.1:8711/v2/models/ctr/infer", json=oip_body("ctr", rows, schema))
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MLSERVER_VERSION = "1.7.1"
# What keiko's scoring imports in the MLServer process (numpy, pandas and pyarrow through keiko.columns and
# keiko.hashing; catboost, and scipy under it, for cvr) and what both servers run a request through (uvicorn, with
# uvloop and httptools so MLServer's uvicorn, on its "auto" loop and parser, runs what `keiko serve` runs;
# pydantic, which parses MLServer's requests and keiko's; grpcio and protobuf): at requirements.txt's pins.
# FastAPI and Starlette cannot be: MLServer 1.7.1 wants fastapi < 0.116. scikit-learn, msgspec and PyYAML are not
# needed: the runtime imports the feature module by path, not through keiko.modeldef.
PINNED_FROM_PROJECT = (
    "numpy", "pandas", "pyarrow", "catboost", "scipy", "uvicorn", "uvloop", "httptools", "pydantic", "pydantic-core",
    "grpcio", "protobuf",
)  # fmt: skip
ENV_ROOT_VARIABLE = "KEIKO_BENCH_ENVS"
MARKER = ".keiko-bench-env"  # holds the requirements the env was built with: another list, another build
ARTIFACT_VARIABLE = "KEIKO_MLSERVER_ARTIFACT"  # the runtime's fallback when model-settings has no parameters.uri
IMPLEMENTATION = "mlserver_peer.runtime.KeikoRuntime"
# OIP datatypes of INPUT_SCHEMA's kinds: timestamps travel as ISO 8601 strings, as in keiko's /predict JSON.
DATATYPES = {"str": "BYTES", "timestamp": "BYTES", "int": "INT64", "float": "FP64"}
# Settings for throughput, each read off MLServer 1.7.1's source (mlserver/server.py, rest/app.py, rest/server.py)
# for what it switches on the request path. Adaptive batching stays off (max_batch_size 0, model-settings'
# default): see command()'s `batch`.
SERVER_SETTINGS: dict[str, Any] = {
    "debug": False,  # uvicorn's access log off (access_log = debug), FastAPI debug off, log level INFO
    "parallel_workers": 0,  # inference in the server process: no pickling to worker processes and back
    "metrics_endpoint": None,  # no metrics server, no PrometheusMiddleware on every REST request
    "gzip_enabled": False,  # no GZipMiddleware wrapping every response
    "cache_enabled": False,  # (the default) every request is scored: a cache would answer repeats unscored
    "kafka_enabled": False,  # (the default)
    "load_models_at_startup": True,
    "host": "127.0.0.1",
}


def env_path() -> Path:
    """Where the MLServer virtualenv lives: ${KEIKO_BENCH_ENVS:-~/.cache/keiko/bench-envs}/mlserver-1.7.1."""
    root = os.environ.get(ENV_ROOT_VARIABLE) or str(Path.home() / ".cache" / "keiko" / "bench-envs")
    return Path(root).expanduser() / f"mlserver-{MLSERVER_VERSION}"


def project_pins(requirements: Path = REPO / "requirements.txt") -> dict[str, str]:
    """name -> version of every `name==version` line of the project's lock file (lower-case names)."""
    pins = {}
    for line in requirements.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if match:
            pins[match[1].lower().replace("_", "-")] = match[2]
    return pins


def requirements() -> list[str]:
    """What ensure_env() installs: MLServer, and keiko's needs at the project's pins (unpinned if it has none)."""
    pins = project_pins()
    pinned = [f"{name}=={pins[name]}" if name in pins else name for name in PINNED_FROM_PROJECT]
    return [f"mlserver=={MLSERVER_VERSION}", *pinned]


def _pythonpath(workdir: Path | None = None) -> str:
    """keiko from the checkout's plugins/, and this package (by a link in workdir, so that bench/'s scripts,
    serving.py and pipeline.py among them, do not land on MLServer's import path as top-level modules)."""
    paths = [str(REPO / "plugins")]
    if workdir is not None:
        paths.insert(0, str(workdir / "lib"))
    return os.pathsep.join(paths)


def _child_env(env: Path, workdir: Path | None = None) -> dict[str, str]:
    """This process's environment for a child in `env`: its bin/ first, no other virtualenv, no MLSERVER_*
    variables (pydantic-settings would read them into MLServer's settings), keiko on PYTHONPATH."""
    dropped = ("VIRTUAL_ENV", "PYTHONHOME")
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVER_") and k not in dropped}
    return {
        **base,
        "PATH": os.pathsep.join([str(env / "bin"), base.get("PATH", "")]),
        "VIRTUAL_ENV": str(env),
        "PYTHONPATH": _pythonpath(workdir),
        "KEIKO_PROJECT_DIR": base.get("KEIKO_PROJECT_DIR", str(REPO)),
    }


def ensure_env() -> Path:
    """The MLServer virtualenv, made if missing or built from other requirements (a few minutes); else at once.

    A marker file written last holds the requirements: an interrupted build has none and is redone. The check
    at the end imports what the runtime imports, with the PYTHONPATH command() gives it.
    """
    env = env_path()
    wanted = "\n".join(requirements()) + "\n"
    marker = env / MARKER
    if marker.is_file() and marker.read_text() == wanted and (env / "bin" / "mlserver").exists():
        return env
    started = time.monotonic()
    if not (env / "bin" / "python").exists():
        print(f"mlserver peer: creating the virtualenv {env}", flush=True)
        env.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    print(f"mlserver peer: installing {' '.join(requirements())}", flush=True)
    pip = [str(env / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run([*pip, "install", "--quiet", *requirements()], check=True)
    probe = "import catboost, httptools, uvloop, keiko.algorithms.hashed_lr, mlserver_peer.runtime"
    probe_env = {**_child_env(env), "PYTHONPATH": os.pathsep.join([_pythonpath(), str(REPO / "bench")])}
    subprocess.run([str(env / "bin" / "python"), "-c", probe], check=True, env=probe_env)
    marker.write_text(wanted)
    print(f"mlserver peer: virtualenv ready in {time.monotonic() - started:.0f} s", flush=True)
    return env


_HANDED_OUT: set[int] = set()  # free_port()'s answers so far: never the same one twice in a process


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS's pick): for MLServer's gRPC server, which 1.7.1 always starts.
    The OS may pick a port again once its socket is closed, so one already handed out is not handed out again:
    two instances started one after the other do not get the same one before either has bound it."""
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def features_path(model: str) -> Path:
    """The model's feature module, as keiko.modeldef finds it (its model.yaml's `features`, features.py if unset)."""
    directory = Path(os.environ.get("KEIKO_PROJECT_DIR") or REPO) / "include" / "models" / model
    match = re.search(r"^features:\s*['\"]?([^'\"\s#]+)", (directory / "model.yaml").read_text(), re.MULTILINE)
    return directory / (match[1] if match else "features.py")


def write_settings(
    model: str, artifact: Path, port: int, workdir: Path, grpc_port: int, batch: tuple[int, float] | None = None
) -> None:
    """MLServer's settings.json (server) and <model>/model-settings.json (the runtime, the artifact) in workdir."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = {
        **SERVER_SETTINGS,
        "http_port": port,
        "grpc_port": grpc_port,
        "model_repository_root": str(workdir),
        # Only used with parallel workers or custom environments; kept out of the caller's cwd all the same.
        "metrics_dir": str(workdir / ".metrics"),
        "environments_dir": str(workdir / ".envs"),
    }
    (workdir / "settings.json").write_text(json.dumps(server, indent=2) + "\n")
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    model_settings = {
        "name": model,
        "implementation": IMPLEMENTATION,
        "parameters": {
            "uri": str(artifact.resolve()),
            "version": digest[:12],
            "extra": {"features": str(features_path(model)), "artifact_sha256": digest},
        },
    }
    if batch is not None:
        model_settings["max_batch_size"], model_settings["max_batch_time"] = batch
    (workdir / model).mkdir(exist_ok=True)
    (workdir / model / "model-settings.json").write_text(json.dumps(model_settings, indent=2) + "\n")
    link = workdir / "lib" / "mlserver_peer"
    link.parent.mkdir(exist_ok=True)
    if not link.exists():
        link.symlink_to(Path(__file__).resolve().parent, target_is_directory=True)


def command(
    model: str,
    artifact: Path,
    port: int,
    workdir: Path,
    *,
    grpc_port: int | None = None,
    batch: tuple[int, float] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of one MLServer process serving `model` from `artifact` on HTTP `port`.

    Writes its settings into `workdir` (one workdir per instance). The only other port it opens is gRPC's
    (MLServer 1.7.1 has no switch to turn it off): `grpc_port`, else a free one the OS picks now, so two
    instances on p and p + 1 never share one. No metrics port: the metrics server is off. The argv runs
    through `env -C workdir`, so MLServer's working directory is workdir whatever the caller's: MLServer puts
    "." on sys.path and reads a ".env" file from it. The environment is complete (for Popen(env=...)).

    `batch`: (max_batch_size, max_batch_time in seconds) turns on MLServer's adaptive batching, its counterpart
    of keiko's micro-batching (cvr); off by default, since it waits up to max_batch_time for a batch to fill
    and the row scorer (ctr) gains nothing from batches.
    """
    env = env_path()
    if not (env / MARKER).is_file():
        raise RuntimeError(f"no MLServer virtualenv at {env}: call mlserver_peer.ensure_env() first")
    workdir = workdir.resolve()
    write_settings(model, artifact, port, workdir, grpc_port or free_port(), batch)
    argv = ["env", "-C", str(workdir), str(env / "bin" / "mlserver"), "start", str(workdir)]
    return argv, _child_env(env, workdir)


def oip_value(value: Any, kind: str) -> Any:
    """A row's value as OIP JSON holds it: timestamps as ISO 8601 strings (keiko's /predict JSON takes the same)."""
    if kind == "timestamp" and isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def oip_body(
    model_name: str,
    rows: Sequence[Mapping[str, Any]],
    schema: Mapping[str, str],
    extra: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An OIP (KServe V2) JSON inference request for `rows`: one input tensor of shape [n] per field of
    `schema` (INPUT_SCHEMA order), then one per field of `extra` ({name: kind}, e.g. {"user_id": "int"}: fields
    a server wants beside the features, such as the prediction log's ids); it asks for the output named
    `model_name`, which is what the peer answers and what keiko's OIP endpoint is to answer."""
    fields = {**schema, **(extra or {})}
    inputs = [
        {"name": name, "shape": [len(rows)], "datatype": DATATYPES[kind],
         "data": [oip_value(row[name], kind) for row in rows]}
        for name, kind in fields.items()
    ]  # fmt: skip
    return {"inputs": inputs, "outputs": [{"name": model_name}]}


def write_oip_bodies(
    model_name: str,
    rows: Sequence[Mapping[str, Any]],
    schema: Mapping[str, str],
    path: Path,
    extra: Mapping[str, str] | None = None,
) -> Path:
    """One single-row OIP JSON body per line at `path`, for wrk's Lua script to cycle (as bench/serving.py's
    golden_requests() writes /predict bodies): each request a different auction."""
    lines = (json.dumps(oip_body(model_name, [row], schema, extra), separators=(",", ":")) + "\n" for row in rows)
    path.write_text("".join(lines))
    return path


__all__ = [
    "DATATYPES",
    "MLSERVER_VERSION",
    "SERVER_SETTINGS",
    "command",
    "ensure_env",
    "env_path",
    "oip_body",
    "write_oip_bodies",
]
