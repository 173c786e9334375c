"""Batch pre-inference of user_value end to end: scoring rows/s at 1M keys, and a lookup's latency through the server.

Everything in one run on this machine, the compared variants interleaved (absolute figures move ~3x between
machines; the ratios of one run are what to compare):

* a real user_value model: CatBoost with include/models/user_value/model.yaml's parameters but `--iterations`
  rounds at most (default 200), fitted with keiko.algorithms.get_algorithm("catboost").fit on synthetic profile
  rows (keiko.synth_users' population: three days' snapshots to train, one to validate, each labelled by a draw
  of its true 7-day purchase probability), saved, registered as user_value v1 in a temporary KEIKO_HOME's
  registry and loaded back with load_model_bytes, as batch_score loads it;
* the key set: `--keys` users (default 1,000,000), user_id 1..N with synthetic draws of features.py's
  INPUT_SCHEMA (os, country among keiko.synth.COUNTRIES at keiko.synth's shares, small counts), an Arrow table
  as the warehouse returns it;
* batch scoring, rows/s, `--rounds` rounds, the three variants' order rotating each round:
  - `end to end`: keiko.stages.batch_score's loop, chunks of serving.batch.chunk_rows (10,000): its
    score_chunk (the feature module's transform, then predict), valid_scores, the keys cast to strings,
    store.write; then the scores' Parquet to the artifact store, seal, and switch (deploy's step);
  - `scoring only`: score_chunk of the same chunks, no store;
  - `store only`: write of the same keys and scores in the same chunks, seal and switch (bench/batch_store.py's
    publish), no scoring;
  after each publish the older version is deleted, untimed, so Redis holds at most two;
* lookup latency, one request at a time from this process (http.client, one keep-alive connection per server),
  `--lookups` calls a variant and round, the variants taking turns call by call (a random order each turn),
  p50/p95 µs:
  - `keiko serve --model user_value` (a subprocess: KEIKO_HOME the temporary one, KEIKO_BATCH_STORE_URL this
    bench's redis-server), POST /predict {"rows": [{"user_id": k}]} of a random key of the serving batch;
  - the same model served *online*: `keiko serve --model user_value` with KEIKO_PROJECT_DIR a copy of include/
    whose user_value model.yaml says `serving.mode: online` (the batch block dropped, nothing else changed),
    serving the registered v1: POST /predict of that key's feature row (CatBoost on one row a request);
  - GET /healthz of the batch server: HTTP + an ASGI cycle, no model (the floor under both /predict);
  - in-process: `store.lookup("user_value", [k])` (the store alone, from Python) and
    `model.predict(transform(row))` of one row (CatBoost alone).
  Before timing, each server's answers are checked: the batch server's against the scores written, the online
  one's against in-process predict (1e-9). Both servers keep their prediction log on (the default, which
  model.yaml leaves).

Client, servers and redis-server share this machine's cores (loopback, no network).

    .venv/bin/python bench/batch_serving.py                                  # ~1-1.5 min on 2 cores
    .venv/bin/python bench/batch_serving.py --keys 100000 --rounds 1 --lookups 1000
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import http.client
import json
import os
import platform
import random
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
from batch_store import start_redis

REPO = Path(__file__).resolve().parents[1]
MODEL = "user_value"
SCORING = ("end to end", "scoring only", "store only")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_model() -> str:
    found = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    return found.group(1).strip() if found else platform.processor() or "unknown"


# --- the model and the key set ---


def profile_rows(users: int, days: list[dt.date], seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """keiko.synth_users' profiles of `days` (a population of `users`), each labelled by a draw of its truth."""
    from keiko.synth_users import UserDays, UserWorld

    world = UserWorld.from_seed(seed, users)
    history = UserDays(world, seed)
    rng = np.random.default_rng([seed, 99])
    tables = [history.tables(day) for day in days]
    profiles = pa.concat_tables(t["user_profiles"] for t in tables)
    truth = np.concatenate([t["user_truth"].column("p_purchase_7d").to_numpy() for t in tables])
    return {name: profiles.column(name).to_numpy(zero_copy_only=False) for name in profiles.column_names}, (
        rng.random(len(truth)) < truth
    ).astype(np.float64)


