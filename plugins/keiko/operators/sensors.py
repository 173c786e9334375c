"""What the monitor DAG waits on before it judges a day: each outcome table's partition of the day, landed.

Both sensors are Airflow's own and deferrable: while a partition is missing the task waits in the triggerer,
holding no worker slot, and fails after monitor.wait_hours (a day's outcomes that never land are an incident
of their own, not a monitor alarm).
"""

from __future__ import annotations

import datetime as dt
from functools import cached_property

from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.sdk import BaseOperator

from keiko.config import Settings

POKE_SECONDS = 600  # outcomes land in daily batches: a look every ten minutes is soon enough


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
