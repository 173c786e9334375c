"""What a canary's traffic split costs a model server per request, in-process (no HTTP, no load generator).

One ModelServer of ctr from $KEIKO_HOME (after `make demo` and `make canary`: two registered versions) answers the
same single-row /predict bodies (one user each) two ways, in interleaved rounds: no canary set, and a canary at 50%
(each request hashed to a variant, half answered by the other version). The figure is microseconds per request
(median of the rounds) and the ratio to no canary. HTTP, uvicorn and the socket writes (most of a request's cost:
bench/serving.py) are not in it.

    .venv/bin/python bench/canary_split.py            # ~20 s
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from keiko.config import settings
from keiko.registry import open_registry
from keiko.serving.app import create_app
from keiko.serving.split import TrafficSplit
from keiko.summary import sample_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="per round and way (default 20,000)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    registry = open_registry(settings().registry_url)
    versions = [v.version for v in registry.list("ctr") if v.status == "registered"]
    if len(versions) < 2:
        raise SystemExit("needs two registered ctr versions in $KEIKO_HOME: run `make demo`, then `make canary`")
    stable, canary = versions[-2], versions[-1]
    server = create_app("ctr", load_production=False).state.server
    server.prediction_log = None  # the log's cost is bench/serving.py's ctr-unlogged; here only the split's
    server.load(stable)
    from datetime import date

    rows = sample_rows_of(date.fromisoformat(registry.get("ctr", stable).ds), 256)
    bodies = [json.dumps({"rows": [{**rows[n % len(rows)], "user_id": 1 + n}]}).encode() for n in range(args.requests)]

    def timed() -> float:
        for body in bodies[:1000]:  # untimed: a newly loaded canary's row-scorer caches fill
            server.predict_json(body)
        started = time.perf_counter()
        for body in bodies:
            server.predict_json(body)
        return (time.perf_counter() - started) / len(bodies) * 1e6

    ways = {
        "no canary": lambda: server.set_split(None),
        "canary at 50%": lambda: server.set_split(TrafficSplit(canary, 0.5, "bench")),
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, setup in ways.items():
            setup()
            seconds[name].append(timed())
    base = statistics.median(seconds["no canary"])
    print(f"ctr v{stable} (stable) and v{canary}; {args.requests:,} single-row requests x {args.rounds} rounds each")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"  {name:<14} {median:6.1f} us/request  ({median / base:.3f}x no canary)")


def sample_rows_of(day, n: int) -> list[dict]:
    from keiko.stages.context import StageContext

    return sample_rows(StageContext.create("ctr", day), n=n)


if __name__ == "__main__":
    main()
