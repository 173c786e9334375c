"""The sensors on a DuckDB warehouse: they defer while partitions are missing (no worker slot held), and their
trigger fires once the data lands.

- The monitor's, Airflow's FileSensor on one partition (no Airflow connection needed).
- The model DAG's wait_for_data, on every partition of the run's data window: what it waits for in its log,
  and a one-line failure at its deadline.
"""

import asyncio
import datetime as dt
import logging

import pytest
from airflow.providers.standard.triggers.file import FileTrigger
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, TaskDeferred

from conftest import DS, END_DATE
from keiko.config import settings
from keiko.operators.sensors import DataWindowSensor, partition_sensor
from keiko.triggers import WarehousePartitionsTrigger


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


@pytest.fixture
def own_warehouse(keiko_home, warehouse_dir, tmp_path, monkeypatch):
    """A warehouse of the session's partitions (linked, not copied) that a test may add days to."""
    own = tmp_path / "own-warehouse"
    for table in ("impressions", "clicks"):
        for partition in (warehouse_dir / table).iterdir():
            (own / table).mkdir(parents=True, exist_ok=True)
            (own / table / partition.name).symlink_to(partition)
    monkeypatch.setenv("KEIKO_WAREHOUSE_DIR", str(own))

    def land(table: str, day: str) -> None:  # that day's logs arrive (a copy of the last day's)
        (own / table / f"dt={day}").symlink_to(warehouse_dir / table / f"dt={END_DATE}")

    return land


@pytest.fixture
def logged(capsys, caplog):
    """What the sensor (Airflow's structlog, to stdout) and the trigger (logging) logged so far."""
    caplog.set_level(logging.INFO)
    seen: list[str] = []

    def text() -> str:
        seen.append(capsys.readouterr().out)
        return "".join(seen) + caplog.text

    return text


def data_wait(ds: str, hours: float = 6) -> DataWindowSensor:
    sensor = DataWindowSensor(task_id="wait_for_data", model="ctr", ds=ds, timeout=hours * 3600)
    return sensor


def test_a_run_whose_window_is_in_waits_for_nothing(own_warehouse, logged):
    data_wait(DS).execute(context={"params": {}})  # no TaskDeferred
    assert "all 16 partitions of the data window 2026-11-14..2026-11-21 are in the warehouse" in logged()


def test_a_run_past_the_data_defers_saying_what_it_waits_for_and_goes_on_once_it_lands(own_warehouse, logged):
    sensor = data_wait("2026-11-22")
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context={"params": {}})
    assert (
        "waiting for partitions clicks/dt=2026-11-22, impressions/dt=2026-11-22 (2 of 16 missing; data window "
        "2026-11-15..2026-11-22), for up to 6 h, checking every 120 s"
    ) in logged()
    trigger = deferred.value.trigger
    assert isinstance(trigger, WarehousePartitionsTrigger)
    assert (trigger.tables, trigger.first, trigger.last) == (["clicks", "impressions"], "2026-11-15", "2026-11-22")
    # Serialized as the triggerer gets it, and rebuilt from that.
    path, kwargs = trigger.serialize()
    assert path == "keiko.triggers.WarehousePartitionsTrigger"
    trigger = WarehousePartitionsTrigger(**{**kwargs, "poke_seconds": 0.1})

    async def landing() -> object:
        waiting = asyncio.ensure_future(anext(trigger.run()))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        own_warehouse("impressions", "2026-11-22")
        await asyncio.sleep(0.5)
        assert not waiting.done()  # one of the two is not enough
        own_warehouse("clicks", "2026-11-22")
        return await asyncio.wait_for(waiting, timeout=30)

    event = asyncio.run(landing())
    assert event.payload == {"status": "present"}
    assert "waiting for partitions impressions/dt=2026-11-22 (1 missing)" not in logged()  # clicks it was
    assert "waiting for partitions clicks/dt=2026-11-22 (1 missing)" in logged()
    sensor.execute_complete(context={}, event=event.payload)


def test_at_its_deadline_the_wait_fails_in_one_line_naming_the_missing_partitions(own_warehouse):
    sensor = data_wait("2026-11-23", hours=0.5)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context={"params": {}})
    assert deferred.value.timeout == dt.timedelta(minutes=30, seconds=240)  # Airflow's own limit comes after
    _, kwargs = deferred.value.trigger.serialize()
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).isoformat()
    event = asyncio.run(anext(WarehousePartitionsTrigger(**{**kwargs, "deadline": past}).run()))
    assert event.payload["status"] == "timeout"
    with pytest.raises(AirflowSensorTimeout) as timed_out:  # Airflow never retries a sensor's timeout
        sensor.execute_complete(context={}, event=event.payload)
    message = str(timed_out.value)
    assert message == (
        "wait_for_data: 4 partitions still missing after 0.5 h: clicks/dt=2026-11-22, clicks/dt=2026-11-23, "
        "impressions/dt=2026-11-22, impressions/dt=2026-11-23; once the logs have landed, clear this task"
    )


def test_the_window_follows_the_runs_window_days_and_a_typo_fails_before_any_wait(own_warehouse, logged):
    data_wait(DS).execute(context={"params": {"window_days": 9}})
    assert "all 18 partitions of the data window 2026-11-13..2026-11-21" in logged()
    with pytest.raises(AirflowFailException, match="unknown run parameter window_day"):
        data_wait("2026-11-30").execute(context={"params": {"window_day": 9}})


def test_a_failed_wait_is_in_the_run_record_for_the_page_why_and_status(own_warehouse, capsys):
    from keiko.cli import main

    sensor = data_wait("2026-11-23", hours=0.5)
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute_complete(
            context={"run_id": "manual__late"}, event={"status": "timeout", "missing": ["clicks/dt=2026-11-23"]}
        )
    capsys.readouterr()
    assert main(["why", "ctr", "2026-11-23"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "ctr 2026-11-23: NOT promoted: wait_for_data failed"
    assert lines[1] == (
        "  wait_for_data: 1 partitions still missing after 0.5 h: clicks/dt=2026-11-23; once the logs have landed, "
        "clear this task"
    )
    page = (settings().home / "artifacts" / "ctr" / "2026-11-23" / "report.html").read_text()
    assert "failed at wait_for_data" in page