def train_model(definition, iterations: int):
    """(model, its bytes, rows trained on, trees): user_value's CatBoost on synthetic snapshots."""
    from keiko.algorithms import get_algorithm, load_model_bytes

    module = definition.features
    day = dt.date(2026, 11, 20)
    train_in, y_train = profile_rows(20_000, [day - dt.timedelta(days=d) for d in (3, 2, 1)], seed=0)
    valid_in, y_valid = profile_rows(20_000, [day], seed=0)
    params = {**definition.config.algorithm.params, "iterations": iterations}
    model, _ = get_algorithm("catboost").fit(
        module.transform({c: train_in[c] for c in module.INPUT_SCHEMA}),
        y_train,
        module.transform({c: valid_in[c] for c in module.INPUT_SCHEMA}),
        y_valid,
        params=params,
        feature_params=definition.config.feature_params,
        progress=lambda _: None,
    )
    data = model.to_bytes()
    loaded = load_model_bytes(data)
    return loaded, data, len(y_train), int(loaded.booster.tree_count_)


def key_set(keys: int, seed: int = 7) -> pa.Table:
    """The run's key set as the warehouse returns it: user_id (int64) and the feature inputs."""
    from keiko.synth import COUNTRIES, COUNTRY_SHARE

    rng = np.random.default_rng(seed)
    active_days = rng.integers(1, 8, keys)
    return pa.table(
        {
            "user_id": np.arange(1, keys + 1, dtype=np.int64),
            "os": np.where(rng.random(keys) < 0.45, "ios", "android"),
            "country": COUNTRIES[rng.choice(len(COUNTRIES), keys, p=COUNTRY_SHARE)],
            "sessions_today": (1 + rng.poisson(1.5, keys)).astype(np.int32),
            "sessions_7d": (active_days + rng.poisson(1.5 * active_days)).astype(np.int32),
            "active_days_7d": active_days.astype(np.int32),
            "purchases_28d": rng.poisson(0.3, keys).astype(np.int32),
        }
    )


def register(definition, data: bytes) -> int:
    """user_value v1 in the (temporary) registry, its artifact in the artifact store; production points at it."""
    from keiko.config import settings
    from keiko.registry import open_registry
    from keiko.storage import open_store

    config = settings()
    uri = f"{config.artifact_root.rstrip('/')}/bench/{MODEL}/model.cbm"
    sha256 = open_store(config).write_bytes(uri, data)
    registry = open_registry(config.registry_url)
    version = registry.register(
        model=MODEL, ds="2026-11-20", window_start="2026-10-31", window_end="2026-11-20", artifact_uri=uri,
        artifact_sha256=sha256, code_version="bench", config_sha256=definition.config_sha256,
        features_sha256="bench", algorithm="catboost", metrics={}, trigger={"reason": "bench/batch_serving.py"},
    ).version.version  # fmt: skip
    registry.move_alias(MODEL, version, note="bench/batch_serving.py")
    return version


# --- batch scoring ---


