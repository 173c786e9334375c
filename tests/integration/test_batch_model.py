"""user_value, a batch model, end to end with `keiko run` on a real Redis and a live model server: its batch scored
into the store, the pointer moved by deploy, lookups answered with the batch's scores and version; the next day's
batch switched in whole under readers; a batch that failed half-way never served; a rollback moves the pointer back.
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import httpx
import pytest
import redis

from conftest import run_step, serve_replicas, use_home
from keiko.cli import main
from keiko.config import settings
from keiko.contract import BatchScoreResult, RunLayout
from keiko.registry import open_registry
from keiko.resources import Resources

pytestmark = pytest.mark.server

MODEL = "user_value"
DAY1, DAY2 = "2026-11-21", "2026-11-22"
UP_TO_REGISTER = (
    "extract", "gate_raw", "features", "gate_features", "train", "gate_training", "evaluate", "gate_evaluation",
    "register",
)  # fmt: skip


@pytest.fixture(scope="module")
def user_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """23 days ending DAY2: user_value's 21-day window for both days."""
    from keiko.synth import write_warehouse

    directory = tmp_path_factory.mktemp("users") / "warehouse"
    write_warehouse(directory, dt.date.fromisoformat(DAY2), 23, 30_000, progress=lambda _m: None)
    return directory


@pytest.fixture
def server(tmp_path, monkeypatch, user_warehouse, redis_server) -> str:
    """An empty home on the user warehouse, its batch store a Redis database of its own; one live replica's URL."""
    url = redis_server.rsplit("/", 1)[0] + "/5"
    redis.Redis.from_url(url).flushdb()
    use_home(monkeypatch, tmp_path / "home", user_warehouse)
    monkeypatch.setenv("KEIKO_BATCH_STORE_URL", url)
    with serve_replicas(1, MODEL) as (_apps, urls):
        monkeypatch.setenv(f"KEIKO_SERVING_URLS_{MODEL.upper()}", urls[0])
        yield urls[0]


def batch_scores(ds: str) -> dict[int, float]:
    """user_id -> score of the batch the run of `ds` scored."""
    store = Resources().store
    table = store.read_table(RunLayout(store, MODEL, ds).read_result(BatchScoreResult).scores_uri)
    return dict(zip(table["user_id"].to_pylist(), table["score"].to_pylist(), strict=True))


