"""keiko traffic through two live replicas: every impression of the day is answered, spread over both, logged
with its ids; the day's outcomes land in the warehouse; an encoding change reaches only the online path."""

import datetime as dt
import shutil

import pyarrow.parquet as pq
import pytest

from conftest import DS, serve_replicas
from keiko.cli import main
from keiko.process import EXIT_USER_ERROR
from keiko.synth import partition_path
from keiko.warehouse import DuckDBWarehouse

pytestmark = pytest.mark.server
DAY = dt.date.fromisoformat(DS) + dt.timedelta(days=1)


@pytest.fixture
def live(run_home, warehouse_dir, tmp_path, monkeypatch):
    """ctr v1 on two replicas, over a private copy of the warehouse (traffic writes days into it)."""
    warehouse = shutil.copytree(warehouse_dir, tmp_path / "warehouse")
    monkeypatch.setenv("KEIKO_WAREHOUSE_DIR", str(warehouse))
    monkeypatch.setenv("KEIKO_MODEL_VERSION", "1")  # registered, not deployed
    with serve_replicas(2) as (apps, urls):
        monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", ",".join(urls))
        yield apps, warehouse


def logged(home) -> list[dict]:
    return DuckDBWarehouse(home / "served").query("SELECT * FROM predictions ORDER BY request_id").to_pylist()


def test_a_day_of_traffic_is_answered_by_every_replica_logged_and_its_outcomes_written(live, run_home, capsys):
    apps, warehouse = live
    assert main(["traffic", "--model", "ctr", "--day", DAY.isoformat(), "--rows", "400"]) == 0
    assert "400 of 400 answered" in capsys.readouterr().out
    assert [app.state.server.unseen[1].rows for app in apps] == [200, 200]  # spread as a load balancer would

    impressions = pq.read_table(partition_path(warehouse, "impressions", DAY))
    clicks = pq.read_table(partition_path(warehouse, "clicks", DAY))
    assert impressions.num_rows == 400 and partition_path(warehouse, "truth", DAY).exists()
    assert set(clicks["impression_id"].to_pylist()) <= set(impressions["impression_id"].to_pylist())

    for app in apps:
        app.state.server.prediction_log.flush()
    rows = logged(run_home)
    assert sorted(r["impression_id"] for r in rows) == sorted(impressions["impression_id"].to_pylist())
    assert {r["request_id"] for r in rows} == {f"traffic-{DAY}-{n}" for n in range(400)}
    by_id = {r["impression_id"]: r for r in impressions.to_pylist()}
    assert all(r["user_id"] == by_id[r["impression_id"]]["user_id"] for r in rows)
    assert all(r["os"] == by_id[r["impression_id"]]["os"] for r in rows)


def test_an_encoding_change_is_seen_online_only_and_holds_from_its_day_on(live, run_home):
    apps, warehouse = live
    later = DAY + dt.timedelta(days=1)
    assert (
        main(["traffic", "--model", "ctr", "--day", DAY.isoformat(), "--rows", "100", "--shift", "encoding=upper"]) == 0
    )
    assert main(["traffic", "--model", "ctr", "--day", later.isoformat(), "--rows", "100"]) == 0  # still in force
    for app in apps:
        app.state.server.prediction_log.flush()
    served_os = {r["os"] for r in logged(run_home)}
    assert served_os <= {"IOS", "ANDROID"}
    for day in (DAY, later):
        assert set(pq.read_table(partition_path(warehouse, "impressions", day))["os"].to_pylist()) <= {"ios", "android"}
    unseen = sum(app.state.server.unseen[1].counts.get(("os", "unseen_category"), 0) for app in apps)
    assert unseen == 200


def test_without_servers_traffic_is_refused_before_the_warehouse_changes(
    run_home, warehouse_dir, tmp_path, monkeypatch, capsys
):
    warehouse = shutil.copytree(warehouse_dir, tmp_path / "warehouse")
    monkeypatch.setenv("KEIKO_WAREHOUSE_DIR", str(warehouse))
    monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", "http://127.0.0.1:9")  # discard: nothing listens
    assert main(["traffic", "--model", "ctr", "--day", DAY.isoformat(), "--rows", "10"]) == EXIT_USER_ERROR
    assert "no model server answers at http://127.0.0.1:9" in capsys.readouterr().err
    assert not partition_path(warehouse, "impressions", DAY).exists()
