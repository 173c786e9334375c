"""The `keiko` command line: parses arguments and turns how a command ended into its exit code.

`keiko stage|gate <name> --model M --ds D` is also the container contract: the operators run exactly
that command (keiko.step_runner does the work), and `keiko run` runs a day's steps that way
(keiko.local_run). User mistakes (unknown model, bad date, missing partition) print one line and exit 2; a
failed gate prints its table and exits 3; a stage that decides to do nothing exits 99 (the Airflow task is
then skipped); bugs keep their traceback (keiko.process).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Sequence

from keiko import phases  # first: the phase clock starts before keiko's own imports
from keiko.errors import GateFailed, KeikoError, StageSkipped
from keiko.faults import FAULTS
from keiko.pipeline import MONITOR_TASK_IDS, STAGES, SUITES, TASK_IDS, task_id
from keiko.process import EXIT_GATE_FAILED, EXIT_INTERRUPTED, EXIT_RETRYABLE, EXIT_SKIPPED, EXIT_USER_ERROR

phases.claim("import keiko")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
STEP_COMMANDS = ("stage", "gate")


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def _injections(args: argparse.Namespace) -> dict[dt.date, list[str]]:
    """--inject KIND[:DATE] (DATE defaults to --end-date) -> {day: [kinds]}; bad values are user errors."""
    first = args.end_date - dt.timedelta(days=args.days - 1)
    faults: dict[dt.date, list[str]] = {}
    for spec in args.inject:
        kind, _, day_text = spec.partition(":")
        if kind not in FAULTS:
            raise KeikoError(f"--inject {spec}: unknown fault {kind!r}; known: {', '.join(FAULTS)}")
        try:
            day = dt.date.fromisoformat(day_text) if day_text else args.end_date
        except ValueError:
            raise KeikoError(f"--inject {spec}: {day_text!r} is not a date (YYYY-MM-DD)") from None
        if not first <= day <= args.end_date:
            raise KeikoError(f"--inject {spec}: {day} is outside the days written ({first}..{args.end_date})")
        faults.setdefault(day, []).append(kind)
    return faults


def cmd_synth(args: argparse.Namespace) -> int:
    from keiko.config import settings
    from keiko.synth import write_warehouse

    faults = _injections(args)
    directory = settings().warehouse_dir
    print(
        f"writing {args.days} days x ~{args.rows_per_day:,} rows ending {args.end_date} "
        f"to {directory} (seed {args.seed})"
    )
    started = time.monotonic()
    write_warehouse(directory, args.end_date, args.days, args.rows_per_day, args.seed, faults=faults)
    print(f"done in {time.monotonic() - started:.1f}s")
    return 0


def cmd_traffic(args: argparse.Namespace) -> int:
    from keiko.traffic import live_day

    live_day(
        args.model,
        args.day,
        rows=args.rows,
        rate=args.rate,
        shifts=args.shift,
        seed=args.seed,
        rows_per_request=args.rows_per_request,
    )
    return 0


def cmd_step(args: argparse.Namespace) -> int:
    with phases.phase("import pandas, pyarrow"):  # every step reads tables
        import pandas  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    with phases.phase("import keiko"):
        from keiko.step_runner import run_step  # a step's imports, for step commands only

    run_step(task_id(args.command, args.name), args.model, args.ds)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from keiko.local_run import run
    from keiko.pipeline import MODEL_DAG, MONITOR_DAG

    return run(args.model, args.ds, args.until, args.conf, dag=MONITOR_DAG if args.monitor else MODEL_DAG)


def cmd_monitor(args: argparse.Namespace) -> int:
    from keiko.config import settings
    from keiko.modeldef import load_model
    from keiko.report.monitoring import summary_lines
    from keiko.storage import open_store

    for line in summary_lines(open_store(settings()), load_model(args.model), days=args.days):
        print(line)
    return 0


def _print_versions(versions: list, as_json: bool, aliases: dict[str, int]) -> None:
    if as_json:
        print(json.dumps([v.to_dict() for v in versions], indent=2, default=str))
        return
    by_version = {}
    for alias, version in aliases.items():
        by_version.setdefault(version, []).append(alias)
    print(
        f"{'version':>7}  {'status':<10} {'ds':<10}  {'window':<23} "
        f"{'test logloss':>12} {'AUC':>6}  {'sha256':<12}  aliases"
    )
    for v in versions:
        test = v.metrics.get("test", {})
        print(
            f"{v.version:>7}  {v.status:<10} {v.ds:<10}  {v.window_start}..{v.window_end} "
            f"{test.get('logloss', float('nan')):>12.5f} {test.get('auc', float('nan')):>6.3f}  "
            f"{v.artifact_sha256[:12]}  {','.join(by_version.get(v.version, []))}"
        )


def cmd_models(args: argparse.Namespace) -> int:
    from keiko.config import settings
    from keiko.modeldef import load_model
    from keiko.registry import open_registry

    load_model(args.model)  # unknown model -> clear error
    registry = open_registry(settings().registry_url)
    aliases = registry.aliases_of(args.model)
    if args.models_command == "list":
        _print_versions(registry.list(args.model), args.json, aliases)
        return 0
    entry = registry.get(args.model, args.version)
    data = {**entry.to_dict(), "aliases": [a for a, v in aliases.items() if v == entry.version]}
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        for key, value in data.items():
            if key != "metrics":
                print(f"{key:>16}: {value}")
        print(f"{'metrics':>16}: {json.dumps(entry.metrics, indent=2, default=str)}")
    return 0


def _serve_replicas(args: argparse.Namespace, port: int, grpc_port: int | None, replicas: int) -> int:
    """One `keiko serve` process per replica on consecutive ports; stops them all when stopped."""
    import signal
    import subprocess

    models = [item for model in args.model for item in ("--model", model)]
    command = [sys.executable, "-m", "keiko", "serve", *models, "--host", args.host, "--replicas", "1"]
    children = [
        subprocess.Popen(
            [*command, "--port", str(port + i), *(["--grpc-port", str(grpc_port + i)] if grpc_port else ["--no-grpc"])]
        )
        for i in range(replicas)
    ]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # -> finally: stop the replicas too
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        failed = next(child for child in children if child.poll() is not None)
        print(f"keiko: error: a replica exited with {failed.returncode}; stopping the others", file=sys.stderr)
        return 1
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(timeout=30)


def cmd_serve(args: argparse.Namespace) -> int:
    from keiko.modeldef import load_model

    if args.host not in LOOPBACK_HOSTS and not os.environ.get("KEIKO_ADMIN_TOKEN"):
        raise KeikoError(f"--host {args.host} is reachable beyond this machine: set KEIKO_ADMIN_TOKEN for /admin/*")
    if len(set(args.model)) != len(args.model):
        raise KeikoError(f"--model names a model twice: {' '.join(args.model)}")
    serving = load_model(args.model[0]).config.serving  # the first model's settings are the process's
    port = args.port or serving.port
    grpc_port = None if args.no_grpc or serving.grpc_port is None else args.grpc_port or serving.grpc_port
    if args.port and not args.grpc_port and grpc_port is not None:  # moved with --port: two servers never share it
        grpc_port = args.port + serving.grpc_port - serving.port
    replicas = args.replicas or serving.replicas
    last = port + replicas - 1
    where = f"http://{args.host}:{port}" + (f"..{last}" if replicas > 1 else "")
    grpc = ""
    if grpc_port:
        grpc = f", gRPC {args.host}:{grpc_port}" + (f"..{grpc_port + replicas - 1}" if replicas > 1 else "")
    if len(args.model) == 1:
        print(f"serving {args.model[0]}: {replicas} replica(s) on {where}{grpc}", flush=True)
    else:
        print(f"serving {', '.join(args.model)} in each of {replicas} replica(s) on {where}{grpc}", flush=True)
        for model in args.model:
            urls = ",".join(f"http://{args.host}:{p}/models/{model}" for p in range(port, last + 1))
            print(f"  {model}: its rollouts need KEIKO_SERVING_URLS_{model.upper()}={urls}", flush=True)
    if replicas > 1:
        return _serve_replicas(args, port, grpc_port, replicas)

    import uvicorn

    from keiko.serving.app import create_app
    from keiko.serving.http_protocol import KeikoHttpProtocol

    uvicorn.run(
        create_app(args.model, grpc_port=grpc_port, grpc_address=args.host),
        host=args.host,
        port=port,
        loop="uvloop",
        http=KeikoHttpProtocol,
        log_level="warning",
        access_log=False,
    )
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from keiko.summary import print_summary

    print_summary(args.model, args.ds)
    return 0


def cmd_why(args: argparse.Namespace) -> int:
    from keiko.oncall.why import why

    print("\n".join(why(args.model, args.ds)))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from keiko.oncall.status import status

    print(status(args.json, args.models or None))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from keiko.oncall.rollback import rollback

    print(rollback(args.model, args.to, args.reason), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keiko", description="Keeps production ML models fresh.")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write the synthetic DSP warehouse under $KEIKO_HOME/warehouse")
    synth.add_argument("--end-date", type=_date, required=True, help="last day to write (YYYY-MM-DD)")
    synth.add_argument("--days", type=_positive, required=True, help="number of days ending with --end-date")
    synth.add_argument(
        "--rows-per-day", type=_positive, required=True, help="mean impressions per day (weekday cycle, noise)"
    )
    synth.add_argument("--seed", type=int, default=7, help="same seed and day, same rows (default 7)")
    synth.add_argument(
        "--inject",
        action="append",
        default=[],
        metavar="KIND[:DATE]",
        help="write a data fault into one day (default --end-date); repeatable. Kinds: " + ", ".join(FAULTS),
    )
    synth.set_defaults(func=cmd_synth)

    traffic = sub.add_parser(
        "traffic", help="live one synthetic day through the model servers: its requests, then its outcomes"
    )
    traffic.add_argument("--model", required=True)
    traffic.add_argument("--day", type=_date, required=True, help="the day whose impressions are served")
    traffic.add_argument(
        "--rows", type=_positive, help="impressions of the day (default: as many as the day before has)"
    )
    traffic.add_argument("--rate", type=float, help="requests a second at most (default: as fast as served)")
    traffic.add_argument(
        "--shift",
        action="append",
        default=[],
        metavar="KIND=VALUE",
        help="change the world from --day on; repeatable: click-rate=F, app-share=S|off, encoding=upper|off",
    )
    traffic.add_argument("--seed", type=int, default=7, help="the synthetic world's seed (default 7)")
    traffic.add_argument(
        "--rows-per-request",
        type=_positive,
        default=1,
        metavar="N",
        help="impressions in one /predict request (default 1: one auction a request; more: a day in less time)",
    )
    traffic.set_defaults(func=cmd_traffic)

    stage = sub.add_parser("stage", help="run one pipeline stage for one model and day")
    stage.add_argument("name", metavar="stage", choices=STAGES)
    stage.add_argument("--model", required=True)
    stage.add_argument("--ds", type=_date, required=True, help="the run's day: last day of the data window")
    stage.set_defaults(func=cmd_step)

    gate = sub.add_parser("gate", help="run one Great Expectations gate on a stage's output")
    gate.add_argument("name", metavar="suite", choices=SUITES)
    gate.add_argument("--model", required=True)
    gate.add_argument("--ds", type=_date, required=True, help="the run's day")
    gate.set_defaults(func=cmd_step)

    run_help = (
        "run a model's DAG for one day without Airflow: each step as its own process, in order, with the DAG's "
        "trigger rules; exits with the first failed step's code, its reason the last line"
    )
    run = sub.add_parser("run", help=run_help, description=run_help)
    run.add_argument("--model", required=True)
    run.add_argument("--ds", type=_date, required=True, help="the run's day: last day of the data window")
    run.add_argument(
        "--until",
        metavar="TASK",
        help=f"the last task to run (default: the last): one of {', '.join(TASK_IDS)}; with --monitor one of "
        + ", ".join(MONITOR_TASK_IDS),
    )
    run.add_argument(
        "--monitor",
        action="store_true",
        help="run the model's monitor (keiko_monitor_<model>) judging day --ds instead: " + ", ".join(MONITOR_TASK_IDS),
    )
    run.add_argument(
        "--conf",
        default="{}",
        metavar="JSON",
        help="the run's params, as the trigger form takes them, e.g. '{\"deploy\": \"skip\"}' (default: model.yaml's)",
    )
    run.set_defaults(func=cmd_run)

    monitor_help = "how the served model did, day by day: online vs offline metrics, drift, traffic per version"
    monitor = sub.add_parser("monitor", help=monitor_help, description=monitor_help)
    monitor.add_argument("model")
    monitor.add_argument("--days", type=_positive, default=14, help="the last N monitored days (default 14)")
    monitor.set_defaults(func=cmd_monitor)

    models = sub.add_parser("models", help="read the model registry")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    listing = models_sub.add_parser("list", help="versions of a model")
    listing.add_argument("model")
    listing.add_argument("--json", action="store_true")
    show = models_sub.add_parser("show", help="one version with its lineage")
    show.add_argument("model")
    show.add_argument("version", type=_positive)
    show.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)

    serve = sub.add_parser("serve", help="run a model server, or several replicas of it")
    serve.add_argument(
        "--model", required=True, action="append", help="a model to host; repeat it to host several in each replica"
    )
    serve.add_argument("--port", type=_positive, help="first replica's port (default: serving.port of model.yaml)")
    serve.add_argument(
        "--grpc-port",
        type=_positive,
        help="first replica's gRPC port (default: serving.grpc_port of model.yaml; with --port, as far from it as "
        "grpc_port is from serving.port)",
    )
    serve.add_argument("--no-grpc", action="store_true", help="serve no gRPC")
    serve.add_argument(
        "--replicas", type=_positive, help="replicas on consecutive ports (default: serving.replicas of model.yaml)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.set_defaults(func=cmd_serve)

    summary = sub.add_parser("summary", help="what a run produced: rows, metrics, versions, a live prediction")
    summary.add_argument("--model", required=True)
    summary.add_argument("--ds", type=_date, required=True)
    summary.set_defaults(func=cmd_summary)

    why = sub.add_parser("why", help="why a day's run did or did not put its model in production")
    why.add_argument("model")
    why.add_argument("ds", type=_date, help="the run's day (YYYY-MM-DD)")
    why.set_defaults(func=cmd_why)

    status = sub.add_parser("status", help="each model: production version, its age, the last run's outcome")
    status.add_argument("models", nargs="*", help="these models only (default: every model)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    rollback = sub.add_parser(
        "rollback", help="roll the serving replicas back to an earlier version, then move the production alias"
    )
    rollback.add_argument("model")
    rollback.add_argument(
        "--to",
        type=_positive,
        metavar="VERSION",
        help="a registered version (default: the one production pointed at before its last move)",
    )
    rollback.add_argument("--reason", default="", help="why: kept in the alias history and the rollback record")
    rollback.set_defaults(func=cmd_rollback)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except GateFailed as exc:
        print(f"keiko: {exc}", file=sys.stderr, flush=True)
        return EXIT_GATE_FAILED
    except StageSkipped as exc:
        print(f"skipped: {exc}", flush=True)
        return EXIT_SKIPPED
    except KeikoError as exc:
        print(f"keiko: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_RETRYABLE if exc.retryable else EXIT_USER_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def entry() -> None:
    """`keiko ...` and `python -m keiko ...`: main, then the exit.

    A step command leaves with os._exit once its output is flushed: the interpreter's teardown (freeing
    every object of frames of millions of rows, module by module) would add seconds after the result line
    and changes nothing the step wrote; its files are closed and atomically moved before main returns.
    Other commands exit normally (a model server stops its replicas on the way out)."""
    argv = sys.argv[1:]
    code = main(argv)
    if argv[:1] and argv[0] in STEP_COMMANDS:
        exit_now(code)
    sys.exit(code)


def exit_now(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