def predict(url: str, users: list[int]) -> dict:
    answer = httpx.post(f"{url}/predict", json={"rows": [{"user_id": u} for u in users]}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_run_fills_the_store_and_the_server_answers_from_it(server, capsys):
    assert main(["run", "--model", MODEL, "--ds", DAY1]) == 0
    out = capsys.readouterr().out
    assert "=== batch_score success" in out and "=== gate_batch success" in out and "=== deploy success" in out
    assert "batch pointer: switched v1 (first batch)" in out

    scores = batch_scores(DAY1)
    users = sorted(scores)[:5]
    answer = predict(server, [*users, 10**9])  # the last was never active: not in the batch
    assert answer["model_version"] == 1 and answer["variant"] == "fallback"
    assert answer["predictions"][:5] == [scores[u] for u in users]
    assert answer["fallback"] == [None] * 5 + ["missing"]
    prior = RunLayout(Resources().store, MODEL, DAY1).read_result(BatchScoreResult).prior  # training's label rate
    assert answer["predictions"][5] == prior
    metrics = httpx.get(f"{server}/metrics").text
    assert f'keiko_batch_lookups_total{{model="{MODEL}",result="missing"}} 1.0' in metrics


def test_the_next_batch_switches_in_whole_under_readers_and_a_rollback_moves_it_back(server, capsys):
    assert main(["run", "--model", MODEL, "--ds", DAY1]) == 0
    first = batch_scores(DAY1)
    users = sorted(first)[:64]
    answers, stop = [], threading.Event()

    def read() -> None:
        while not stop.is_set():
            answers.append(predict(server, users))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert main(["run", "--model", MODEL, "--ds", DAY2]) == 0
    finally:
        stop.set()
        reader.join()
    second = batch_scores(DAY2)
    assert "batch pointer: switched v2 (from v1)" in capsys.readouterr().out
    by_version = {1: first, 2: second}
    seen = set()
    for answer in answers:  # every answer is one batch's, whole: never a mix of versions
        version = answer["model_version"]
        seen.add(version)
        assert answer["predictions"] == [by_version[version].get(u) for u in users], f"mixed answer of v{version}"
    assert seen == {1, 2}, f"the readers saw {seen}: the switch happened outside the reads"
    assert predict(server, users)["model_version"] == 2

    assert main(["rollback", MODEL, "--reason", "drill"]) == 0
    assert predict(server, users)["predictions"] == [first[u] for u in users]
    assert open_registry(settings().registry_url).alias(MODEL) == 1


def test_a_batch_that_fails_half_way_never_serves(server, monkeypatch, capsys):
    assert main(["run", "--model", MODEL, "--ds", DAY1]) == 0
    users = sorted(batch_scores(DAY1))[:8]
    before = predict(server, users)
    for step in UP_TO_REGISTER:
        assert run_step(step, DAY2, MODEL) == 0, step

    from keiko.batch_store.redis_store import RedisBatchStore

    def store_lost(self, manifest):
        raise redis.ConnectionError("Connection reset by peer")  # every chunk written, the seal never

    with pytest.MonkeyPatch.context() as patch, pytest.raises(redis.ConnectionError):  # a crash: Airflow retries
        patch.setattr(RedisBatchStore, "seal", store_lost)
        run_step("batch_score", DAY2, MODEL)
    capsys.readouterr()
    assert run_step("deploy", DAY2, MODEL) != 0  # by hand: `keiko run` would not even try
    assert "user_value v2 has no sealed batch (failed or incomplete): pointer not moved" in capsys.readouterr().out
    assert predict(server, users) == before
    assert open_registry(settings().registry_url).alias(MODEL) == 1


def test_the_online_fallback_scores_a_missing_key_from_the_inputs_sent_with_it(server, monkeypatch):
    """serving.batch.fallback online: a key the batch lacks is scored by the batch's own version from the feature
    inputs the request carries; a row without them gets the prior."""
    from conftest import serve_in_thread
    from keiko.algorithms import load_model_bytes
    from keiko.columns import from_rows
    from keiko.modeldef import ModelDefinition, load_model
    from keiko.serving import app as serving_app

    assert main(["run", "--model", MODEL, "--ds", DAY1]) == 0
    shipped = load_model(MODEL)
    batch = shipped.config.serving.batch.model_copy(update={"fallback": "online"})
    config = shipped.config.model_copy(update={"serving": shipped.config.serving.model_copy(update={"batch": batch})})
    online = ModelDefinition(MODEL, shipped.directory, config, shipped.config_sha256)
    monkeypatch.setattr(serving_app, "load_model", lambda name: online)
    inputs = {"os": "ios", "country": "JP", "sessions_today": 4, "sessions_7d": 12, "active_days_7d": 5,
              "purchases_28d": 2}  # fmt: skip
    entry = open_registry(settings().registry_url).get(MODEL, 1)
    model = load_model_bytes(Resources().store.read_verified(entry.artifact_uri, entry.artifact_sha256))
    expected = float(model.predict(online.features.transform(from_rows([inputs], online.features.INPUT_SCHEMA)))[0])
    prior = RunLayout(Resources().store, MODEL, DAY1).read_result(BatchScoreResult).prior

    with serve_in_thread(serving_app.create_app(MODEL)) as url:
        answer = httpx.post(
            f"{url}/predict", json={"rows": [{"user_id": 10**9, **inputs}, {"user_id": 10**9 + 1}]}, timeout=10
        ).json()
        metrics = httpx.get(f"{url}/metrics").text
        bad = httpx.post(f"{url}/predict", json={"rows": [{"user_id": 1, "sessions_7d": "many"}]}, timeout=10)
    assert answer["fallback"] == ["missing", "missing"] and answer["model_version"] == 1
    assert answer["predictions"] == [pytest.approx(expected, abs=1e-12), prior]
    assert f'keiko_batch_fallbacks_total{{by="online",model="{MODEL}"}} 1.0' in metrics
    assert f'keiko_batch_fallbacks_total{{by="prior",model="{MODEL}"}} 1.0' in metrics
    assert bad.status_code == 422 and "sessions_7d" in bad.text  # an input sent is checked as an online model's


TODAY = dt.datetime.now(dt.UTC).date()  # the monitor reads the answers logged on the judged day: today's


@pytest.fixture(scope="module")
def warehouse_around_today(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """user_value's window ending today, and the 7 days after it (synthetic days to come: their purchases)."""
    from keiko.synth import write_warehouse

    directory = tmp_path_factory.mktemp("users-today") / "warehouse"
    write_warehouse(directory, TODAY + dt.timedelta(days=7), 28, 30_000, progress=lambda _m: None)
    return directory


def test_the_monitor_judges_a_batch_models_day_and_its_fallback_share(
    tmp_path, monkeypatch, warehouse_around_today, redis_server
):
    from keiko.contract import JoinOutcomesResult, OnlineGateResult, VolumeGateResult
    from keiko.pipeline import MONITOR_DAG
    from keiko.warehouse import DuckDBWarehouse

    url = redis_server.rsplit("/", 1)[0] + "/6"
    redis.Redis.from_url(url).flushdb()
    use_home(monkeypatch, tmp_path / "home", warehouse_around_today)
    monkeypatch.setenv("KEIKO_BATCH_STORE_URL", url)
    monkeypatch.setenv("KEIKO_PREDICTION_LOG_URL", (warehouse_around_today / "predictions").as_uri())  # the monitor's
    day = TODAY.isoformat()
    with serve_replicas(1, MODEL) as (_apps, urls):
        monkeypatch.setenv(f"KEIKO_SERVING_URLS_{MODEL.upper()}", urls[0])
        assert main(["run", "--model", MODEL, "--ds", day]) == 0
        warehouse = DuckDBWarehouse(warehouse_around_today)
        active = warehouse.query(f"SELECT user_id FROM user_profiles WHERE dt = '{day}'")["user_id"].to_pylist()
        lost = active[::25]  # 4% of today's users gone from the batch: they fall back
        redis.Redis.from_url(url).hdel("keiko:batch:{user_value}:v1", *map(str, lost))
        with httpx.Client(base_url=urls[0], timeout=10) as client:
            for user in active:  # one lookup per active user, as a bidder's first auction of theirs
                assert client.post("/predict", json={"rows": [{"user_id": user}]}).status_code == 200

        def logged() -> int:
            if "predictions" not in DuckDBWarehouse(warehouse_around_today).tables():
                return 0
            count = f"SELECT count(*) FROM predictions WHERE model = '{MODEL}'"
            return DuckDBWarehouse(warehouse_around_today).query(count).column(0)[0].as_py()

        deadline = dt.datetime.now() + dt.timedelta(seconds=60)
        while logged() < len(active):
            assert dt.datetime.now() < deadline, "the server did not log every answer within 60 s"
            threading.Event().wait(0.5)

    for step in ("join_outcomes", "gate_online", "gate_drift", "gate_volume"):
        assert run_step(step, day, MODEL) == 0, step
    layout = RunLayout(Resources().store, MODEL, day, MONITOR_DAG)
    joined = layout.read_result(JoinOutcomesResult)
    assert joined.population == joined.answered == len(active) and joined.fallbacks == len(lost)
    assert joined.bayes_optimal_logloss is not None  # user_truth of the day, by profile
    volume = layout.read_result(VolumeGateResult)
    assert volume.fallback_share == pytest.approx(len(lost) / len(active))
    online = layout.read_result(OnlineGateResult)
    assert online.success and set(online.versions) == {"1"}
