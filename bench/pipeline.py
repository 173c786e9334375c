"""Benchmark of one ctr retrain: wall seconds and peak RSS of every pipeline stage, plus scoring latency.

What it measures:

* `keiko synth` once per run (timed separately: generating the warehouse is not part of a retrain);
* the day before's extract and gate_raw, untimed in the totals, so the timed run finds what a daily schedule
  leaves: the window's earlier source partitions validated (keiko.gates.raw reuses their verdicts);
* each stage `extract`, `features`, `train`, `evaluate`, `register` run as its own child process
  (`python -m keiko stage ...`), timed by wall clock and with the child's own peak RSS from `os.wait4`;
* the baseline measured in the same run: the same pipeline at rows-per-day / 10 in a separate home,
  so the table shows how each stage scales with data;
* each Great Expectations gate (`python -m keiko gate ...`) after the stage it checks, in DAG order,
  against the target "all gates together <= 10% of the pipeline's wall time", split into phases: the
  ones the gate process records in its result (`GateResult.phases`, keiko.phases) and the two only this
  parent sees: what the child did after its result was recorded until its result line arrived (the step
  record, the run page, the line itself: added to `write`) and its exit after that line;
* a scoring micro-benchmark on the trained model: keiko's weight-lookup `predict` (1 row at a time and a
  batch of 10,000 rows) against scikit-learn's `predict_proba` of an `SGDClassifier` holding the same
  coef_/intercept_ on the same one-hot sparse rows, in µs/row, with the max abs difference of the two.

The totals are compared with the target "7M rows retrain in <= 300 s with peak RSS <= 4096 MB on a 2-core
machine". Results go to the `## Pipeline` section of bench/RESULTS.md (other sections are kept).

Run from the repository root:

    .venv/bin/python bench/pipeline.py                         # 9 days x 1,000,000 rows (several minutes)
    .venv/bin/python bench/pipeline.py --rows-per-day 100000 --no-write --keep
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODEL = "ctr"
STAGES = ("extract", "features", "train", "evaluate", "register")
GATES = ("raw", "features", "training", "evaluation")
# DAG order: each gate checks what the stage before it wrote (register needs gate_evaluation's blessing).
PIPELINE = (
    ("stage", "extract"), ("gate", "raw"), ("stage", "features"), ("gate", "features"), ("stage", "train"),
    ("gate", "training"), ("stage", "evaluate"), ("gate", "evaluation"), ("stage", "register"),
)  # fmt: skip
GATE_TARGET = 0.10  # all gates together <= 10% of the pipeline's wall time
TARGET_ROWS, TARGET_SECONDS, TARGET_RSS_MB = 7_000_000, 300.0, 4096.0
CODE_DIRS = ("plugins/keiko", "include")
LOG_LINE = re.compile(r"^\[\s*(?P<t>[0-9.]+)s\] (?P<message>.*)$")
SINGLE_ROWS, BATCH_ROWS = 2_000, 10_000


RESULT_PREFIX = "keiko-result: "  # keiko.process.RESULT_PREFIX: a step's last line
# A gate's phases in the order they happen (keiko.phases; "exit" is the parent's).
PHASES = (
    "start", "import keiko", "import pandas, pyarrow", "import great_expectations", "read", "own work",
    "validate", "data docs", "write", "exit",
)  # fmt: skip


@dataclass
class ChildRun:
    """One child process: wall seconds, its own peak RSS (from wait4) and its combined stdout/stderr;
    `result_at`: seconds after the start when its result line arrived (None: it printed none)."""

    name: str
    seconds: float
    peak_rss_mb: float
    output: list[str]
    result_at: float | None = None


@dataclass
class PipelineRun:
    label: str
    rows_per_day: int
    home: Path
    synth: ChildRun | None = None
    # The day before's extract and gate_raw (untimed in the totals): what a scheduled run finds validated.
    day_before: dict[str, ChildRun] = field(default_factory=dict)
    stages: dict[str, ChildRun] = field(default_factory=dict)
    gates: dict[str, ChildRun] = field(default_factory=dict)

    @property
    def retrain_seconds(self) -> float:
        return sum(run.seconds for run in self.stages.values())

    @property
    def gate_seconds(self) -> float:
        return sum(run.seconds for run in self.gates.values())

    @property
    def max_rss_mb(self) -> float:
        return max(run.peak_rss_mb for run in self.stages.values())

    def result(self, ds: dt.date, task: str) -> dict[str, Any]:
        """A step's result file (keiko.contract names it), as written."""
        layout = run_layout(self.home, ds)
        return json.loads(layout.store.read_bytes(layout.step_result(task)))

    def evaluation(self, ds: dt.date) -> dict[str, Any]:
        layout = run_layout(self.home, ds)
        return json.loads(layout.store.read_bytes(layout.evaluation))


