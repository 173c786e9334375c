"""What the Redis batch store (keiko.batch_store.RedisBatchStore) costs: publishing a batch, and a lookup's latency.

It starts its own redis-server (no persistence) on a free loopback port and measures, in interleaved rounds:

* publishing: `--keys` string user ids ("u0000001", ...) with random float scores written through `write` in
  chunks of 1,000 and of 10,000 keys, then `seal` and `switch`: rows/s (the older version is deleted after
  each, untimed, so the server holds at most two);
* lookup latency from Python, one call at a time: `lookup` of one key (the Lua script: pointer, manifest and
  HMGET in one round trip) against a naive baseline of two round trips (GET the pointer, then HGET the key),
  20,000 random keys each, p50/p95 in µs; and `lookup` of 64 keys against GET + HMGET of 64.

Figures are medians over the rounds; the ratios are of the same run. Client and server share this machine's
cores (loopback, no network): a real network's round trip adds its latency per round trip, which is what
the one-round-trip script saves.

    .venv/bin/python bench/batch_store.py                       # ~1-2 min
    .venv/bin/python bench/batch_store.py --keys 100000 --rounds 1
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis

from keiko.batch_store import BatchManifest
from keiko.batch_store.redis_store import RedisBatchStore, hash_key, pointer_key

MODEL = "bench"
CHUNKS = (1_000, 10_000)
TTL = 3600.0


def start_redis(directory: Path) -> tuple[subprocess.Popen, str]:
    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("redis-server is not installed: `make stack-packages` installs it")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with (directory / "redis-server.log").open("w") as log:
        process = subprocess.Popen(
            [executable, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
             "--dir", str(directory), "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise SystemExit(
                    f"redis-server did not start: {(directory / 'redis-server.log').read_text()}"
                ) from None
            time.sleep(0.02)
    client.close()
    return process, f"redis://127.0.0.1:{port}/0"


def publish(store: RedisBatchStore, version: int, keys: list[str], scores: np.ndarray, chunk: int) -> float:
    """Seconds to write, seal and switch to `version`."""
    started = time.perf_counter()
    written = 0
    for i in range(0, len(keys), chunk):
        written += store.write(MODEL, version, keys[i : i + chunk], scores[i : i + chunk], ttl_seconds=TTL)
    now = time.time()
    store.seal(BatchManifest(MODEL, version, written, 0.05, now, now + TTL))
    current = store.pointer(MODEL)
    store.switch(MODEL, version, expected=None if current is None else current.version)
    return time.perf_counter() - started


def latencies(ways: dict[str, Callable[[list[str]], object]], batches: list[list[str]]) -> dict[str, tuple]:
    """(p50, p95) in µs of each way's call on each batch; the ways take turns call by call (alternating which
    goes first), so that whatever else the machine does falls on them alike."""
    calls = list(ways.items())
    for batch in batches[:500]:  # untimed warm-up
        for _, call in calls:
            call(batch)
    times: dict[str, list[int]] = {name: [] for name in ways}
    clock = time.perf_counter_ns
    for i, batch in enumerate(batches):
        for name, call in calls if i % 2 else calls[::-1]:
            started = clock()
            call(batch)
            times[name].append(clock() - started)
    figures = {}
    for name, each in times.items():
        each.sort()
        figures[name] = (each[len(each) // 2] / 1e3, each[int(len(each) * 0.95)] / 1e3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys a batch (default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lookups", type=int, default=20_000, help="single-key lookups a round and way")
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="keiko-bench-redis-"))
    process, url = start_redis(directory)
    try:
        run(url, args)
    finally:
        process.kill()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


def run(url: str, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(7)
    keys = [f"u{i:07d}" for i in range(1, args.keys + 1)]
    scores = rng.random(args.keys)
    store = RedisBatchStore(url)
    raw = redis.Redis.from_url(url, decode_responses=True)
    picker = random.Random(7)

    def naive_one(batch: list[str]) -> float | None:
        version = raw.get(pointer_key(MODEL))
        score = raw.hget(hash_key(MODEL, int(version)), batch[0])
        return None if score is None else float(score)

    def naive_many(batch: list[str]) -> list[float | None]:
        version = raw.get(pointer_key(MODEL))
        return [None if s is None else float(s) for s in raw.hmget(hash_key(MODEL, int(version)), batch)]

    def lua(batch: list[str]) -> object:
        return store.lookup(MODEL, batch)

    rows_per_second: dict[int, list[float]] = {chunk: [] for chunk in CHUNKS}
    lookup_ways = {
        1: {"1 key: lookup (Lua, 1 round trip)": lua, "1 key: GET + HGET (2 round trips)": naive_one},
        64: {"64 keys: lookup (Lua, 1 round trip)": lua, "64 keys: GET + HMGET (2 round trips)": naive_many},
    }
    figures: dict[str, list[tuple[float, float]]] = {name: [] for ways in lookup_ways.values() for name in ways}
    version = 0
    started = time.monotonic()
    for round_number in range(args.rounds):
        order = CHUNKS if round_number % 2 == 0 else CHUNKS[::-1]
        for chunk in order:
            version += 1
            seconds = publish(store, version, keys, scores, chunk)
            rows_per_second[chunk].append(args.keys / seconds)
            if version > 1:
                store.delete(MODEL, version - 1)  # untimed; UNLINK frees it in the background
        for size, ways in lookup_ways.items():
            calls = args.lookups if size == 1 else max(2_000, args.lookups // 10)
            batches = [picker.sample(keys, size) for _ in range(calls)]
            for name, figure in latencies(ways, batches).items():
                figures[name].append(figure)
    elapsed = time.monotonic() - started
    raw.close()
    store.close()

    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    print(f"Redis batch store (redis-server {server.removeprefix('v=')}, loopback): {args.keys:,} keys a batch,")
    print(f"{args.rounds} rounds in {elapsed:.0f} s; medians over the rounds\n")
    print("| publish (write in chunks + seal + switch) | rows/s |")
    print("|---|---:|")
    rates = {chunk: statistics.median(values) for chunk, values in rows_per_second.items()}
    for chunk, rate in rates.items():
        print(f"| chunks of {chunk:,} keys | {rate:,.0f} |")
    print(f"\n10,000-key chunks / 1,000-key chunks: {rates[10_000] / rates[1_000]:.2f}x\n")
    print("| lookup from Python | p50 µs | p95 µs |")
    print("|---|---:|---:|")
    medians = {}
    for name, values in figures.items():
        p50, p95 = statistics.median(v[0] for v in values), statistics.median(v[1] for v in values)
        medians[name] = (p50, p95)
        print(f"| {name} | {p50:.1f} | {p95:.1f} |")
    names = list(medians)
    for lua_name, naive_name in ((names[0], names[1]), (names[2], names[3])):
        (l50, l95), (n50, n95) = medians[lua_name], medians[naive_name]
        print(f"\n{lua_name} vs {naive_name}: p50 {l50 / n50:.2f}x, p95 {l95 / n95:.2f}x", end="")
    print()


if __name__ == "__main__":
    main()
