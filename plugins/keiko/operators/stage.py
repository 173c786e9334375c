"""KeikoStageOperator: runs `keiko stage <name> --model M --ds D` and streams its output to the task log.

The command is the container contract: here it runs as a local subprocess (the embedded default);
in production the same command runs in a pod from the project image.

A repeated step (keiko.pipeline.REPEATED: the canary) is called again while its result says `running`: between the
calls the task defers to Airflow's TimeDeltaTrigger for the result's `next_check_seconds`, so an hours-long canary
holds a worker slot only for the seconds of each analysis.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow.providers.standard.hooks.subprocess import SubprocessHook
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from keiko.assets import publish_if_moved
from keiko.config import settings
from keiko.operators.links import RunPageLink
from keiko.process import (
    EXIT_SKIPPED,
    RETRIES_LEFT_ENV,
    RUN_ID_ENV,
    next_call_seconds,
    parse_result_line,
    retried,
    step_arguments,
)
from keiko.run_params import refuse_invalid


def again_after(returned: dict[str, Any] | None) -> dt.timedelta | None:
    seconds = next_call_seconds(returned)
    return None if seconds is None else dt.timedelta(seconds=seconds)


def defer_until_next_call(operator: BaseOperator, wait: dt.timedelta) -> None:
    from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

    operator.log.info("still running: next call in %s, deferred (no worker slot held)", wait)
    operator.defer(trigger=TimeDeltaTrigger(wait), method_name="call_again")


class KeikoStageOperator(BaseOperator):
    """Run one keiko stage (or gate) for one model and day.

    :param model: model name (a folder under include/models/)
    :param stage: stage or gate suite name (keiko.pipeline: extract, ..., rollback; raw, ..., serving)
    :param kind: "stage" or "gate"
    :param ds: the run's day, YYYY-MM-DD (templated; defaults to the logical date)
    :param env: extra environment for the stage process (templated)
    :param repeat: call the command again while its result says `running` (deferring in between)
    """

    template_fields: Sequence[str] = ("model", "ds", "env")
    operator_extra_links = (RunPageLink(),)
    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        model: str,
        stage: str,
        kind: str = "stage",
        ds: str = "{{ ds }}",
        env: dict[str, str] | None = None,
        repeat: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.stage = stage
        self.kind = kind
        self.ds = ds
        self.env = env or {}
        self.repeat = repeat

    @cached_property
    def hook(self) -> SubprocessHook:
        return SubprocessHook()

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "keiko", *step_arguments(self.kind, self.stage, self.model, self.ds)]

    def execute(self, context: Any) -> dict[str, Any] | None:
        refuse_invalid(self.model, context.get("params", {}))
        ti = context.get("ti")
        retries_left = max(0, ti.max_tries - ti.try_number) if ti is not None else 0
        env = {
            **os.environ,
            **self.env,
            RUN_ID_ENV: str(context.get("run_id", "")),
            RETRIES_LEFT_ENV: str(retries_left),
        }
        result = self.hook.run_command(self.command, env=env, cwd=str(settings().project_dir))
        if result.exit_code == EXIT_SKIPPED:
            raise AirflowSkipException(result.output)
        if result.exit_code != 0:
            failed = AirflowException if retried(result.exit_code) else AirflowFailException
            raise failed(f"keiko {self.kind} {self.stage} failed (exit {result.exit_code}): {result.output}")
        returned = parse_result_line(result.output)  # SubprocessHook's output is the last line
        if self.repeat and (wait := again_after(returned)) is not None:
            defer_until_next_call(self, wait)
        publish_if_moved(context, self.outlets, self.model, returned)
        return returned

    def call_again(self, context: Any, event: Any = None) -> dict[str, Any] | None:
        return self.execute(context)

    def on_kill(self) -> None:
        self.hook.send_sigterm()