def run_layout(home: Path, ds: dt.date, model: str = MODEL):
    """Where keiko.contract puts `model`'s run of `ds` under the benchmark's KEIKO_HOME."""
    from keiko.contract import RunLayout
    from keiko.storage import ArtifactStore

    return RunLayout(ArtifactStore((home / "artifacts").as_uri()), model, ds.isoformat())


# ---------------------------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows-per-day", type=int, default=1_000_000, help="impressions per day (default 1,000,000)")
    parser.add_argument(
        "--days", type=int, default=9, help="days of warehouse to write (>= window_days + 1: the day before's run)"
    )
    parser.add_argument("--end-date", type=dt.date.fromisoformat, default=dt.date(2026, 11, 21), help="the run's ds")
    parser.add_argument("--seed", type=int, default=7, help="synth seed (default 7)")
    parser.add_argument(
        "--home", type=Path, help="empty bench home, kept (default: a fresh temp dir, deleted unless --keep)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the bench home afterwards")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md", help="markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update --results")
    args = parser.parse_args(argv)
    window = window_days()
    if args.days < window + 1:
        parser.error(f"--days must be >= the {MODEL} model's window_days + 1 ({window + 1}), got {args.days}")
    if args.rows_per_day < 10:
        parser.error("--rows-per-day must be >= 10 (the baseline runs at a tenth of it)")
    return args


def window_days() -> int:
    os.environ["KEIKO_PROJECT_DIR"] = str(REPO)  # the same model definition the children will run
    from keiko.modeldef import load_model

    return load_model(MODEL).config.window_days


# ---------------------------------------------------------------------------------------------- children


def child_env(home: Path) -> dict[str, str]:
    # Drop every inherited KEIKO_* (artifact root, registry URL, ...): all locations derive from the bench home.
    env = {key: value for key, value in os.environ.items() if not key.startswith("KEIKO_")}
    env.update(KEIKO_HOME=str(home), KEIKO_PROJECT_DIR=str(REPO), PYTHONUNBUFFERED="1")
    return env


def run_child(name: str, command: list[str], env: dict[str, str]) -> ChildRun:
    """Run a child, streaming its output; wait4 gives the child's own rusage (ru_maxrss in KiB on Linux)."""
    print(f"  $ {shlex.join(command[1:])}", flush=True)
    output: list[str] = []
    result_at = None
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(RESULT_PREFIX):
            result_at = time.perf_counter() - started
        output.append(line.rstrip("\n"))
        print(f"    {line}", end="", flush=True)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
    process.stdout.close()
    if process.returncode != 0:
        print(f"\n{name} failed with exit code {process.returncode}; its output:\n" + "\n".join(output), flush=True)
        raise SystemExit(1)
    return ChildRun(name, seconds, usage.ru_maxrss / 1024, output, result_at)


