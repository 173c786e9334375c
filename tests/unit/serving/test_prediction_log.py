"""The prediction log: every answered row reaches the warehouse table `predictions`, in bounded memory, and a
slow or failing store costs rows (counted), never a request's time."""

import datetime as dt
import threading

import httpx
import pytest

from conftest import serve_in_thread
from keiko.modeldef import PredictionLog as PredictionLogConfig
from keiko.serving.app import create_app
from keiko.serving.prediction_log import PredictionLog
from keiko.storage import ArtifactStore
from keiko.warehouse import DuckDBWarehouse

INPUTS = {"event_time": "timestamp", "app_id": "int", "os": "str", "floor_price": "float"}


def answered(n_rows: int, request_id: str = "r", served_at: dt.datetime | None = None) -> dict:
    """record()'s arguments for a request of `n_rows` rows, served at noon on 2026-11-21 unless `served_at`."""
    served_at = served_at or dt.datetime(2026, 11, 21, 12, tzinfo=dt.UTC)
    rows = [
        {"event_time": dt.datetime(2026, 11, 21, 11, 59), "app_id": i, "os": "ios", "floor_price": 0.5, "user_id": 7}
        for i in range(n_rows)
    ]
    scores = [0.01 * (i + 1) for i in range(n_rows)]
    return {
        "request_id": request_id,
        "version": 3,
        "rows": rows,
        "scores": scores,
        "served_at_us": int(served_at.timestamp() * 1e6),
    }


class StalledStore(ArtifactStore):
    """A store whose writes wait until released (a stalled S3), or fail while `failing` is set."""

    def __init__(self, root_uri: str) -> None:
        super().__init__(root_uri)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.failing = False

    def write_table(self, uri, table, **options):
        self.entered.set()
        self.release.wait(timeout=60)  # a hang guard, not a timing assertion
        if self.failing:
            raise OSError("503 Slow Down")
        return super().write_table(uri, table, **options)


def prediction_log(store, **config) -> PredictionLog:
    defaults = {"flush_seconds": 300, "flush_rows": 10, "max_buffered_rows": 30}
    return PredictionLog(
        model="ctr", inputs=INPUTS, config=PredictionLogConfig(**{**defaults, **config}), store=store, writer_id="t"
    )


def read_log(root) -> list[dict]:
    return DuckDBWarehouse(root).query("SELECT * FROM predictions ORDER BY request_id, app_id").to_pylist()


def test_rows_land_in_the_predictions_table_by_day_and_model(tmp_path):
    log = prediction_log(ArtifactStore((tmp_path / "predictions").as_uri()))
    log.record(**answered(2, "a"))
    log.record(**answered(1, "b", served_at=dt.datetime(2026, 11, 22, 0, 0, 1, tzinfo=dt.UTC)))
    assert log.flush() == 3

    rows = read_log(tmp_path)
    assert [(r["request_id"], r["dt"], r["model"], r["app_id"], r["score"]) for r in rows] == [
        ("a", "2026-11-21", "ctr", 0, 0.01),
        ("a", "2026-11-21", "ctr", 1, 0.02),
        ("b", "2026-11-22", "ctr", 0, 0.01),  # served after midnight UTC: the next day's partition
    ]
    first = rows[0]
    assert first["user_id"] == 7 and first["impression_id"] is None  # an identifier the request did not send
    assert first["version"] == 3 and first["variant"] == "" and first["os"] == "ios"
    assert first["served_at"] == dt.datetime(2026, 11, 21, 12)  # UTC, naive as the warehouse's times
    assert first["event_time"] == dt.datetime(2026, 11, 21, 11, 59)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert [f.rsplit("/", 1)[0] for f in files] == [
        "predictions/dt=2026-11-21/model=ctr",
        "predictions/dt=2026-11-22/model=ctr",
    ]


