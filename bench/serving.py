"""Benchmark of the model server: keiko's /predict and the Open Inference Protocol beside MLServer and baselines.

What it measures, in one run on this machine, the servers interleaved (`--rounds` turns of the compared ones):

* servers, each as two single-process replicas on two ports (one process per core, as `keiko serve --replicas 2`
  runs them; on Kubernetes, pods with one CPU behind the Service):
  - `keiko`: `keiko serve` with the production ctr model (hashed LR: per-row weight lookups), POST /predict;
  - `keiko-uvicorn`: the same app under plain uvicorn (`--http httptools`): an ASGI cycle a request and a
    response's head and body as two socket writes, where keiko.serving.http_protocol answers /predict without
    ASGI in one write: what that protocol gains;
  - `keiko-v2-rest`, `keiko-v2-grpc`: `keiko serve` answering the Open Inference Protocol, over REST (JSON
    tensors) and over gRPC (h2load, bench/grpc_load.py);
  - `mlserver`: MLServer 1.7.1 with keiko's own model and feature code as its custom runtime, tuned
    (bench/mlserver_peer: its own virtualenv, never the project's), over its OIP REST;
  - `ctr-unlogged`: `keiko serve` with model.yaml's `serving.prediction_log.enabled: false` (a copy of
    include/ with that one change): what the prediction log costs;
  - `ceiling`: a bare ASGI app answering a fixed body under keiko's own uvicorn setup (its protocol, which
    answers any other app through ASGI, in one write): the most an ASGI server does here;
  and once each: `naive` (FastAPI + pydantic + pandas + scikit-learn per request, bench/baseline_servers.py),
  `ctr-uncounted` (counting of values training never saw off), `keiko-8-rows` (requests of 8 rows),
  `keiko-ctr+cvr` (one process hosting both models, each request asking both: /models/ctr+cvr/predict),
  `keiko-cvr` (CatBoost, micro-batched) and `cvr-unbatched`;
* load: one wrk process per replica (1 thread, --connections each), both at once, after a warm-up, with a
  Lua script cycling through the test day's golden rows (one row per request, each a different auction);
  h2load for gRPC (one body: the same row every request). req/s is the sum, p50/p95/p99 the worse replica's,
  errors are socket errors and timeouts plus non-2xx answers; server CPU us a request from /proc;
* before load, every server answers golden rows and must agree with the offline predictions within 1e-6 (the
  ceiling excepted): a fast wrong server is no result.

Targets, as ratios in the same run (ratios hold across machines; absolute figures move ~3x): keiko /predict >= 5x
MLServer's req/s and >= 70% of the ceiling, p95 <= 10 ms; >= 5x the naive baseline; the prediction log <= 10% of
ctr's req/s. Results go to the `## Serving` section of bench/RESULTS.md.

    .venv/bin/python bench/serving.py                 # ~25 minutes, a fifth of it building the models
    .venv/bin/python bench/serving.py --seconds 5 --rounds 1 --no-write
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc_load
import httpx
import mlserver_peer
import numpy as np
from pipeline import REPO, child_env, machine, run_child, write_section

MODELS = ("ctr", "cvr")
DS = dt.date(2026, 11, 21)
PIPELINE = (
    ("stage", "extract"), ("gate", "raw"), ("stage", "features"), ("gate", "features"), ("stage", "train"),
    ("gate", "training"), ("stage", "evaluate"), ("gate", "evaluation"), ("stage", "register"),
)  # fmt: skip
# 14 days (cvr's window) x 100k impressions: ~2,800 clicks a day for cvr.
SYNTH = ("synth", "--end-date", DS.isoformat(), "--days", "14", "--rows-per-day", "100000")
TARGET_MLSERVER, TARGET_CEILING, TARGET_P95_MS, TARGET_SPEEDUP = 5.0, 0.70, 10.0, 5.0
TARGET_LOG_OVERHEAD = 0.10
WRK_LINE = re.compile(r"keiko-wrk (.*)$", re.MULTILINE)
UVICORN = ["--loop", "uvloop", "--log-level", "warning", "--no-access-log"]
WRK_SCRIPT = """\
local bodies = {}
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
local requests, n = {}, 0
init = function(args)
  for i, body in ipairs(bodies) do
    requests[i] = wrk.format("POST", "%(path)s", {["Content-Type"] = "application/json"}, body)
  end