def run_pipeline(label: str, home: Path, rows_per_day: int, args: argparse.Namespace) -> PipelineRun:
    print(f"\n== {label} run: {args.days} days x {rows_per_day:,} rows/day in {home}", flush=True)
    home.mkdir(parents=True, exist_ok=True)
    env, keiko = child_env(home), [sys.executable, "-m", "keiko"]
    run = PipelineRun(label, rows_per_day, home)
    synth_args = ["--end-date", args.end_date.isoformat(), "--days", str(args.days)]
    synth_args += ["--rows-per-day", str(rows_per_day), "--seed", str(args.seed)]
    run.synth = run_child("synth", [*keiko, "synth", *synth_args], env)
    # A scheduled run finds the window's earlier days validated by the runs before: gate_raw then judges the
    # new day's partitions only (keiko.gates.raw). The day before's gate_raw leaves that state, as it would.
    day_before = (args.end_date - dt.timedelta(days=1)).isoformat()
    for kind, name in (("stage", "extract"), ("gate", "raw")):
        command = [*keiko, kind, name, "--model", MODEL, "--ds", day_before]
        run.day_before[name] = run_child(f"{kind} {name} (the day before)", command, env)
    for kind, name in PIPELINE:
        command = [*keiko, kind, name, "--model", MODEL, "--ds", args.end_date.isoformat()]
        steps = run.stages if kind == "stage" else run.gates
        steps[name] = run_child(f"{kind} {name}", command, env)
    return run


# ---------------------------------------------------------------------------------------------- scoring


def sklearn_twin(weights: np.ndarray, bias: float):
    """An SGDClassifier that holds the given weights: what scoring with scikit-learn's predict_proba costs."""
    from sklearn.linear_model import SGDClassifier

    classifier = SGDClassifier(loss="log_loss")
    classifier.coef_ = weights.reshape(1, -1).astype(np.float64)
    classifier.intercept_ = np.array([bias], dtype=np.float64)
    classifier.classes_ = np.array([0, 1])
    classifier.n_features_in_ = weights.size
    return classifier