class Publisher:
    """The three scoring variants over one key set, each version numbered on from the last."""

    def __init__(self, store, artifacts, definition, model, table: pa.Table, prior: float, chunk_rows: int, ttl: float):
        from keiko.stages.batch_score import score_chunk, valid_scores

        self.store, self.artifacts, self.model, self.table = store, artifacts, model, table
        self.ctx = SimpleNamespace(model=definition)  # what score_chunk reads of a StageContext
        self.score_chunk, self.valid_scores = score_chunk, valid_scores
        self.prior, self.chunk_rows, self.ttl = prior, chunk_rows, ttl
        self.version = 0
        self.keys = [str(k) for k in table.column("user_id").to_pylist()]
        self.scores: np.ndarray | None = None  # the last end-to-end scores (the store-only variant writes them)
        self.parts: dict[str, list[float]] = {"score_chunk": [], "store.write": []}

    def chunks(self):
        for start in range(0, self.table.num_rows, self.chunk_rows):
            yield self.table.slice(start, self.chunk_rows)

    def end_to_end(self) -> float:
        """batch_score's loop, then its Parquet and seal; then deploy's switch. Seconds."""
        from keiko.batch_store import BatchManifest

        version = self.begin()
        scored_at = time.time()
        began = time.perf_counter()
        written = 0
        kept_keys, kept_scores = [], []
        in_score = in_write = 0.0
        for chunk in self.chunks():
            t0 = time.perf_counter()
            scores = self.score_chunk(self.ctx, self.model, chunk)
            t1 = time.perf_counter()
            good = self.valid_scores(scores)
            keys = chunk.column("user_id").filter(pa.array(good))
            t2 = time.perf_counter()
            written += self.store.write(MODEL, version, keys.cast(pa.string()).to_pylist(), scores[good],
                                        ttl_seconds=self.ttl)  # fmt: skip
            t3 = time.perf_counter()
            in_score += t1 - t0
            in_write += t3 - t2
            kept_keys.append(keys.combine_chunks())
            kept_scores.append(scores[good])
        scores_table = pa.table({"user_id": pa.concat_arrays(kept_keys), "score": np.concatenate(kept_scores)})
        self.artifacts.write_table(f"{self.scores_root}/v{version}/batch_scores.parquet", scores_table)
        self.store.seal(BatchManifest(MODEL, version, written, self.prior, scored_at, scored_at + self.ttl))
        self.store.switch(MODEL, version, expected=version - 1 if version > 1 else None)
        seconds = time.perf_counter() - began
        self.scores = np.concatenate(kept_scores)
        assert written == len(self.keys), f"{len(self.keys) - written} keys had no valid score"
        self.parts["score_chunk"].append(in_score / seconds)
        self.parts["store.write"].append(in_write / seconds)
        self.finish(version)
        return seconds

    def scoring_only(self) -> float:
        began = time.perf_counter()
        for chunk in self.chunks():
            self.score_chunk(self.ctx, self.model, chunk)
        return time.perf_counter() - began

    def store_only(self) -> float:
        """bench/batch_store.py's publish of the same keys and scores: write in chunks, seal, switch."""
        from keiko.batch_store import BatchManifest

        assert self.scores is not None
        version = self.begin()
        began = time.perf_counter()
        written = 0
        for i in range(0, len(self.keys), self.chunk_rows):
            written += self.store.write(MODEL, version, self.keys[i : i + self.chunk_rows],
                                        self.scores[i : i + self.chunk_rows], ttl_seconds=self.ttl)  # fmt: skip
        now = time.time()
        self.store.seal(BatchManifest(MODEL, version, written, self.prior, now, now + self.ttl))
        self.store.switch(MODEL, version, expected=version - 1 if version > 1 else None)
        seconds = time.perf_counter() - began
        self.finish(version)
        return seconds

    scores_root = ""

    def begin(self) -> int:
        self.version += 1
        return self.version

    def finish(self, version: int) -> None:
        if version > 1:
            self.store.delete(MODEL, version - 1)  # untimed; UNLINK frees it in the background


# --- servers and latency ---


def online_project(directory: Path) -> Path:
    """A copy of include/ whose user_value is served online: model.yaml's `mode: batch` and batch block dropped."""
    shutil.copytree(REPO / "include", directory / "include")
    path = directory / "include" / "models" / MODEL / "model.yaml"
    text = path.read_text()
    changed = re.sub(r"\n  mode: batch\n  batch:\n(?:    .*\n)+", "\n  mode: online\n", text)
    assert changed != text and "mode: online" in changed
    path.write_text(changed)
    return directory


def start_server(label: str, env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "keiko", "serve", "--model", MODEL, "--port", str(port), "--no-grpc"]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/readyz")
            response = connection.getresponse()
            body = response.read()
            connection.close()
            if response.status == 200:
                return process
        except OSError:
            body = b""
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"{label} did not get ready ({body[:300]!r}):\n{log_path.read_text()[-3000:]}")
        time.sleep(0.1)