end
request = function()
  n = n + 1
  return requests[(n %% #requests) + 1]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("keiko-wrk requests=%%d seconds=%%.3f errors=%%d p50_ms=%%.3f p95_ms=%%.3f p99_ms=%%.3f\\n",
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000))
end
"""


@dataclass(frozen=True)
class Server:
    label: str
    model: str  # whose golden rows it is sent
    kind: str  # how it is started: see replicas()
    request: str = "predict"  # what it is sent: predict, predict-8, group, v2-rest, v2-grpc
    rounds: bool = False  # measured in each of the --rounds turns (else once, after them)


SERVERS = {
    "keiko": Server("ctr: keiko serve, POST /predict", "ctr", "keiko", rounds=True),
    "keiko-uvicorn": Server("ctr: the same app under plain uvicorn (ASGI, two writes)", "ctr", "keiko-uvicorn",
                            rounds=True),
    "ctr-unlogged": Server("ctr: keiko serve, prediction log off", "ctr", "keiko-unlogged", rounds=True),
    "keiko-v2-rest": Server("ctr: keiko serve, inference protocol REST", "ctr", "keiko", "v2-rest", rounds=True),
    "keiko-v2-grpc": Server("ctr: keiko serve, inference protocol gRPC", "ctr", "keiko", "v2-grpc", rounds=True),
    "mlserver": Server("ctr: MLServer 1.7.1, keiko's code as its runtime, REST", "ctr", "mlserver", "v2-rest",
                       rounds=True),
    "ceiling": Server("ceiling: bare ASGI, fixed answer", "ctr", "ceiling", rounds=True),
    "naive": Server("ctr: naive FastAPI + pydantic + sklearn predict_proba", "ctr", "naive"),
    "ctr-uncounted": Server("ctr: keiko serve, unseen-value counting off", "ctr", "uncounted"),
    "keiko-8-rows": Server("ctr: keiko serve, 8 rows a request", "ctr", "keiko", "predict-8"),
    "keiko-ctr+cvr": Server("ctr and cvr in one process, both asked each request", "ctr", "keiko-ctr+cvr", "group"),
    "keiko-cvr": Server("cvr: keiko serve (CatBoost, micro-batched)", "cvr", "keiko-cvr"),
    "cvr-unbatched": Server("cvr: keiko serve, micro-batching off", "cvr", "unbatched"),
}  # fmt: skip
PATHS = {"predict": "/predict", "predict-8": "/predict", "group": "/models/ctr+cvr/predict",
         "v2-rest": "/v2/models/{model}/infer"}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=20, help="measured seconds per server (default 20)")
    parser.add_argument("--warmup", type=int, default=4, help="unmeasured seconds first (default 4)")
    parser.add_argument("--connections", type=int, default=16, help="connections per replica (default 16)")
    parser.add_argument("--port", type=int, default=8701, help="first port; each server takes four (default 8701)")
    parser.add_argument("--rounds", type=int, default=3, help="turns of the compared servers, interleaved (default 3)")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md", help="markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    return parser.parse_args(argv)


def build_models(home: Path) -> dict[str, tuple[Path, Path]]:
    """A home where each model has v1 registered and production; each one's model artifact and golden set."""
    env = child_env(home)
    run_child("synth", [sys.executable, "-m", "keiko", *SYNTH], env)
    for model in MODELS:
        for kind, name in PIPELINE:
            run_child(name, [sys.executable, "-m", "keiko", kind, name, "--model", model, "--ds", DS.isoformat()], env)
    os.environ.update(KEIKO_HOME=str(home), KEIKO_PROJECT_DIR=str(REPO))
    from keiko.config import settings
    from keiko.contract import RunLayout
    from keiko.registry import open_registry
    from keiko.storage import open_store

    registry = open_registry(settings().registry_url)
    built = {}
    for model in MODELS:
        registry.move_alias(model, 1, note="bench/serving.py")
        artifact = Path(registry.get(model, 1).artifact_uri.removeprefix("file://"))
        golden = RunLayout(open_store(settings()), model, DS.isoformat()).golden
        built[model] = artifact, Path(golden.removeprefix("file://"))
    return built


@dataclass(frozen=True)
class Golden:
    rows: list[dict]  # request rows of the test day, with the prediction log's ids
    expected: list[float]  # the offline predictions