def best_seconds(function, items: list, repeats: int) -> float:
    """Fastest of `repeats` passes calling `function` on every item (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for item in items:
            function(item)
        best = min(best, time.perf_counter() - started)
    return best


def scoring_benchmark(run: PipelineRun, ds: dt.date) -> dict[str, Any]:
    from keiko.algorithms import load_model_bytes
    from keiko.algorithms.hashed_lr import _one_hot
    from keiko.stages.train import feature_arrays

    layout = run_layout(run.home, ds)
    model = load_model_bytes(layout.store.read_bytes(run.result(ds, "train")["model_uri"]))
    features, _ = feature_arrays(layout.store.read_table(layout.split("test")), "impression_id")
    n_batch = min(BATCH_ROWS, len(features[model.slots[0]]))
    n_single = min(SINGLE_ROWS, n_batch)
    batch = {slot: np.ascontiguousarray(features[slot][:n_batch]) for slot in model.slots}
    matrix = _one_hot(batch, model.slots, model.weights.size)
    classifier = sklearn_twin(model.weights, model.bias)
    single_features = [{slot: batch[slot][i : i + 1] for slot in model.slots} for i in range(n_single)]
    single_sparse = [matrix[i] for i in range(n_single)]

    def one_hot_then_sklearn(row: dict[str, np.ndarray]) -> np.ndarray:
        return classifier.predict_proba(_one_hot(row, model.slots, model.weights.size))

    timings = {
        "keiko predict, 1 row per call": best_seconds(model.predict, single_features, 3) / n_single,
        f"keiko predict, batch of {n_batch:,}": best_seconds(model.predict, [batch] * 20, 1) / (20 * n_batch),
        "sklearn predict_proba, 1 sparse row per call": best_seconds(classifier.predict_proba, single_sparse, 3)
        / n_single,
        "sklearn one-hot + predict_proba, 1 row per call": best_seconds(one_hot_then_sklearn, single_features, 3)
        / n_single,
        f"sklearn predict_proba, batch of {n_batch:,}": best_seconds(classifier.predict_proba, [matrix] * 20, 1)
        / (20 * n_batch),
    }
    keiko_single = np.concatenate([model.predict(row) for row in single_features])
    sklearn_single = np.concatenate([classifier.predict_proba(row)[:, 1] for row in single_sparse])
    diffs = [
        np.abs(model.predict(batch) - classifier.predict_proba(matrix)[:, 1]).max(),
        np.abs(keiko_single - sklearn_single).max(),
        np.abs(keiko_single - model.predict(batch)[:n_single]).max(),
    ]
    return {
        "us_per_row": {name: seconds * 1e6 for name, seconds in timings.items()},
        "max_abs_diff": float(max(diffs)),
        "single_rows": n_single,
        "batch_rows": n_batch,
        "weights": int(model.weights.size),
        "slots": len(model.slots),
    }


# ---------------------------------------------------------------------------------------------- code state


def code_fingerprint() -> str:
    """sha256 of the package and model code the children run: detects edits made while the benchmark runs."""
    digest = hashlib.sha256()
    for directory in CODE_DIRS:
        for path in sorted((REPO / directory).rglob("*")):
            if path.is_file() and path.suffix in {".py", ".yaml", ".sql"}:
                digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def git_state() -> str:
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return result.stdout

    dirty = [line[3:] for line in git("status", "--porcelain", "--", *CODE_DIRS).splitlines()]
    changes = f", uncommitted changes in {', '.join(dirty)}" if dirty else ""
    return f"commit {git('rev-parse', '--short=12', 'HEAD').strip() or 'unknown'}{changes}"


def code_note(fingerprints: list[str], state: str) -> str:
    """One line for the report; a loud warning when the code changed between the runs."""
    if len(set(fingerprints)) == 1:
        return f"Code: {state}; code fingerprint {fingerprints[0]} (unchanged during the benchmark)."
    return (
        f"**Warning: the package or model code changed while the benchmark ran** (fingerprints "
        f"{' -> '.join(fingerprints)} at start, after the 1/10 run, at the end): the two runs may not be "
        f"comparable. Code at the end: {state}."
    )


# ---------------------------------------------------------------------------------------------- reporting


def machine() -> dict[str, str]:
    meminfo = Path("/proc/meminfo").read_text()
    total_kib = int(re.search(r"^MemTotal:\s+(\d+) kB", meminfo, re.MULTILINE).group(1))
    cpu = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "memory": f"{total_kib / 1024**2:.1f} GiB",
        "cpu": cpu.group(1).strip() if cpu else platform.processor() or "unknown",
        "python": platform.python_version(),
        "load": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
    }


def stage_table(full: PipelineRun, tenth: PipelineRun) -> str:
    lines = [
        f"| stage | {full.label} s | {full.label} peak RSS MB | {tenth.label} s | {tenth.label} peak RSS MB "
        "| time ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for stage in ("synth", *STAGES):
        a = full.synth if stage == "synth" else full.stages[stage]
        b = tenth.synth if stage == "synth" else tenth.stages[stage]
        name = "synth (not part of the retrain)" if stage == "synth" else stage
        lines.append(
            f"| {name} | {a.seconds:.1f} | {a.peak_rss_mb:,.0f} | {b.seconds:.1f} | {b.peak_rss_mb:,.0f} "
            f"| {a.seconds / b.seconds:.1f}x |"
        )
    for gate in GATES:
        a, b = full.gates[gate], tenth.gates[gate]
        lines.append(
            f"| gate_{gate} | {a.seconds:.1f} | {a.peak_rss_mb:,.0f} | {b.seconds:.1f} | {b.peak_rss_mb:,.0f} "
            f"| {a.seconds / b.seconds:.1f}x |"
        )
    lines.append(
        f"| **retrain (extract..register)** | **{full.retrain_seconds:.1f}** | **{full.max_rss_mb:,.0f}** (max) "
        f"| **{tenth.retrain_seconds:.1f}** | **{tenth.max_rss_mb:,.0f}** (max) "
        f"| {full.retrain_seconds / tenth.retrain_seconds:.1f}x |"
    )
    lines.append(
        f"| **gates (all four)** | **{full.gate_seconds:.1f}** | | **{tenth.gate_seconds:.1f}** | "
        f"| {full.gate_seconds / tenth.gate_seconds:.1f}x |"
    )
    return "\n".join(lines)


def gate_phases(run: PipelineRun, ds: dt.date, gate: str) -> dict[str, float]:
    """Seconds by phase of one gate process: its own figures, plus the parent's `exit` (after the result
    line) and the tail before that line (step record, run page, the line) added to `write`."""
    child = run.gates[gate]
    figures = dict(run.result(ds, f"gate_{gate}")["phases"])
    result_at = child.result_at if child.result_at is not None else child.seconds
    figures["write"] = figures.get("write", 0.0) + result_at - sum(figures.values())
    figures["exit"] = child.seconds - result_at
    return {name: figures.get(name, 0.0) for name in PHASES}


def phase_table(run: PipelineRun, ds: dt.date) -> str:
    per_gate = {gate: gate_phases(run, ds, gate) for gate in GATES}
    total = {name: sum(figures[name] for figures in per_gate.values()) for name in PHASES}
    gate_seconds = sum(total.values())
    lines = [
        "| gate | " + " | ".join(PHASES) + " | wall |",
        "|---|" + "---:|" * (len(PHASES) + 1),
    ]
    for gate, figures in per_gate.items():
        cells = " | ".join(f"{figures[name]:.2f}" for name in PHASES)
        lines.append(f"| gate_{gate} | {cells} | {run.gates[gate].seconds:.2f} |")
    lines.append(
        "| **all four** | " + " | ".join(f"**{total[name]:.2f}**" for name in PHASES) + f" | **{gate_seconds:.2f}** |"
    )
    lines.append(
        "| share of gate time | " + " | ".join(f"{total[name] / gate_seconds:.0%}" for name in PHASES) + " | |"
    )
    return "\n".join(lines)


def gate_verdict(full: PipelineRun, ds: dt.date) -> str:
    """All gates against the 10% target, with the phases that bound them."""
    total = full.retrain_seconds + full.gate_seconds
    share = full.gate_seconds / total
    phases = {name: sum(gate_phases(full, ds, gate)[name] for gate in GATES) for name in PHASES}
    fixed = sum(phases[name] for name in PHASES[:4]) + phases["exit"]
    verdict = "**met**" if share <= GATE_TARGET else "**not met**"
    cold = full.day_before["raw"].seconds
    return (
        f'Gate target "all gates together <= {GATE_TARGET:.0%} of the pipeline\'s wall time": {verdict}: '
        f"gates {full.gate_seconds:.1f} s of {total:.1f} s ({share:.1%}), in the steady state of a daily "
        f"schedule: gate_raw validated the new day's source partitions and reused the verdicts of the others "
        f"(the day before's gate_raw, untimed here, validated its whole window cold in {cold:.1f} s). "
        "Of the gate time, "
        f"{fixed:.1f} s ({fixed / total:.1%} of the pipeline) is paid by each process before or after any "
        f"data: interpreter start, imports ({phases['import great_expectations']:.1f} s of it Great "
        f"Expectations') and exit; reading {phases['read']:.1f} s, the gates' own work "
        f"{phases['own work']:.1f} s, validating {phases['validate']:.1f} s, Data Docs "
        f"{phases['data docs']:.1f} s, writing {phases['write']:.1f} s."
    )


def target_verdict(full: PipelineRun, ds: dt.date) -> str:
    rows = full.result(ds, "extract")["rows"]
    time_ok, rss_ok = full.retrain_seconds <= TARGET_SECONDS, full.max_rss_mb <= TARGET_RSS_MB
    verdict = "**met**" if time_ok and rss_ok else "**not met**"
    parts = [
        f"retrain {full.retrain_seconds:.1f} s vs <= {TARGET_SECONDS:.0f} s ({'ok' if time_ok else 'over'})",
        f"max peak RSS {full.max_rss_mb:,.0f} MB vs <= {TARGET_RSS_MB:.0f} MB ({'ok' if rss_ok else 'over'})",
    ]
    note = "" if rows == TARGET_ROWS else f" (note: the target is for {TARGET_ROWS:,} rows; this window had {rows:,})"
    return (
        f'Target "7M rows retrain in <= 300 s with peak RSS <= 4096 MB on this 2-core machine": {verdict} '
        f"on {rows:,} rows: " + "; ".join(parts) + note + "."
    )


def quality_lines(runs: list[PipelineRun], ds: dt.date) -> list[str]:
    lines = []
    for run in runs:
        evaluation = run.evaluation(ds)
        candidate, bayes = evaluation["candidate"], evaluation["bayes_optimal_logloss"]
        bayes_text = f"{bayes:.5f} (gap {evaluation['candidate_gap_to_bayes']:+.2%})" if bayes else "unavailable"
        lines.append(
            f"- {run.label}: test logloss {candidate['logloss']:.5f}, AUC {candidate['auc']:.4f} on "
            f"{evaluation['test_rows']:,} test rows; Bayes-optimal logloss {bayes_text}"
        )
    return lines


def scoring_table(scoring: dict[str, Any]) -> str:
    lines = ["| scorer | µs/row |", "|---|---:|"]
    lines += [f"| {name} | {us:,.3f} |" for name, us in scoring["us_per_row"].items()]
    return "\n".join(lines)


def log_events(child: ChildRun) -> list[tuple[float, str]]:
    """The stage's own `[  12.3s] message` log lines: seconds since the stage's first log line."""
    events = []
    for line in child.output:
        match = LOG_LINE.match(line)
        if match:
            events.append((float(match["t"]), match["message"]))
    return events


def train_epochs(child: ChildRun) -> tuple[int, float, float]:
    """(epochs run, seconds until the first epoch was logged, mean seconds per later epoch)."""
    stamps = [t for t, message in log_events(child) if message.startswith("epoch ")]
    if not stamps:
        return 0, 0.0, 0.0
    per_epoch = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else stamps[0]
    return len(stamps), stamps[0], per_epoch


def startup_seconds(run: PipelineRun, ds: dt.date) -> float:
    """Wall time outside the stages' own `run()` (interpreter start, imports, context): wall - in-stage."""
    inside = sum(run.result(ds, stage)["seconds"] for stage in STAGES)
    return run.retrain_seconds - inside


