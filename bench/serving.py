"""Benchmark of the model server: single-auction /predict requests from wrk, side by side with baselines.

What it measures, in one run on this machine:

* six servers, each as two single-process replicas on two ports (one process per core, as
  `keiko serve --replicas 2` runs them; on Kubernetes, pods with one CPU behind the Service), all under
  the same uvicorn setup (uvloop, httptools, no access log):
  - `keiko`: `keiko serve` with the production ctr model (hashed LR: per-row weight lookups);
  - `ctr-unlogged`: `keiko serve` again, with model.yaml's `serving.prediction_log.enabled: false` (a copy of
    include/ with that one change): what the prediction log costs, measured in alternating rounds with `keiko`
    (`--rounds`; the median of each back-to-back pair's ratio);
  - `ctr-uncounted`: the same with the counting of values training never saw switched off: what it costs;
  - `naive`: FastAPI + pydantic + pandas + scikit-learn `predict_proba` per request (bench/baseline_servers.py);
  - `ceiling`: a bare ASGI app answering a fixed body: the most any Python server does here;
  - `keiko-cvr`: `keiko serve` with the production cvr model (CatBoost: micro-batched requests);
  - `cvr-unbatched`: the same server and model with micro-batching off (one CatBoost call per request);
* load: one wrk process per replica (1 thread, --connections each), both at once, after a warm-up, with a
  Lua script cycling through the test day's golden rows (one row per request, each a different auction);
  req/s is the sum, p50/p95/p99 the worse replica's, errors are wrk's socket errors and timeouts plus non-2xx answers;
* before load, every server answers the golden rows and must agree with the offline predictions within
  1e-6 (the ceiling excepted): a fast wrong server is no result.

Targets (on this 2-core machine with the load generator beside it): ctr >= 9,000 req/s at p95 <= 10 ms and
>= 5x the naive baseline; cvr >= 5,000 req/s at p95 <= 10 ms; the prediction log costs <= 10% of ctr's
req/s. Results go to the `## Serving` section of bench/RESULTS.md.

    .venv/bin/python bench/serving.py                 # ~6 minutes, half of it building the models
    .venv/bin/python bench/serving.py --seconds 5 --no-write
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
from contextlib import contextmanager
from pathlib import Path

import httpx
from pipeline import REPO, child_env, machine, run_child, write_section

MODELS = ("ctr", "cvr")
DS = dt.date(2026, 11, 21)
PIPELINE = (
    ("stage", "extract"), ("gate", "raw"), ("stage", "features"), ("gate", "features"), ("stage", "train"),
    ("gate", "training"), ("stage", "evaluate"), ("gate", "evaluation"), ("stage", "register"),
)  # fmt: skip
# 14 days (cvr's window) x 100k impressions: ~2,800 clicks a day for cvr.
SYNTH = ("synth", "--end-date", DS.isoformat(), "--days", "14", "--rows-per-day", "100000")
# ctr-uncounted right after keiko: the pair whose difference is measured runs back to back.
SERVERS = {
    "keiko": "ctr", "ctr-unlogged": "ctr", "ctr-uncounted": "ctr", "naive": "ctr", "ceiling": "ctr",
    "keiko-cvr": "cvr", "cvr-unbatched": "cvr",
}  # fmt: skip
ALTERNATING = ("keiko", "ctr-unlogged")  # measured in turns, --rounds times each: their medians are compared
TARGET_RPS, TARGET_P95_MS, TARGET_SPEEDUP = 9000, 10.0, 5.0
TARGET_CVR_RPS = 5000
TARGET_LOG_OVERHEAD = 0.10
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
    parser.add_argument(
        "--rounds", type=int, default=5, help=f"turns of {' and '.join(ALTERNATING)}, alternating (default 5)"
    )
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


def golden_requests(golden: Path, path: Path) -> tuple[list[dict], list[float], Path]:
    """Single-row request bodies of the golden set (one JSON per line at `path`, for wrk), and their answers."""
    import pyarrow.parquet as pq

    from keiko.rollout import json_rows

    table = pq.read_table(golden)
    rows = json_rows(table.drop_columns(["impression_id", "expected_prediction"]))
    path.write_text("".join(json.dumps({"rows": [row]}, separators=(",", ":")) + "\n" for row in rows))
    return rows, table["expected_prediction"].to_pylist(), path


@contextmanager
def replicas(name: str, ports: list[int], env: dict[str, str], log: Path):
    """Two server processes of kind `name`; stopped on exit."""

    def keiko_serve(model: str):
        return lambda port: [
            sys.executable,
            "-m",
            "keiko",
            "serve",
            "--model",
            model,
            "--port",
            str(port),
            "--replicas",
            "1",
        ]

    def uvicorn_app(app: str, *factory: str):
        return lambda port: [
            sys.executable,
            "-m",
            "uvicorn",
            *factory,
            app,
            "--app-dir",
            str(REPO / "bench"),
            "--port",
            str(port),
            *UVICORN,
        ]

    commands = {
        "keiko": keiko_serve("ctr"),
        "naive": uvicorn_app("baseline_servers:naive_app", "--factory"),
        "ceiling": uvicorn_app("baseline_servers:ceiling"),
        "keiko-cvr": keiko_serve("cvr"),
        "cvr-unbatched": uvicorn_app("baseline_servers:unbatched_app", "--factory"),
        "ctr-uncounted": uvicorn_app("baseline_servers:uncounted_app", "--factory"),
        "ctr-unlogged": keiko_serve("ctr"),  # with KEIKO_PROJECT_DIR at unlogged_project(): see main()
    }  # fmt: skip
    with log.open("a") as output:
        processes = [
            subprocess.Popen(commands[name](port), env=env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
            for port in ports
        ]
    try:
        yield [f"http://127.0.0.1:{port}" for port in ports], [process.pid for process in processes]
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


def measure(name: str, urls: list[str], pids: list[int], script: Path, args: argparse.Namespace) -> dict[str, float]:
    print(f"{name}: warm-up {args.warmup:g} s, then {args.seconds:g} s on {len(urls)} replicas", flush=True)
    drive(urls, script, args.warmup, args.connections)
    cpu_before = cpu_seconds(pids)
    runs = drive(urls, script, args.seconds, args.connections)
    requests = sum(r["requests"] for r in runs)
    result = {
        "rps": sum(r["requests"] / r["seconds"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        # The servers' own CPU per request: what a request costs, less moved by the shared machine's speed
        # than req/s (wrk's CPU is not in it).
        "cpu_us": (cpu_seconds(pids) - cpu_before) / max(requests, 1) * 1e6,
        **{p: max(r[f"{p}_ms"] for r in runs) for p in ("p50", "p95", "p99")},
    }
    print(f"  {result['rps']:,.0f} req/s, p50 {result['p50']:.2f} ms, p95 {result['p95']:.2f} ms, "
          f"p99 {result['p99']:.2f} ms, {result['errors']:.0f} errors", flush=True)  # fmt: skip
    return result


LABELS = {
    "keiko": "ctr: keiko serve (hashed LR, row scorer)",
    "ctr-unlogged": "ctr: keiko serve, prediction log off",
    "ctr-uncounted": "ctr: keiko serve, unseen-value counting off",
    "naive": "ctr: naive FastAPI + pydantic + sklearn predict_proba",
    "ceiling": "ceiling: bare ASGI, fixed answer",
    "keiko-cvr": "cvr: keiko serve (CatBoost, micro-batched)",
    "cvr-unbatched": "cvr: keiko serve, micro-batching off",
}


def report(results: dict[str, dict[str, float]], args: argparse.Namespace, info: dict[str, str]) -> str:
    keiko, naive, cvr = results["keiko"], results["naive"], results["keiko-cvr"]
    speedup = keiko["rps"] / naive["rps"]
    # Each round's pair ran back to back: the machine's drift between rounds (+-20% here) cancels in the ratio.
    pairs = list(zip(keiko["rounds"], results["ctr-unlogged"]["rounds"], strict=True))
    log_overhead = 1 - statistics.median(logged / unlogged for logged, unlogged in pairs)
    rounds_text = ", ".join(f"{a:,.0f}/{b:,.0f}" for a, b in pairs)
    cpu_pairs = list(zip(keiko["cpu_rounds"], results["ctr-unlogged"]["cpu_rounds"], strict=True))
    cpu_overhead = statistics.median(logged / unlogged for logged, unlogged in cpu_pairs) - 1
    cpu_text = ", ".join(f"{a:.0f}/{b:.0f}" for a, b in cpu_pairs)
    lines = [
        "## Serving",
        "",
        f"`.venv/bin/python bench/serving.py --seconds {args.seconds:g} --connections {args.connections} "
        f"--rounds {args.rounds}` "
        f"({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; {info['nproc']} cores, {info['cpu']}, load {info['load']}; "
        f"{subprocess.run(['wrk', '--version'], capture_output=True, text=True).stdout.split(' Copyright')[0]}).",
        "",
        "Single-auction POST /predict (one golden row of the test day per request, 500 distinct rows cycled), "
        f"two replicas per server, one wrk (1 thread, {args.connections} connections) per replica at once; "
        "p50/p95/p99 are the worse replica's. Models built from 14 days x 100k synthetic impressions.",
        "",
        "| server | req/s | server CPU us/request | p50 ms | p95 ms | p99 ms | errors | vs its baseline |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    baselines = {"keiko": "naive", "keiko-cvr": "cvr-unbatched"}
    for name, label in LABELS.items():
        r = results[name]
        versus = f"{r['rps'] / results[baselines[name]]['rps']:.1f}x" if name in baselines else ""
        lines.append(
            f"| {label} | {r['rps']:,.0f} | {r['cpu_us']:.0f} | {r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} "
            f"| {r['errors']:.0f} "
            f"| {versus} |"
        )
    met = keiko["rps"] >= TARGET_RPS and keiko["p95"] <= TARGET_P95_MS
    cvr_met = cvr["rps"] >= TARGET_CVR_RPS and cvr["p95"] <= TARGET_P95_MS
    lines += [
        "",
        f"- ctr target >= {TARGET_RPS:,} req/s at p95 <= {TARGET_P95_MS:g} ms: **{'met' if met else 'not met'}** "
        f"({keiko['rps']:,.0f} req/s, p95 {keiko['p95']:.2f} ms).",
        f"- ctr target >= {TARGET_SPEEDUP:g}x the naive baseline: "
        f"**{'met' if speedup >= TARGET_SPEEDUP else 'not met'}** ({speedup:.1f}x).",
        f"- cvr target >= {TARGET_CVR_RPS:,} req/s at p95 <= {TARGET_P95_MS:g} ms: "
        f"**{'met' if cvr_met else 'not met'}** ({cvr['rps']:,.0f} req/s, p95 {cvr['p95']:.2f} ms); "
        f"micro-batching gives {cvr['rps'] / results['cvr-unbatched']['rps']:.1f}x the unbatched server.",
        f"- the prediction log costs ctr {log_overhead:.1%} of its req/s (the median over {args.rounds} alternating "
        f"rounds of logged / unlogged req/s, each pair back to back: {rounds_text}; median rounds' p95 "
        f"{keiko['p95']:.2f} vs {results['ctr-unlogged']['p95']:.2f} ms): target <= {TARGET_LOG_OVERHEAD:.0%} "
        f"**{'met' if log_overhead <= TARGET_LOG_OVERHEAD else 'not met'}**; {keiko['logged']:,.0f} rows "
        f"logged by keiko's replicas in its median round, {keiko['dropped']:,.0f} dropped (buffer full). In server "
        f"CPU per request (the replicas' own, from /proc) the log costs {cpu_overhead:+.1%} (median of the pairs' "
        f"ratios; us a request, logged/unlogged: {cpu_text}).",
        f"- counting the values training never saw costs ctr {1 - keiko['rps'] / results['ctr-uncounted']['rps']:.1%} "
        f"of its req/s (p50 {keiko['p50']:.2f} vs {results['ctr-uncounted']['p50']:.2f} ms without it).",
        f"- keiko's ctr server reaches {keiko['rps'] / results['ceiling']['rps']:.0%} of the ceiling, a server that "
        "does no work at all: the ceiling is what uvicorn's HTTP handling, the kernel's loopback TCP and wrk "
        "itself cost on these two cores, and bounds any Python server here.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `apt-get install wrk` (`make bench-serving` does it)")
    info = machine()
    home = Path(tempfile.mkdtemp(prefix="keiko-bench-serving-"))
    try:
        print(f"building the {' and '.join(MODELS)} models in {home}", flush=True)
        built = build_models(home)
        requests = {}
        for model, (_, golden) in built.items():
            rows, expected, bodies = golden_requests(golden, home / f"{model}-bodies.jsonl")
            script = home / f"{model}.lua"
            script.write_text(WRK_SCRIPT % {"bodies": bodies})
            requests[model] = rows, expected, script
        turns = [(name, model) for name, model in SERVERS.items() if name not in ALTERNATING]
        alternating = [(name, SERVERS[name]) for _ in range(args.rounds) for name in ALTERNATING]
        measured: dict[str, list[dict[str, float]]] = {}
        unlogged = unlogged_project(home)
        for name, model in [*alternating, *turns]:
            env = {**child_env(home), "KEIKO_BENCH_MODEL": str(built[model][0]), "KEIKO_BENCH_MODEL_NAME": model}
            if name == "ctr-unlogged":
                env["KEIKO_PROJECT_DIR"] = str(unlogged)
            rows, expected, script = requests[model]
            offset = list(SERVERS).index(name)
            ports = [args.port + 2 * offset, args.port + 2 * offset + 1]
            log = home / f"{name}.log"
            with replicas(name, ports, env, log) as (urls, pids):
                try:
                    wait_and_check(name, urls, rows, expected)
                except SystemExit:
                    print(f"{name}'s log:\n{log.read_text()[-3000:]}", flush=True)
                    raise
                result = measure(name, urls, pids, script, args)
                result.update(prediction_log_counts(urls))
            measured.setdefault(name, []).append(result)
        results = {name: median_result(runs) for name, runs in measured.items()}
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