def test_a_stalled_store_drops_and_counts_rows_beyond_the_buffer_and_never_blocks_a_request(tmp_path):
    store = StalledStore((tmp_path / "predictions").as_uri())
    log = prediction_log(store)
    log.start()
    for i in range(10):  # the tenth row fills a file: the writer takes them and stalls in the store
        assert log.record(**answered(1, f"a{i}"))
    assert store.entered.wait(timeout=60)

    # Held now: 10 rows in the stalled write. 20 more fit; after that every request's rows are dropped,
    # and each record() returns at once (were it waiting for the store, this test would hang here).
    accepted = [log.record(**answered(5, f"b{i}")) for i in range(6)]
    assert accepted == [True] * 4 + [False] * 2
    assert log.counters.rows_dropped == 10 and log.counters.rows_written == 0

    store.release.set()
    log.close()
    assert log.counters.rows_written == 30 == len(read_log(tmp_path))


def test_a_failed_write_is_retried_and_loses_nothing(tmp_path):
    store = StalledStore((tmp_path / "predictions").as_uri())
    store.release.set()
    store.failing = True
    log = prediction_log(store)
    log.record(**answered(3, "a"))
    assert log.flush() == 0 and log.counters.write_errors == 1 and "503 Slow Down" in log.counters.last_error
    log.record(**answered(2, "b"))
    store.failing = False
    assert log.flush() == 5
    assert [r["request_id"] for r in read_log(tmp_path)] == ["a"] * 3 + ["b"] * 2


def test_the_buffer_must_hold_a_file():
    with pytest.raises(ValueError, match="max_buffered_rows 5 < flush_rows 10"):
        PredictionLogConfig(flush_rows=10, max_buffered_rows=5)


@pytest.mark.server
def test_a_server_logs_every_answered_row_and_writes_them_at_shutdown(run_home, one_row_with_ids):
    app = create_app("ctr", load_production=False)
    app.state.server.load(1)
    answers = []
    with serve_in_thread(app) as url:
        for i in range(3):
            response = httpx.post(f"{url}/predict", json={"request_id": f"bid-{i}", "rows": one_row_with_ids})
            answers.append(response.json()["predictions"][0])
        unnamed = httpx.post(f"{url}/predict", json={"rows": one_row_with_ids}).json()["predictions"][0]
        refused = httpx.post(f"{url}/predict", json={"request_id": "x" * 129, "rows": one_row_with_ids})
        assert refused.status_code == 422 and "request_id" in refused.text
        metrics = httpx.get(f"{url}/metrics").text
        assert 'keiko_prediction_log_rows_total{model="ctr",outcome="logged"} 4.0' in metrics
        requests = 'keiko_serving_requests_total{model="ctr",protocol="predict",status="%s",variant="%s"} %s'
        assert requests % (200, "stable", "4.0") in metrics
        assert requests % (422, "unrouted", "1.0") in metrics
        assert 'keiko_serving_request_seconds_count{model="ctr",variant="stable"} 4.0' in metrics
    # The server has stopped (uvicorn's shutdown, as on SIGTERM): what it held is in the warehouse.
    rows = read_log(run_home / "served")  # conftest.use_home: the log of this test's servers
    named = [r for r in rows if r["request_id"].startswith("bid-")]
    assert [(r["request_id"], r["score"], r["version"]) for r in named] == [
        (f"bid-{i}", answers[i], 1) for i in range(3)
    ]
    (other,) = [r for r in rows if not r["request_id"].startswith("bid-")]
    assert other["score"] == unnamed and other["request_id"]  # given an id of the server's own
    sent = one_row_with_ids[0]
    assert all(r["impression_id"] == sent["impression_id"] and r["user_id"] == sent["user_id"] for r in rows)
    assert all(r["app_id"] == sent["app_id"] and r["model"] == "ctr" for r in rows)
    assert {r["dt"] for r in rows} == {dt.datetime.now(dt.UTC).date().isoformat()}


@pytest.fixture
def one_row_with_ids(one_row):
    return [{**one_row[0], "impression_id": 123456789, "user_id": 42}]