def where_time_goes(full: PipelineRun, tenth: PipelineRun, scoring: dict[str, Any], ds: dt.date) -> str:
    total = full.retrain_seconds
    ranked = sorted(STAGES, key=lambda stage: -full.stages[stage].seconds)
    shares = ", ".join(f"{s} {full.stages[s].seconds:.1f} s ({full.stages[s].seconds / total:.0%})" for s in ranked)
    epochs, first_epoch, per_epoch = train_epochs(full.stages["train"])
    heaviest = max(STAGES, key=lambda stage: full.stages[stage].peak_rss_mb)
    rows_ratio = full.rows_per_day / tenth.rows_per_day
    us = scoring["us_per_row"]
    keiko_one, sklearn_one = us["keiko predict, 1 row per call"], us["sklearn predict_proba, 1 sparse row per call"]
    keiko_batch = us[f"keiko predict, batch of {scoring['batch_rows']:,}"]
    return (
        f"Of the {total:.1f} s retrain: {shares}. "
        f"Train ran {epochs} epochs: {first_epoch:.1f} s until the first epoch was logged (loading the splits, "
        f"building the one-hot matrix, the first pass) and about {per_epoch:.1f} s per further epoch. "
        f"About {startup_seconds(full, ds):.1f} s of the total is outside the stages' own run() "
        f"(5 interpreter starts, imports, writing results). "
        f"With {rows_ratio:.0f}x the data the retrain took {total / tenth.retrain_seconds:.1f}x as long "
        f"({tenth.retrain_seconds:.1f} s at 1/{rows_ratio:.0f}), and the peak RSS went from "
        f"{tenth.max_rss_mb:,.0f} MB to {full.max_rss_mb:,.0f} MB (largest in {heaviest}). "
        f"Scoring one row costs {keiko_one:.1f} µs with keiko's weight lookup vs {sklearn_one:.1f} µs with "
        f"scikit-learn's predict_proba ({sklearn_one / keiko_one:.1f}x); in a batch keiko needs "
        f"{keiko_batch:.3f} µs/row."
    )


