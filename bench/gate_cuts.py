"""What each cut of the gates' cost saves: every gate run with one cut undone at a time, on the same data.

Needs a bench home whose pipeline has run (`bench/pipeline.py --home DIR --keep`, then `--home DIR/full`
here). Each variant undoes one cut in the child before `keiko.cli.entry` runs; the variants of a gate
take turns, `--rounds` times, and the table shows each one's median wall seconds and the phase the cut
is about (keiko.phases; `exit`, from the result line to the process's end, is measured here). The
machine is shared: compare within one run. Results go to the `## Gate cuts` section of bench/RESULTS.md.

    .venv/bin/python bench/gate_cuts.py --home /tmp/bench/full --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from pipeline import MODEL, RESULT_PREFIX, child_env, machine, write_section  # noqa: E402

# name: (what is undone, Python run in the child first, the phase it shows in)
VARIANTS = {
    "as committed": ("", "", "wall"),
    "full GE import": (
        "Great Expectations imported with every optional back end, scipy.stats and altair",
        "import keiko.gates.lean_import as m; m.uninstall(); import great_expectations; m.skip_batch_fingerprints();",
        "imports",  # every import phase: a prelude's imports land in "import keiko"
    ),
    "batch fingerprints": (
        "GE hashes every row of each batch under 1 GB",
        "import keiko.gates.lean_import as m; m.skip_batch_fingerprints = lambda: None;",
        "validate",
    ),
    "SUMMARY results": (
        "result format SUMMARY for every suite (unexpected-row indices for each column expectation)",
        "import keiko.gates.runner as m; f = m._result_format; "
        "m._result_format = lambda v: {**f(v), 'result_format': 'SUMMARY'};",
        "validate",
    ),
    "Data Docs always": (
        "Data Docs rendered for a passed gate too",
        "import keiko.gates.runner as m; m.wants_data_docs = lambda outcomes: True;",
        "data docs",
    ),
    "interpreter exit": (
        "the interpreter's teardown after the result line",
        "import sys, keiko.cli as m; m.exit_now = sys.exit;",
        "exit",
    ),
}
GATES = ("raw", "features", "training", "evaluation")


def run_gate(gate: str, ds: str, prelude: str, env: dict[str, str], result: Path) -> dict[str, float]:
    argv = ["keiko", "gate", gate, "--model", MODEL, "--ds", ds]
    code = f"{prelude} import sys; sys.argv = {argv!r}; from keiko.cli import entry; entry()".lstrip()
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output, result_at = [], None
    for line in child.stdout:
        if line.startswith(RESULT_PREFIX):
            result_at = time.perf_counter() - started
        output.append(line)
    child.wait()
    wall = time.perf_counter() - started
    if child.returncode != 0 or result_at is None:
        raise SystemExit(f"gate {gate} failed ({child.returncode}): {''.join(output)[-2000:]}")
    phases = json.loads(result.read_text())["phases"]
    imports = sum(seconds for name, seconds in phases.items() if name.startswith("import"))
    return {"wall": wall, "exit": wall - result_at, "imports": imports, **phases}


def measure(home: Path, ds: str, rounds: int) -> dict[str, dict[str, dict[str, float]]]:
    env = child_env(home)
    medians: dict[str, dict[str, dict[str, float]]] = {}
    for gate in GATES:
        result = home / "artifacts" / MODEL / ds / "gates" / f"{gate}.json"
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
        for _ in range(rounds):
            for name in VARIANTS:
                runs[name].append(run_gate(gate, ds, VARIANTS[name][1], env, result))
                print(f"  gate_{gate} {name}: {runs[name][-1]['wall']:.2f} s", flush=True)
        medians[gate] = {
            name: {key: statistics.median(run.get(key, 0.0) for run in got) for key in got[0]}
            for name, got in runs.items()
        }
    return medians


def table(medians: dict[str, dict[str, dict[str, float]]]) -> str:
    """Per cut: the phase it is about, as committed -> undone, per gate; the last column sums the phase's
    growth (less disturbed by other load than the wall clock, shown in brackets)."""
    lines = [
        "| undone | what | phase | " + " | ".join(f"gate_{g}" for g in medians) + " | all four |",
        "|---|---|---|" + "---:|" * (len(medians) + 1),
    ]
    for name, (what, _, shown) in VARIANTS.items():
        runs = [(figures["as committed"], figures[name]) for figures in medians.values()]
        if name == "as committed":
            cells = [f"{base['wall']:.2f} s" for base, _ in runs]
            total = f"{sum(base['wall'] for base, _ in runs):.2f} s"
        else:
            cells = [
                f"{b.get(shown, 0.0):.2f} -> {u.get(shown, 0.0):.2f} (wall {u['wall'] - b['wall']:+.2f})"
                for b, u in runs
            ]
            grown = sum(u.get(shown, 0.0) - b.get(shown, 0.0) for b, u in runs)
            total = f"{grown:+.2f} s (wall {sum(u['wall'] - b['wall'] for b, u in runs):+.2f})"
        lines.append(
            f"| {name} | {what or 'nothing: the gates as they are'} | {shown} | " + " | ".join(cells) + f" | {total} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="a bench home whose pipeline ran (DIR/full)")
    parser.add_argument("--ds", default="2026-11-21")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    load_start = machine()["load"]
    medians = measure(args.home.resolve(), args.ds, args.rounds)
    command = shlex.join([os.path.relpath(sys.executable, REPO), *sys.argv])
    section = "\n".join(
        [
            "## Gate cuts",
            "",
            f"Command: `cd {REPO} && {command}` (load average {load_start} at start, {machine()['load']} at end).",
            "",
            f"Each gate of the home's run, {args.rounds} rounds, variants taking turns; medians. A cell is the "
            "phase the cut is about, as committed -> with the cut undone, and the wall-clock difference.",
            "",
            table(medians),
        ]
    )
    print("\n" + section)
    if not args.no_write:
        write_section(args.results, "gate-cuts", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
