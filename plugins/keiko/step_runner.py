"""Runs one pipeline step for one model and day: what `keiko stage|gate <name>` does once its arguments parse.

The step module's `run(ctx)` returns its typed result (keiko.contract). Around it, the runner:
- records the step in the run's record (keiko.runs), however it ends, with a one-line message;
- adds the step's seconds and peak RSS to its result and writes it to the step's result file;
- redraws the run page;
- prints the result as the last line (and, in a pod, writes it where the XCom sidecar reads it), for the
  operator to return as the task's XCom (keiko.process).
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import time

from keiko import phases
from keiko.contract import RESULTS, StepResult
from keiko.errors import KeikoError, StageSkipped
from keiko.pipeline import MONITOR_DAG, STEPS
from keiko.process import RESULT_FILE_ENV, RESULT_PREFIX, RETRIES_LEFT_ENV, encode_result
from keiko.runs import StepRecord, one_line, write_step
from keiko.stages.context import StageContext, peak_rss_mb


def _refresh_run_page(ctx: StageContext) -> None:
    """Redraw the run's page (keiko.report), or for a monitor step the model's monitoring page
    (keiko.report.monitoring), with what this step added, however the step ended."""
    page = "monitoring page" if ctx.dag == MONITOR_DAG else "run page"
    try:
        if ctx.dag == MONITOR_DAG:
            from keiko.report.monitoring import write_monitoring_page

            uri = write_monitoring_page(ctx.store, ctx.registry, ctx.model)
        else:
            from keiko.report import write_run_page

            uri = write_run_page(ctx.store, ctx.model.name, ctx.ds.isoformat())
    except Exception as exc:  # the page is for reading: failing to draw it must not fail the step
        ctx.log(f"{page} not updated: {type(exc).__name__}: {exc}")
    else:
        ctx.log(f"{page}: {uri}")


def _failed_or_retrying() -> str:
    """A failure Airflow will retry is not the run's end: `keiko status` and the run page say "retrying"."""
    return "retrying" if int(os.environ.get(RETRIES_LEFT_ENV) or 0) > 0 else "failed"


def run_step(task_id: str, model: str, ds: dt.date) -> StepResult:
    """Run the step `task_id` (extract, gate_raw, ...) of `model` for `ds`; its result, with timings.

    StageSkipped, KeikoError (GateFailed included) and bugs propagate, after the step is recorded."""
    step = STEPS[task_id]
    ctx = StageContext.create(model, ds, dag=step.dag)
    with phases.phase("import keiko"):
        module = importlib.import_module(step.module)
    ctx.log(f"{step.command} --model {model} --ds {ds}: starting")
    started_at, started = dt.datetime.now(dt.UTC), time.monotonic()

    def record(outcome: str, message: str) -> None:
        write_step(
            ctx.layout,
            StepRecord(
                task_id=task_id,
                outcome=outcome,
                message=one_line(message),
                run_id=ctx.run_id,
                started_at=started_at.isoformat(timespec="milliseconds"),
                finished_at=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                seconds=round(time.monotonic() - started, 3),
                trigger=ctx.trigger,
            ),
        )
        _refresh_run_page(ctx)

    try:
        result = module.run(ctx)
    except StageSkipped as exc:
        record("skipped", str(exc))
        raise
    except KeikoError as exc:  # the user's to fix, and not retried, unless its cause is infrastructure
        record(_failed_or_retrying() if exc.retryable else "failed", str(exc))
        raise
    except Exception as exc:
        record(_failed_or_retrying(), f"{type(exc).__name__}: {exc}")
        raise
    expected = RESULTS[task_id]
    if type(result) is not expected:  # the contract, checked where it is kept
        problem = f"{step.module}.run returned {type(result).__name__}, not {expected.__name__}"
        record("failed", problem)
        raise TypeError(problem)
    timings = {"seconds": round(time.monotonic() - started, 3), "peak_rss_mb": round(peak_rss_mb(), 1)}
    if "phases" in type(result).model_fields:  # a gate's: up to here; what follows is the parent's to see
        timings["phases"] = phases.seconds()
    result = result.model_copy(update=timings)
    ctx.layout.write_result(result)
    summary = f"{task_id} done in {result.seconds:.1f}s, peak RSS {result.peak_rss_mb:,.0f} MB"
    record("success", summary)
    ctx.log(summary)
    encoded = encode_result(result.model_dump(mode="json"))
    if result_file := os.environ.get(RESULT_FILE_ENV):
        with open(result_file, "w") as f:
            f.write(encoded)
    print(RESULT_PREFIX + encoded, flush=True)
    return result