def read_golden(path: Path) -> Golden:
    import pyarrow.parquet as pq

    from keiko.rollout import json_rows

    table = pq.read_table(path)
    rows = json_rows(table.drop_columns(["expected_prediction"]))
    for i, row in enumerate(rows):  # a bidder knows its user: the id a canary routes by and the log keeps
        row["user_id"] = 1_000_000 + i
    return Golden(rows, table["expected_prediction"].to_pylist())


def schema_of(model: str) -> dict[str, str]:
    from keiko.modeldef import load_model

    return load_model(model).features.INPUT_SCHEMA


IDS = {"user_id": "int"}  # what a bidder sends beside the features over the inference protocol (canary routing)


def request_body(request: str, model: str, rows: list[dict]) -> dict:
    """The JSON body of `rows` for a kind of request."""
    if request == "v2-rest":
        return mlserver_peer.oip_body(model, rows, schema_of(model), IDS)
    return {"rows": rows}


def write_bodies(request: str, model: str, data: Golden, path: Path) -> Path:
    """One body per line for wrk (a golden row each, 8 for predict-8: each request different auctions); for gRPC
    the one message h2load sends (the first row)."""
    if request == "v2-grpc":
        return grpc_load.write_body(grpc_load.infer_request(model, data.rows[:1], schema_of(model), IDS), path)
    size = 8 if request == "predict-8" else 1
    chunks = [data.rows[i : i + size] for i in range(0, len(data.rows) - size + 1, size)]
    path.write_text("".join(json.dumps(request_body(request, model, c), separators=(",", ":")) + "\n" for c in chunks))
    return path


Command = Callable[[int, int, int], tuple[list[str], dict[str, str]]]  # (port, grpc port, replica) -> argv, env


def commands(kind: str, home: Path, artifacts: dict[str, Path]) -> Command:
    """How one replica of a server kind starts."""
    python = sys.executable

    def keiko_serve(*models: str) -> Command:
        flags = [item for model in models for item in ("--model", model)]
        return lambda port, grpc, _i: (
            [python, "-m", "keiko", "serve", *flags, "--port", str(port), "--grpc-port", str(grpc), "--replicas", "1"],
            {},
        )

    def uvicorn_app(app: str, *options: str) -> Command:
        return lambda port, _grpc, _i: (
            [python, "-m", "uvicorn", *options, app, "--app-dir", str(REPO / "bench"), "--port", str(port), *UVICORN],
            {},
        )

    def mlserver(port: int, grpc: int, i: int) -> tuple[list[str], dict[str, str]]:
        workdir = home / f"mlserver-{i}"
        workdir.mkdir(exist_ok=True)
        return mlserver_peer.command("ctr", artifacts["ctr"], port, workdir, grpc_port=grpc)

    protocol = ("--http", "keiko.serving.http_protocol:KeikoHttpProtocol")  # what `keiko serve` runs
    return {
        "keiko": keiko_serve("ctr"),
        "keiko-unlogged": keiko_serve("ctr"),  # with KEIKO_PROJECT_DIR at unlogged_project(): see main()
        "keiko-uvicorn": uvicorn_app("baseline_servers:keiko_app", "--factory", "--http", "httptools"),
        "keiko-ctr+cvr": keiko_serve("ctr", "cvr"),
        "keiko-cvr": keiko_serve("cvr"),
        "mlserver": mlserver,
        "naive": uvicorn_app("baseline_servers:naive_app", "--factory", "--http", "httptools"),
        "ceiling": uvicorn_app("baseline_servers:ceiling", *protocol),
        "unbatched": uvicorn_app("baseline_servers:unbatched_app", "--factory", *protocol),
        "uncounted": uvicorn_app("baseline_servers:uncounted_app", "--factory", *protocol),
    }[kind]