class Client:
    """One keep-alive connection; post/get return the parsed JSON body (status 200 asserted)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.headers = {"Content-Type": "application/json"}
        self.reconnect()

    def reconnect(self) -> None:
        """A new connection: the server closes one idle for 5 s (uvicorn's keep-alive timeout), as between rounds."""
        if getattr(self, "connection", None) is not None:
            self.connection.close()
        self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def post(self, path: str, body: bytes) -> bytes:
        self.connection.request("POST", path, body, self.headers)
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST {path}: {response.status} {data[:300]!r}")
        return data

    def get(self, path: str) -> bytes:
        self.connection.request("GET", path)
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {data[:300]!r}")
        return data


def latencies(ways: dict[str, Callable], picks: list, warmup: int = 300) -> dict[str, list[int]]:
    """Nanoseconds of each way's call on each picked row (its bodies and inputs made beforehand); the ways take
    turns call by call, in a fresh random order each turn, so that whatever else the machine does (and whatever
    work one call leaves behind in a server) falls on them alike."""
    calls = list(ways.items())
    shuffler = random.Random(len(picks))
    for each in picks[:warmup]:
        for _, call in calls:
            call(each)
    times: dict[str, list[int]] = {name: [] for name in ways}
    clock = time.perf_counter_ns
    for each in picks:
        shuffler.shuffle(calls)
        for name, call in calls:
            started = clock()
            call(each)
            times[name].append(clock() - started)
    return times


def percentiles(each: list[int]) -> tuple[float, float]:
    each = sorted(each)
    return each[len(each) // 2] / 1e3, each[int(len(each) * 0.95)] / 1e3


# --- the run ---


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys of the batch (default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every variant (default 3)")
    parser.add_argument("--lookups", type=int, default=4_000, help="timed requests a variant and round (default 4,000)")
    parser.add_argument("--iterations", type=int, default=200, help="CatBoost rounds at most (model.yaml: 500)")
    args = parser.parse_args()
    command = shlex.join([".venv/bin/python", "bench/batch_serving.py", *sys.argv[1:]])

    directory = Path(tempfile.mkdtemp(prefix="keiko-bench-batch-serving-"))
    redis_process, url = start_redis(directory)
    servers: list[subprocess.Popen] = []
    try:
        run(args, command, directory, url, servers)
    finally:
        for process in servers:
            process.terminate()
        for process in servers:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        redis_process.kill()
        redis_process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


def run(args: argparse.Namespace, command: str, directory: Path, url: str, servers: list[subprocess.Popen]) -> None:
    began = time.monotonic()
    home = directory / "home"
    home.mkdir()
    base_env = {key: value for key, value in os.environ.items() if not key.startswith("KEIKO_")}
    base_env.update(KEIKO_HOME=str(home), KEIKO_BATCH_STORE_URL=url, PYTHONUNBUFFERED="1")
    os.environ.update({k: v for k, v in base_env.items() if k.startswith("KEIKO_")}, KEIKO_PROJECT_DIR=str(REPO))

    from keiko.batch_store.redis_store import RedisBatchStore
    from keiko.config import settings
    from keiko.modeldef import load_model
    from keiko.storage import open_store

    definition = load_model(MODEL)
    batch = definition.config.serving.batch
    assert batch is not None and definition.config.serving.mode == "batch"
    module = definition.features

    t0 = time.monotonic()
    model, data, trained_rows, trees = train_model(definition, args.iterations)
    register(definition, data)
    train_seconds = time.monotonic() - t0
    table = key_set(args.keys)
    prior = 0.14  # the fallback's score in the manifest; never served here (every key is in the batch)

    store = RedisBatchStore(url)
    publisher = Publisher(store, open_store(settings()), definition, model, table, prior, batch.chunk_rows,
                          batch.ttl_hours * 3600.0)  # fmt: skip
    publisher.scores_root = f"{settings().artifact_root.rstrip('/')}/bench/{MODEL}/batches"
    publisher.end_to_end()  # untimed warm-up, and the batch the servers start on
    publisher.parts = {name: [] for name in publisher.parts}

    batch_port, online_port = free_port(), free_port()
    servers.append(start_server("batch server", {**base_env, "KEIKO_PROJECT_DIR": str(REPO)}, batch_port,
                                directory / "batch-server.log"))  # fmt: skip
    online_env = {**base_env, "KEIKO_PROJECT_DIR": str(online_project(directory / "online-project"))}
    servers.append(start_server("online server", online_env, online_port, directory / "online-server.log"))
    batch_client, online_client = Client(batch_port), Client(online_port)

    inputs = {name: table.column(name).to_pylist() for name in module.INPUT_SCHEMA}
    keys = publisher.keys

    def pick(i: int) -> SimpleNamespace:
        """Row i's request bodies and in-process inputs, made before the clock starts."""
        row = {name: inputs[name][i] for name in module.INPUT_SCHEMA}
        return SimpleNamespace(
            index=i,
            key=keys[i],
            batch_body=json.dumps({"rows": [{"user_id": int(keys[i])}]}).encode(),
            online_body=json.dumps({"rows": [{"user_id": int(keys[i]), **row}]}).encode(),
            columns={name: np.asarray([value]) for name, value in row.items()},
        )

    # Correctness first: a fast wrong answer is no result.
    checker = random.Random(1)
    for i in checker.sample(range(len(keys)), 50):
        p = pick(i)
        expected = float(publisher.scores[i])
        got = json.loads(batch_client.post("/predict", p.batch_body))
        assert abs(got["predictions"][0] - expected) < 1e-12, (got, expected)
        online = json.loads(online_client.post("/predict", p.online_body))
        offline = float(model.predict(module.transform(p.columns))[0])
        assert abs(online["predictions"][0] - offline) < 1e-9, (online, offline)
        assert abs(offline - expected) < 1e-9, (offline, expected)  # one row scored alone = its chunk's score
        assert store.lookup(MODEL, [p.key])[0].score == expected
    sample_answer = batch_client.post("/predict", pick(0).batch_body).decode()

    ways: dict[str, Callable[[SimpleNamespace], object]] = {
        "batch: POST /predict via keiko serve (Redis lookup)": lambda p: batch_client.post("/predict", p.batch_body),
        "online: POST /predict via keiko serve (CatBoost, 1 row)": lambda p: online_client.post(
            "/predict", p.online_body
        ),
        "GET /healthz of the batch server (HTTP + ASGI, no model)": lambda p: batch_client.get("/healthz"),
        "in-process: store.lookup of 1 key (Redis round trip)": lambda p: store.lookup(MODEL, [p.key]),
        "in-process: predict(transform(1 row)) (CatBoost)": lambda p: model.predict(module.transform(p.columns)),
    }

    # The key set's million Python objects would make every full collection of this process a long pause that
    # falls on whichever call is timed then: frozen, as keiko.serving.model_server.freeze_heap does in servers.
    gc.collect()
    gc.freeze()
    rates: dict[str, list[float]] = {name: [] for name in SCORING}
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    variants = {"end to end": publisher.end_to_end, "scoring only": publisher.scoring_only,
                "store only": publisher.store_only}  # fmt: skip
    picker = random.Random(7)
    started = time.monotonic()
    for round_number in range(args.rounds):
        shift = round_number % len(SCORING)
        for name in SCORING[shift:] + SCORING[:shift]:
            rates[name].append(args.keys / variants[name]())
        picks = [pick(picker.randrange(len(keys))) for _ in range(args.lookups)]
        batch_client.reconnect()  # untimed: the warm-up's first request connects
        online_client.reconnect()
        time.sleep(1.0)  # untimed: redis-server's background UNLINK of the version deleted above
        for name, each in latencies(ways, picks).items():
            timings[name].append(percentiles(each))
    measured = time.monotonic() - started
    server_log = (directory / "batch-server.log").read_text().strip()

    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    load = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    print(f"## Batch pre-inference (user_value): scoring at {args.keys:,} keys, lookup latency\n")
    print(f"`{command}`  ")
    print(f"CPU: {cpu_model()} ({len(os.sched_getaffinity(0))} cores), redis-server {version.removeprefix('v=')} "
          f"(loopback, no persistence), Python {platform.python_version()}, load {load}  ")  # fmt: skip
    print(f"model: CatBoost, model.yaml's params with iterations={args.iterations} ({trees} trees kept), trained on "
          f"{trained_rows:,} synthetic profile rows in {train_seconds:.0f} s; chunks of {batch.chunk_rows:,} keys; "
          f"{args.rounds} rounds in {measured:.0f} s, medians over the rounds (total {time.monotonic() - began:.0f} s)"
          "\n")  # fmt: skip
    print("| batch scoring, 10,000-key chunks | rows/s | s per 1M keys | rounds' rows/s, min..max |")
    print("|---|---:|---:|---:|")
    medians = {name: statistics.median(values) for name, values in rates.items()}
    labels = {
        "end to end": "end to end: transform + predict + store write, Parquet, seal + switch",
        "scoring only": "scoring only: transform + predict (no store)",
        "store only": "store only: write + seal + switch (no scoring)",
    }
    for name in SCORING:
        low, high = min(rates[name]), max(rates[name])
        print(f"| {labels[name]} | {medians[name]:,.0f} | {1e6 / medians[name]:.2f} | {low:,.0f}..{high:,.0f} |")
    e2e, scoring, writing = medians["end to end"], medians["scoring only"], medians["store only"]
    share_score = statistics.median(publisher.parts["score_chunk"])
    share_write = statistics.median(publisher.parts["store.write"])
    print(
        f"\nend to end / scoring only: {e2e / scoring:.2f}x; end to end / store only: {e2e / writing:.2f}x; "
        f"1/(1/scoring + 1/store) = {1 / (1 / scoring + 1 / writing):,.0f} rows/s (the two in series)  "
    )
    print(f"of the end-to-end time: score_chunk {share_score:.0%}, store.write {share_write:.0%}, "
          f"the rest (filter, key cast, Parquet, seal, switch) {1 - share_score - share_write:.0%}\n")  # fmt: skip
    print(
        f"| one request at a time ({args.lookups:,} a round and way, interleaved call by call) | p50 µs | p95 µs "
        "| rounds' p95, min..max |"
    )
    print("|---|---:|---:|---:|")
    lat = {}
    for name, values in timings.items():
        lat[name] = statistics.median(v[0] for v in values), statistics.median(v[1] for v in values)
        low, high = min(v[1] for v in values), max(v[1] for v in values)
        print(f"| {name} | {lat[name][0]:.0f} | {lat[name][1]:.0f} | {low:.0f}..{high:.0f} |")
    names = list(lat)
    http_batch, http_online, healthz, lookup, predict = (lat[n] for n in names)

    def ratio(a: tuple[float, float], b: tuple[float, float]) -> str:
        return f"p50 {a[0] / b[0]:.2f}x, p95 {a[1] / b[1]:.2f}x"

    print(f"\nbatch /predict vs online /predict: {ratio(http_batch, http_online)}  ")
    print(f"batch /predict vs store.lookup in-process: {ratio(http_batch, lookup)} "
          f"(HTTP + server: +{http_batch[0] - lookup[0]:.0f} µs at p50)  ")  # fmt: skip
    print(f"online /predict vs predict in-process: {ratio(http_online, predict)} "
          f"(HTTP + server: +{http_online[0] - predict[0]:.0f} µs at p50)  ")  # fmt: skip
    print(f"batch /predict vs GET /healthz: {ratio(http_batch, healthz)}  ")
    print(f"gate_batch's p95_lookup_ms: {batch.p95_lookup_ms} ms; batch /predict p95 here {http_batch[1] / 1e3:.2f} ms")
    print(f"\nan answer of the batch server: {sample_answer}")
    if server_log:
        print(f"batch server's log (tail): {server_log[-500:]}")


if __name__ == "__main__":
    main()
