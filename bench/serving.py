"""Benchmark of the model server: single-auction /predict requests from wrk, side by side with baselines.

What it measures, in one run on this machine:

* three servers, each as two single-process replicas on two ports (one process per core, as
  `keiko serve --replicas 2` runs them; on Kubernetes, pods with one CPU behind the Service), all under
  the same uvicorn setup (uvloop, httptools, no access log):
  - `keiko`: `keiko serve` with the production ctr model;
  - `naive`: FastAPI + pydantic + pandas + scikit-learn `predict_proba` per request (bench/baseline_servers.py);
  - `ceiling`: a bare ASGI app answering a fixed body: the most any Python server does here;
* load: one wrk process per replica (1 thread, --connections each), both at once, after a warm-up, with a
  Lua script cycling through the test day's golden rows (one row per request, each a different auction);
  req/s is the sum, p50/p95/p99 the worse replica's, errors are wrk's socket errors and timeouts plus non-2xx answers;
* before load, every server answers the golden rows and must agree with the offline predictions within
  1e-6 (the ceiling excepted): a fast wrong server is no result.

Targets (the seed's online inference service, on this 2-core machine with the load generator beside it):
>= 9,000 req/s at p95 <= 10 ms, and >= 5x the naive baseline. Results go to the `## Serving` section of
bench/RESULTS.md.

    .venv/bin/python bench/serving.py                 # ~3 minutes, half of it building a model
    .venv/bin/python bench/serving.py --seconds 5 --no-write
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
from pipeline import REPO, child_env, machine, run_child, write_section

MODEL = "ctr"
DS = dt.date(2026, 11, 21)
PIPELINE = (
    ("stage", "extract"), ("gate", "raw"), ("stage", "features"), ("gate", "features"), ("stage", "train"),
    ("gate", "training"), ("stage", "evaluate"), ("gate", "evaluation"), ("stage", "register"),
)  # fmt: skip
STEPS = (
    ("synth", "--end-date", DS.isoformat(), "--days", "8", "--rows-per-day", "30000"),
    *((kind, name, "--model", MODEL, "--ds", DS.isoformat()) for kind, name in PIPELINE),
)
TARGET_RPS, TARGET_P95_MS, TARGET_SPEEDUP = 9000, 10.0, 5.0
WRK_LINE = re.compile(r"keiko-wrk (.*)$", re.MULTILINE)
UVICORN = ["--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log"]
WRK_SCRIPT = """\
local bodies = {}
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
local requests, n = {}, 0
init = function(args)
  for i, body in ipairs(bodies) do
    requests[i] = wrk.format("POST", "/predict", {["Content-Type"] = "application/json"}, body)
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=20, help="measured seconds per server (default 20)")
    parser.add_argument("--warmup", type=int, default=4, help="unmeasured seconds first (default 4)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections per replica (default 16)")
    parser.add_argument("--port", type=int, default=8701, help="first port; each server takes two (default 8701)")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md", help="markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    return parser.parse_args(argv)


def build_model(home: Path) -> tuple[Path, Path]:
    """A home with ctr v1 registered and production (8 days x 30k rows); its model and golden set."""
    env = child_env(home)
    for step in STEPS:
        run_child(step[0], [sys.executable, "-m", "keiko", *step], env)
    os.environ.update(KEIKO_HOME=str(home), KEIKO_PROJECT_DIR=str(REPO))
    from keiko.config import settings
    from keiko.registry import open_registry

    registry = open_registry(settings().registry_url)
    registry.move_alias(MODEL, 1, note="bench/serving.py")
    day = home / "artifacts" / MODEL / DS.isoformat()
    return Path(registry.get(MODEL, 1).artifact_uri.removeprefix("file://")), day / "golden.parquet"


def golden_requests(golden: Path, directory: Path) -> tuple[list[dict], list[float], Path]:
    """Single-row request bodies of the golden set (one JSON per line, for wrk), and their answers."""
    import pyarrow.parquet as pq

    from keiko.rollout import json_rows

    table = pq.read_table(golden)
    rows = json_rows(table.drop_columns(["impression_id", "expected_prediction"]))
    path = directory / "bodies.jsonl"
    path.write_text("".join(json.dumps({"rows": [row]}, separators=(",", ":")) + "\n" for row in rows))
    return rows, table["expected_prediction"].to_pylist(), path


@contextmanager
def replicas(name: str, ports: list[int], env: dict[str, str], log: Path):
    """Two server processes of kind `name`; stopped on exit."""
    commands = {
        "keiko": lambda port: [sys.executable, "-m", "keiko", "serve", "--model", MODEL, "--port", str(port),
                                 "--replicas", "1"],
        "naive": lambda port: [sys.executable, "-m", "uvicorn", "--factory", "baseline_servers:naive_app",
                               "--app-dir", str(REPO / "bench"), "--port", str(port), *UVICORN],
        "ceiling": lambda port: [sys.executable, "-m", "uvicorn", "baseline_servers:ceiling",
                                 "--app-dir", str(REPO / "bench"), "--port", str(port), *UVICORN],
    }  # fmt: skip
    with log.open("a") as output:
        processes = [
            subprocess.Popen(commands[name](port), env=env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
            for port in ports
        ]
    try:
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def wait_and_check(name: str, urls: list[str], rows: list[dict], expected: list[float]) -> None:
    """Every replica answers; all but the ceiling answer the golden rows as offline (|diff| <= 1e-6)."""
    deadline = time.monotonic() + 120
    for url in urls:
        while True:
            try:
                answer = httpx.post(f"{url}/predict", json={"rows": rows[:50]}, timeout=30)
                if answer.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} at {url} did not answer within 120 s; see the server log")
            time.sleep(0.5)
        if name != "ceiling":
            worst = max(abs(a - b) for a, b in zip(answer.json()["predictions"], expected[:50], strict=True))
            if not worst <= 1e-6:
                raise SystemExit(f"{name} at {url} differs from the offline predictions by {worst:.3g}")


