"""What the DAGs wait on, deferred (in the triggerer, holding no worker slot), before they read the warehouse.

- The model DAG's `wait_for_data`: every partition its run's extract reads (DataWindowSensor), up to model.yaml's
  run.wait_for_data_hours; then it fails in one line naming what is missing, without retries.
- The monitor DAG's `wait_for_<table>`: each outcome table's partition of the judged day, with Airflow's own
  sensors (partition_sensor), up to monitor.wait_hours (a day's outcomes that never land are an incident of their
  own, not a monitor alarm).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.sdk import BaseOperator, BaseSensorOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

from keiko.config import Settings
from keiko.operators.links import RunPageLink

POKE_SECONDS = 600  # outcomes land in daily batches: a look every ten minutes is soon enough
DATA_POKE_SECONDS = 120  # a run waits for its own day's logs: two minutes late at most


@dataclass(frozen=True)
class DataWait:
    """What a run waits for: the tables its extract reads over its data window, and which partitions are missing."""

    tables: list[str]
    first: dt.date
    last: dt.date
    missing: list[str]  # `table/dt=day`

    @property
    def partitions(self) -> int:
        return len(self.tables) * ((self.last - self.first).days + 1)

    @property
    def window(self) -> str:
        return f"{self.first}..{self.last}"


def waiting_for(model: str, ds: str, params: dict[str, Any]) -> DataWait:
    """What the run of `model` for `ds` with `params` waits for, looked up now. Also `make backfill`'s, for a
    waiting day."""
    from keiko.config import settings
    from keiko.modeldef import load_model
    from keiko.run_params import RunParams
    from keiko.warehouse import days_between, open_warehouse, window_tables

    definition = load_model(model)
    run = RunParams.parse(params, definition.config)
    definition = definition.with_run_params(window_days=run.window_days, algorithm_params=run.algorithm)
    tables, first, last = window_tables(definition, dt.date.fromisoformat(ds))
    missing = open_warehouse(settings()).missing_partitions(tables, days_between(first, last))
    return DataWait(sorted(tables), first, last, missing)


class DataWindowSensor(BaseSensorOperator):
    """Wait until every partition the run's extract reads is in the warehouse, deferred to
    keiko.triggers.WarehousePartitionsTrigger; fail after `timeout` seconds naming the partitions still missing.

    :param model: model name (a folder under include/models/)
    :param ds: the run's day, YYYY-MM-DD (templated; defaults to the logical date)
    """

    template_fields: Sequence[str] = ("model", "ds")
    operator_extra_links = (RunPageLink(),)
    ui_color = "#f4eddb"

    def __init__(self, *, model: str, ds: str = "{{ ds }}", **kwargs: Any) -> None:
        kwargs.setdefault("poke_interval", DATA_POKE_SECONDS)
        super().__init__(**kwargs)
        self.model = model
        self.ds = ds

    def execute(self, context: Any) -> None:
        from keiko.run_params import refuse_invalid
        from keiko.triggers import WarehousePartitionsTrigger
        from keiko.warehouse import describe_partitions

        params = dict(context.get("params", {}))
        try:
            refuse_invalid(self.model, params)  # a typo'd param fails here, at once, not after the wait
        except AirflowFailException as exc:
            self._record_failure(context, str(exc))
            raise
        wait = waiting_for(self.model, self.ds, params)
        if not wait.missing:
            self.log.info("all %d partitions of the data window %s are in the warehouse", wait.partitions, wait.window)
            return
        self.log.info(
            "waiting for partitions %s (%d of %d missing; data window %s), for up to %g h, checking every %g s",
            describe_partitions(wait.missing), len(wait.missing), wait.partitions, wait.window, self.timeout / 3600,
            self.poke_interval,
        )  # fmt: skip
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.timeout)
        self.defer(
            trigger=WarehousePartitionsTrigger(
                tables=wait.tables,
                first=wait.first.isoformat(),
                last=wait.last.isoformat(),
                deadline=deadline.isoformat(),
                poke_seconds=self.poke_interval,
            ),
            method_name="execute_complete",
            # Airflow's own limit, a little after the trigger's deadline: the trigger names what is missing.
            timeout=dt.timedelta(seconds=self.timeout + 2 * self.poke_interval),
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> None:
        from keiko.warehouse import describe_partitions

        if event["status"] == "present":
            self.log.info("every partition of the data window is in the warehouse")
            return
        missing = event["missing"]
        message = (
            f"wait_for_data: {len(missing)} partitions still missing after {self.timeout / 3600:g} h: "
            f"{describe_partitions(missing)}; once the logs have landed, clear this task"
        )
        self._record_failure(context, message)
        raise AirflowSensorTimeout(message)

    def _record_failure(self, context: Any, message: str) -> None:
        """Into the run's record, as a step's failure is (keiko.runs), and the run page redrawn: they, `keiko why`
        and `keiko status` then name this task and its line. Best effort: the task fails with `message` anyway."""
        from keiko.config import settings
        from keiko.contract import RunLayout
        from keiko.report import write_run_page
        from keiko.runs import StepRecord, one_line, write_step
        from keiko.storage import open_store

        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        try:
            store = open_store(settings())
            run_id = str(context.get("run_id") or "")
            record = StepRecord(self.task_id, "failed", one_line(message), run_id, now, now, 0)
            write_step(RunLayout(store, self.model, self.ds), record)
            write_run_page(store, self.model, self.ds)
        except Exception:
            self.log.exception("could not record wait_for_data's failure in the run record")


class WarehousePartitionSensor(FileSensor):
    """FileSensor on a DuckDB warehouse partition. The folder is keiko's setting (KEIKO_WAREHOUSE_DIR), so the
    path is taken as given instead of joined to an Airflow `fs` connection's, which FileSensor otherwise needs."""

    @cached_property
    def path(self) -> str:
        return self.filepath


def partition_sensor(
    *, task_id: str, table: str, day: str, config: Settings, wait: dt.timedelta, **kwargs: object
) -> BaseOperator:
    """A deferrable sensor for `table`'s partition `dt=<day>` (`day` templated) on the configured warehouse."""
    common = {"task_id": task_id, "deferrable": True, "poke_interval": POKE_SECONDS, "timeout": wait.total_seconds()}
    if config.warehouse == "athena":
        from airflow.providers.amazon.aws.sensors.glue_catalog_partition import GlueCatalogPartitionSensor

        return GlueCatalogPartitionSensor(
            table_name=table,
            expression=f"dt='{day}'",
            database_name=config.athena_database,
            aws_conn_id=config.aws_conn_id or None,
            **common,
            **kwargs,
        )
    return WarehousePartitionSensor(filepath=f"{config.warehouse_dir}/{table}/dt={day}/*.parquet", **common, **kwargs)