def report(args, full: PipelineRun, tenth: PipelineRun, scoring: dict[str, Any], info: dict[str, str]) -> str:
    ds = args.end_date
    command = shlex.join([os.path.relpath(sys.executable, REPO), *sys.argv])
    return "\n".join(
        [
            "## Pipeline",
            "",
            f"Command: `cd {REPO} && {command}`",
            "",
            f"Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}. Machine: {info['nproc']} CPUs "
            f"({info['cpu']}), {info['memory']} RAM, Python {info['python']}. Load average at start "
            f"{info['load_start']}, at end {info['load_end']}: other work may have been running on this machine "
            "at the same time, so the seconds are an upper bound of what an idle machine would need.",
            "",
            info["code"],
            "",
            f"Model `{MODEL}`, ds {ds}, {args.days} days written, seed {args.seed}. Each stage is a separate "
            "`python -m keiko stage ...` child: seconds are its wall clock (including interpreter start and "
            "imports), peak RSS is that child's own `ru_maxrss` from `os.wait4`.",
            "",
            stage_table(full, tenth),
            "",
            target_verdict(full, ds),
            "",
            gate_verdict(full, ds),
            "",
            f"Seconds by phase of each gate process ({full.label} run; `keiko.phases`, `exit` measured here):",
            "",
            phase_table(full, ds),
            "",
            "Model quality (evaluation.json):",
            "",
            *quality_lines([full, tenth], ds),
            "",
            f"### Scoring ({scoring['slots']} slots, {scoring['weights']:,} weights; model of the {full.label} run)",
            "",
            "Best of 3 passes over the same test rows; the sklearn twin is an `SGDClassifier` with the model's "
            "coef_/intercept_ scored on the same one-hot sparse rows (`keiko.algorithms.hashed_lr._one_hot`).",
            "",
            scoring_table(scoring),
            "",
            f"Max abs difference between keiko's and scikit-learn's probabilities: {scoring['max_abs_diff']:.2e}.",
            "",
            "### Where the time goes",
            "",
            where_time_goes(full, tenth, scoring, ds),
        ]
    )