@contextmanager
def replicas(command: Command, ports: list[tuple[int, int]], env: dict[str, str], log: Path):
    """Two server processes; stopped on exit. Yields their pids."""
    processes = []
    with log.open("a") as output:
        for i, (port, grpc) in enumerate(ports):
            argv, extra = command(port, grpc, i)
            processes.append(
                subprocess.Popen(argv, env={**env, **extra}, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
            )
    try:
        yield [process.pid for process in processes]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def answer(server: Server, port: int, grpc: int, rows: list[dict]) -> list[float] | None:
    """The server's predictions for `rows`; None while it is not up yet."""
    if server.request == "v2-grpc":
        request = grpc_load.infer_request(server.model, rows, schema_of(server.model), IDS)
        try:
            response = grpc_load.wait_ready("127.0.0.1", grpc, request, seconds=1)
        except SystemExit:
            return None
        return np.frombuffer(response.raw_output_contents[0], "<f8").tolist()
    path = PATHS[server.request].format(model=server.model)
    try:
        reply = httpx.post(f"http://127.0.0.1:{port}{path}", json=request_body(server.request, server.model, rows))
    except httpx.TransportError:
        return None
    if reply.status_code != 200:
        return None
    body = reply.json()
    if server.request == "v2-rest":
        return body["outputs"][0]["data"]
    if server.request == "group":
        assert set(body["models"]) == set(MODELS), body
        return body["models"][server.model]["predictions"]
    return body["predictions"]


def wait_and_check(name: str, server: Server, ports: list[tuple[int, int]], data: Golden) -> None:
    """Every replica answers; all but the ceiling answer the golden rows as offline (|diff| <= 1e-6)."""
    deadline = time.monotonic() + 180
    for port, grpc in ports:
        while (got := answer(server, port, grpc, data.rows[:50])) is None:
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} on port {port} did not answer within 180 s; see the server log")
            time.sleep(0.5)
        if name != "ceiling":
            worst = max(abs(a - b) for a, b in zip(got, data.expected[:50], strict=True))
            if not worst <= 1e-6:
                raise SystemExit(f"{name} on port {port} differs from the offline predictions by {worst:.3g}")


