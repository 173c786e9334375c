"""The monitor's sensor on a DuckDB warehouse partition: it defers to Airflow's FileTrigger while the partition is
missing (no worker slot held), and the trigger fires once the day's file lands; no Airflow connection needed."""

import asyncio
import datetime as dt

import pytest
from airflow.providers.standard.triggers.file import FileTrigger
from airflow.sdk.exceptions import TaskDeferred

from keiko.config import settings
from keiko.operators.sensors import partition_sensor


def test_a_missing_partition_defers_and_its_landing_fires_the_trigger(keiko_home, tmp_path, monkeypatch):
    monkeypatch.setenv("KEIKO_WAREHOUSE_DIR", str(tmp_path / "warehouse"))
    sensor = partition_sensor(
        task_id="wait_for_clicks", table="clicks", day="2026-11-22", config=settings(), wait=dt.timedelta(hours=24)
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context={})
    trigger = deferred.value.trigger
    assert isinstance(trigger, FileTrigger) and deferred.value.timeout == dt.timedelta(hours=24)
    assert trigger.filepath == f"{tmp_path}/warehouse/clicks/dt=2026-11-22/*.parquet"

    async def landed() -> object:
        waiting = asyncio.ensure_future(anext(trigger.run()))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # nothing there yet: still waiting
        partition = tmp_path / "warehouse" / "clicks" / "dt=2026-11-22"
        partition.mkdir(parents=True)
        (partition / "part-0.parquet").write_bytes(b"PAR1")
        return await asyncio.wait_for(waiting, timeout=30)

    trigger.poke_interval = 0.1
    assert asyncio.run(landed()) is not None
    sensor.execute(context={})  # landed: no deferral