def write_section(path: Path, name: str, section: str) -> None:
    """Replace the text between `<!-- name:start -->` and `<!-- name:end -->` (appended if absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{section}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.home and args.home.exists() and any(args.home.iterdir()):
        raise SystemExit(f"--home {args.home} is not empty: a benchmark needs a fresh home (no registry, no data)")
    home = args.home.resolve() if args.home else Path(tempfile.mkdtemp(prefix="keiko-bench-"))
    info, fingerprints = machine(), [code_fingerprint()]
    try:
        tenth = run_pipeline("1/10", home / "tenth", args.rows_per_day // 10, args)
        fingerprints.append(code_fingerprint())
        full = run_pipeline("full", home / "full", args.rows_per_day, args)
        fingerprints.append(code_fingerprint())
        print("\n== scoring micro-benchmark", flush=True)
        scoring = scoring_benchmark(full, args.end_date)
        info["load_start"], info["load_end"] = info["load"], machine()["load"]
        info["code"] = code_note(fingerprints, git_state())
        section = report(args, full, tenth, scoring, info)
        print("\n" + section, flush=True)
        if not args.no_write:
            write_section(args.results, "pipeline", section)
            print(f"\nwrote {args.results}")
    finally:
        if args.keep or args.home:
            print(f"kept the bench home {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