def wrk(ports: list[int], script: Path, seconds: int, connections: int) -> list[dict[str, float]]:
    """One wrk per replica, all at once; each one's summary."""
    runs = [
        subprocess.Popen(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "2s", "-s", str(script),
             f"http://127.0.0.1:{port}/"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for port in ports
    ]  # fmt: skip
    summaries = []
    for run in runs:
        out, _ = run.communicate()
        match = WRK_LINE.search(out)
        if run.returncode != 0 or not match:
            raise SystemExit(f"wrk failed:\n{out}")
        summaries.append({k: float(v) for k, v in (item.split("=") for item in match.group(1).split())})
    return summaries


def drive(server: Server, ports: list[tuple[int, int]], load: Path, seconds: int, connections: int) -> list[dict]:
    if server.request == "v2-grpc":
        targets = [("127.0.0.1", grpc) for _, grpc in ports]
        return grpc_load.drive(targets, load, seconds, connections, streams=1)
    return wrk([port for port, _ in ports], load, seconds, connections)


def unlogged_project(home: Path) -> Path:
    """A copy of the project's include/ whose ctr model.yaml turns the prediction log off, and nothing else."""
    import yaml

    project = home / "project-unlogged"
    shutil.copytree(REPO / "include", project / "include")
    path = project / "include" / "models" / "ctr" / "model.yaml"
    config = yaml.safe_load(path.read_text())
    config["serving"]["prediction_log"] = {"enabled": False}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return project


def prediction_log_counts(urls: list[str]) -> dict[str, float]:
    """Rows the replicas' prediction logs took and dropped so far (their /metrics); none for other servers."""
    counts = {"logged": 0.0, "dropped": 0.0}
    for url in urls:
        for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
            match = re.match(r'keiko_prediction_log_rows_total\{model="\w+",outcome="(logged|dropped)"\} (\S+)', line)
            if match:
                counts[match[1]] += float(match[2])
    return counts


def median_result(runs: list[dict[str, float]]) -> dict:
    """The run with the median req/s (its latencies with it), and every run's req/s and CPU per request."""
    ordered = sorted(runs, key=lambda r: r["rps"])
    every = {"rounds": [r["rps"] for r in runs], "cpu_rounds": [r["cpu_us"] for r in runs]}
    return {**ordered[(len(ordered) - 1) // 2], **every}


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU the processes have used so far (Linux /proc: clock ticks)."""
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(name: str, server: Server, ports, pids: list[int], load: Path, args: argparse.Namespace) -> dict:
    print(f"{name}: warm-up {args.warmup:g} s, then {args.seconds:g} s on {len(ports)} replicas", flush=True)
    drive(server, ports, load, args.warmup, args.connections)
    cpu_before = cpu_seconds(pids)
    runs = drive(server, ports, load, args.seconds, args.connections)
    requests = sum(r["requests"] for r in runs)
    rps = sum(r["requests"] / r["seconds"] for r in runs)
    result = {
        "rps": rps,
        "rows": rps * (8 if server.request == "predict-8" else 1),
        "errors": sum(r["errors"] for r in runs),
        # The servers' own CPU per request: what a request costs, less moved by the shared machine's speed
        # than req/s (the load generator's CPU is not in it).
        "cpu_us": (cpu_seconds(pids) - cpu_before) / max(requests, 1) * 1e6,
        **{p: max(r[f"{p}_ms"] for r in runs) for p in ("p50", "p95", "p99")},
    }
    print(f"  {result['rps']:,.0f} req/s, p50 {result['p50']:.2f} ms, p95 {result['p95']:.2f} ms, "
          f"p99 {result['p99']:.2f} ms, {result['errors']:.0f} errors", flush=True)  # fmt: skip
    return result


def paired(results: dict[str, dict], a: str, b: str) -> tuple[float, str]:
    """The median over rounds of a's req/s over b's, each pair from one round (the machine's drift between rounds,
    +-30% here, cancels in the ratio), and the rounds' figures."""
    pairs = list(zip(results[a]["rounds"], results[b]["rounds"], strict=True))
    return statistics.median(x / y for x, y in pairs), ", ".join(f"{x:,.0f}/{y:,.0f}" for x, y in pairs)


def verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


def report(results: dict[str, dict], args: argparse.Namespace, info: dict[str, str], tools: str) -> str:
    keiko = results["keiko"]
    vs_mlserver, mlserver_rounds = paired(results, "keiko", "mlserver")
    vs_ceiling, ceiling_rounds = paired(results, "keiko", "ceiling")
    protocol, protocol_rounds = paired(results, "keiko", "keiko-uvicorn")
    logged, log_rounds = paired(results, "keiko", "ctr-unlogged")
    rest, rest_rounds = paired(results, "keiko-v2-rest", "keiko")
    grpc, grpc_rounds = paired(results, "keiko-v2-grpc", "keiko")
    speedup = keiko["rps"] / results["naive"]["rps"]
    eight = results["keiko-8-rows"]
    lines = [
        "## Serving",
        "",
        f"`.venv/bin/python bench/serving.py --seconds {args.seconds:g} --connections {args.connections} "
        f"--rounds {args.rounds}` ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; {info['nproc']} cores, "
        f"{info['cpu']}, load {info['load']}; {tools}).",
        "",
        "Single-auction requests (one golden row of the test day each, 500 distinct rows cycled; gRPC: h2load sends "
        f"one row over and over), two replicas per server, one load generator (1 thread, {args.connections} "
        "connections) per replica at once; p50/p95/p99 are the worse replica's. The compared servers ran in "
        f"{args.rounds} interleaved rounds (the table shows each one's median round); the others once. Models "
        "built from 14 days x 100k synthetic impressions.",
        "",
        "| server | req/s | rows/s | server CPU us/request | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, server in SERVERS.items():
        r = results[name]
        lines.append(
            f"| {server.label} | {r['rps']:,.0f} | {r['rows']:,.0f} | {r['cpu_us']:.0f} | {r['p50']:.2f} "
            f"| {r['p95']:.2f} | {r['p99']:.2f} | {r['errors']:.0f} |"
        )
    lines += [
        "",
        "Ratios are medians of each round's pair (both measured in the same round); `rounds` lists each pair.",
        "",
        f"- keiko /predict >= {TARGET_MLSERVER:g}x MLServer's req/s: {verdict(vs_mlserver >= TARGET_MLSERVER)} "
        f"({vs_mlserver:.2f}x; rounds {mlserver_rounds}). Server CPU a request: keiko {keiko['cpu_us']:.0f} us, "
        f"MLServer {results['mlserver']['cpu_us']:.0f} us.",
        f"- keiko /predict >= {TARGET_CEILING:.0%} of the ceiling: {verdict(vs_ceiling >= TARGET_CEILING)} "
        f"({vs_ceiling:.0%}; rounds {ceiling_rounds}); p95 <= {TARGET_P95_MS:g} ms: "
        f"{verdict(keiko['p95'] <= TARGET_P95_MS)} ({keiko['p95']:.2f} ms).",
        f"- keiko /predict >= {TARGET_SPEEDUP:g}x the naive baseline: {verdict(speedup >= TARGET_SPEEDUP)} "
        f"({speedup:.1f}x).",
        f"- keiko's protocol (keiko.serving.http_protocol: /predict without an ASGI cycle, one write) against plain "
        f"uvicorn: {protocol - 1:+.1%} req/s (rounds {protocol_rounds}).",
        f"- the inference protocol against /predict, same server: REST {rest:.0%} of /predict's req/s (rounds "
        f"{rest_rounds}), gRPC {grpc:.0%} (rounds {grpc_rounds}; one row repeated, h2load).",
        f"- 8 rows a request: {eight['rows']:,.0f} rows/s, {eight['rows'] / keiko['rps']:.1f}x the rows of "
        "single-row requests.",
        f"- ctr and cvr in one process, both asked each request: {results['keiko-ctr+cvr']['rps']:,.0f} req/s "
        f"(each one answer of each model), against {keiko['rps']:,.0f} for ctr alone and "
        f"{results['keiko-cvr']['rps']:,.0f} for cvr alone.",
        f"- the prediction log costs ctr {1 - logged:.1%} of its req/s (rounds {log_rounds}): target <= "
        f"{TARGET_LOG_OVERHEAD:.0%} {verdict(1 - logged <= TARGET_LOG_OVERHEAD)}; {keiko['logged']:,.0f} rows logged "
        f"by keiko's replicas in its median round, {keiko['dropped']:,.0f} dropped (buffer full).",
        f"- counting the values training never saw costs ctr {1 - keiko['rps'] / results['ctr-uncounted']['rps']:.1%} "
        "of its req/s (measured once, not paired: read it as a direction).",
        f"- cvr: micro-batching gives {results['keiko-cvr']['rps'] / results['cvr-unbatched']['rps']:.1f}x the "
        "unbatched server.",
    ]
    return "\n".join(lines)


def tool_versions() -> str:
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split(" Copyright")[0]
    h2load_version = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{wrk_version}; {h2load_version}; MLServer {mlserver_peer.MLSERVER_VERSION}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: `apt-get install {package}` (`make bench-serving` does it)")
    info = machine()
    mlserver_peer.ensure_env()
    home = Path(tempfile.mkdtemp(prefix="keiko-bench-serving-"))
    try:
        print(f"building the {' and '.join(MODELS)} models in {home}", flush=True)
        built = build_models(home)
        artifacts = {model: artifact for model, (artifact, _) in built.items()}
        data = {model: read_golden(golden) for model, (_, golden) in built.items()}
        loads = {}
        for name, server in SERVERS.items():
            load = write_bodies(server.request, server.model, data[server.model], home / f"{name}.bodies")
            if server.request != "v2-grpc":
                script = home / f"{name}.lua"
                path = PATHS[server.request].format(model=server.model)
                script.write_text(WRK_SCRIPT % {"bodies": load, "path": path})
                load = script
            loads[name] = load
        compared = [name for name, server in SERVERS.items() if server.rounds]
        order = [name for _ in range(args.rounds) for name in compared]
        order += [name for name, server in SERVERS.items() if not server.rounds]
        measured: dict[str, list[dict]] = {}
        unlogged = unlogged_project(home)
        for name in order:
            server = SERVERS[name]
            env = {**child_env(home), "KEIKO_BENCH_MODEL": str(artifacts[server.model]),
                   "KEIKO_BENCH_MODEL_NAME": server.model}  # fmt: skip
            if server.kind == "keiko-unlogged":
                env["KEIKO_PROJECT_DIR"] = str(unlogged)
            offset = list(SERVERS).index(name)
            ports = [(args.port + 4 * offset + i, args.port + 4 * offset + 2 + i) for i in range(2)]
            log = home / f"{name}.log"
            with replicas(commands(server.kind, home, artifacts), ports, env, log) as pids:
                try:
                    wait_and_check(name, server, ports, data[server.model])
                except SystemExit:
                    print(f"{name}'s log:\n{log.read_text()[-3000:]}", flush=True)
                    raise
                result = measure(name, server, ports, pids, loads[name], args)
                logged = server.kind.startswith("keiko") and server.kind != "keiko-uvicorn"
                result.update(prediction_log_counts([f"http://127.0.0.1:{p}" for p, _ in ports]) if logged else {})
            measured.setdefault(name, []).append(result)
        results = {name: median_result(runs) for name, runs in measured.items()}
        section = report(results, args, info, tool_versions())
        print("\n" + section, flush=True)
        if not args.no_write:
            write_section(args.results, "serving", section)
            print(f"\nwrote {args.results}")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
