"""The operator-process contract: how a `keiko stage|gate` process tells its operator how it ended.

Both operators (a local subprocess, a Kubernetes pod) run the same command and read it back the same way:
the exit code says how it ended, the last line of output (or, in a pod, the XCom sidecar's file) carries
the step's result as JSON. 0 is done. Nothing here imports more than the standard library: the operators import it
in the Airflow worker.
"""

from __future__ import annotations

import json
from typing import Any

EXIT_USER_ERROR = 2  # a mistake the user can fix, said in one line (unknown model, missing partition)
EXIT_GATE_FAILED = 3  # a gate's expectations failed (its table is printed): deterministic, never retried
EXIT_RETRYABLE = 75  # infrastructure that may work on a retry (sysexits' EX_TEMPFAIL): the task is retried
EXIT_SKIPPED = 99  # the step decided, correctly, to do nothing: the task shows as skipped
EXIT_INTERRUPTED = 130

# Any other non-zero exit (1: an unexpected exception, -9: killed) is retried like EXIT_RETRYABLE; these are not,
# since a retry would fail the same way and only delay the page.
NOT_RETRIED = frozenset({EXIT_USER_ERROR, EXIT_GATE_FAILED})

RESULT_PREFIX = "keiko-result: "
RESULT_FILE_ENV = "KEIKO_RESULT_FILE"  # in a pod: where KubernetesPodOperator's XCom sidecar reads the result
RUN_ID_ENV = "KEIKO_RUN_ID"  # the Airflow run id; empty when run by hand
RUN_TYPE_ENV = "KEIKO_RUN_TYPE"  # Airflow's dag_run.run_type: scheduled, manual, backfill, ...
# approve_promotion (keiko.operators.approval) to promote: the person's choice, one of APPROVAL_OPTIONS, and who.
APPROVAL_ENV, APPROVED_BY_ENV = "KEIKO_APPROVAL", "KEIKO_APPROVED_BY"
PROMOTE, KEEP_STABLE = "Promote", "Keep stable"
APPROVAL_OPTIONS = (PROMOTE, KEEP_STABLE)
RETRIES_LEFT_ENV = "KEIKO_RETRIES_LEFT"  # tries Airflow has left after this one: a failure to retry is "retrying"


def retried(exit_code: int) -> bool:
    """Whether Airflow retries a step that exited with `exit_code` (while it has tries left)."""
    return exit_code != 0 and exit_code not in NOT_RETRIED and exit_code != EXIT_SKIPPED


def step_arguments(kind: str, name: str, model: str, ds: str) -> list[str]:
    """What follows `keiko` on a step's command line (`stage extract --model M --ds D`): what both operators
    and `keiko run` start."""
    return [kind, name, "--model", model, "--ds", ds]


def encode_result(result: dict[str, Any]) -> str:
    """A step's result as it goes to the operator: printed after RESULT_PREFIX as the last line, or written
    to RESULT_FILE_ENV's file; the operator returns it as the task's XCom."""
    return json.dumps(result, sort_keys=True, default=str)


def parse_result_line(line: str) -> dict[str, Any] | None:
    """The result a step printed on `line`, or None when `line` is not one."""
    return json.loads(line[len(RESULT_PREFIX) :]) if line.startswith(RESULT_PREFIX) else None


def next_call_seconds(result: dict[str, Any] | None) -> float | None:
    """A repeated step's (keiko.pipeline.REPEATED) wait before its next call while its result says `running`; None
    once it has ended."""
    if result and result.get("state") == "running":
        return float(result["next_check_seconds"])
    return None