def drive(urls: list[str], script: Path, seconds: int, connections: int) -> list[dict[str, float]]:
    """One wrk per replica, all at once; each one's summary."""
    runs = [
        subprocess.Popen(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "2s", "-s", str(script), f"{url}/"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for url in urls
    ]
    summaries = []
    for run in runs:
        out, _ = run.communicate()
        match = WRK_LINE.search(out)
        if run.returncode != 0 or not match:
            raise SystemExit(f"wrk failed:\n{out}")
        summaries.append({k: float(v) for k, v in (item.split("=") for item in match.group(1).split())})
    return summaries


def measure(name: str, urls: list[str], script: Path, args: argparse.Namespace) -> dict[str, float]:
    print(f"{name}: warm-up {args.warmup:g} s, then {args.seconds:g} s on {len(urls)} replicas", flush=True)
    drive(urls, script, args.warmup, args.connections)
    runs = drive(urls, script, args.seconds, args.connections)
    result = {
        "rps": sum(r["requests"] / r["seconds"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        **{p: max(r[f"{p}_ms"] for r in runs) for p in ("p50", "p95", "p99")},
    }
    print(f"  {result['rps']:,.0f} req/s, p50 {result['p50']:.2f} ms, p95 {result['p95']:.2f} ms, "
          f"p99 {result['p99']:.2f} ms, {result['errors']:.0f} errors", flush=True)  # fmt: skip
    return result


def report(results: dict[str, dict[str, float]], args: argparse.Namespace, info: dict[str, str]) -> str:
    keiko, naive = results["keiko"], results["naive"]
    speedup = keiko["rps"] / naive["rps"]
    lines = [
        "## Serving",
        "",
        f"`.venv/bin/python bench/serving.py --seconds {args.seconds:g} --connections {args.connections}` "
        f"({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; {info['nproc']} cores, {info['cpu']}, load {info['load']}; "
        f"{subprocess.run(['wrk', '--version'], capture_output=True, text=True).stdout.split(' Copyright')[0]}).",
        "",
        "Single-auction POST /predict (one golden row of the test day per request, 500 distinct rows cycled), "
        f"two replicas per server, one wrk (1 thread, {args.connections} connections) per replica at once; "
        "p50/p95/p99 are the worse replica's.",
        "",
        "| server | req/s | p50 ms | p95 ms | p99 ms | errors | vs naive |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label in (("keiko", "keiko serve"), ("naive", "naive: FastAPI + pydantic + sklearn predict_proba"),
                        ("ceiling", "ceiling: bare ASGI, fixed answer")):  # fmt: skip
        r = results[name]
        lines.append(
            f"| {label} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | {r['errors']:.0f} "
            f"| {r['rps'] / naive['rps']:.1f}x |"
        )
    met = keiko["rps"] >= TARGET_RPS and keiko["p95"] <= TARGET_P95_MS
    lines += [
        "",
        f"- Target >= {TARGET_RPS:,} req/s at p95 <= {TARGET_P95_MS:g} ms: **{'met' if met else 'not met'}** "
        f"({keiko['rps']:,.0f} req/s, p95 {keiko['p95']:.2f} ms).",
        f"- Target >= {TARGET_SPEEDUP:g}x the naive baseline: **{'met' if speedup >= TARGET_SPEEDUP else 'not met'}** "
        f"({speedup:.1f}x).",
        f"- keiko reaches {keiko['rps'] / results['ceiling']['rps']:.0%} of the ceiling, a server that does no "
        "work at all: the ceiling is what uvicorn's HTTP handling, the kernel's loopback TCP and wrk itself cost "
        "on these two cores, and bounds any Python server here.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `apt-get install wrk` (`make bench-serving` does it)")
    info = machine()
    home = Path(tempfile.mkdtemp(prefix="keiko-bench-serving-"))
    try:
        print(f"building a ctr model in {home}", flush=True)
        model, golden = build_model(home)
        rows, expected, bodies = golden_requests(golden, home)
        script = home / "golden.lua"
        script.write_text(WRK_SCRIPT % {"bodies": bodies})
        env = {**child_env(home), "KEIKO_BENCH_MODEL": str(model)}
        results = {}
        for offset, name in enumerate(("keiko", "naive", "ceiling")):
            ports = [args.port + 2 * offset, args.port + 2 * offset + 1]
            log = home / f"{name}.log"
            with replicas(name, ports, env, log) as urls:
                try:
                    wait_and_check(name, urls, rows, expected)
                except SystemExit:
                    print(f"{name}'s log:\n{log.read_text()[-3000:]}", flush=True)
                    raise
                results[name] = measure(name, urls, script, args)
        section = report(results, args, info)
        print("\n" + section, flush=True)
        if not args.no_write:
            write_section(args.results, "serving", section)
            print(f"\nwrote {args.results}")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
