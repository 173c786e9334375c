"""`keiko traffic`: one day of the synthetic world lived through the model servers.

The day's impressions come from the same generator as `keiko synth` (keiko.synth), with the world's changes
(`--shift`) applied. Each impression is sent as a one-row /predict request (one auction), with its
impression and user ids and a request id, to every replica of the model in turn, as a load balancer would
spread them. The day's tables (impressions, clicks, conversions, truth) are written into the warehouse as
synth writes them, replacing synth's partitions of that day: clicks come within about a minute of the
impression, conversions within days of the click (keiko.synth.CONVERSION_DELAY_MEAN_S), each stamped with
its own time. The outcomes are drawn before any request is sent, from the world alone: the answers never
feed back into them.

A shift is recorded in the warehouse (`_world/changes.json`, a folder the warehouse ignores) and holds from
its day on, for every later `keiko traffic` of a day on or after it, until another shift of its kind:

- `click-rate=F`: every impression's true click probability times 1 + F (`click-rate=0` undoes it);
- `app-share=S`: app GROWING_APP takes the share S of the traffic (`app-share=off` undoes it);
- `encoding=upper` (or `encoding=off`): clients send `os` in upper case ("IOS"): the warehouse and training
  keep the usual form, so only the online path sees it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from keiko.atomic import write_atomically
from keiko.errors import KeikoError
from keiko.rollout import json_rows
from keiko.serving.prediction_log import IDENTIFIERS
from keiko.synth import World, WorldChange, generate_day, partition_path, write_day

CHANGES_FILE = Path("_world") / "changes.json"
DEFAULT_ROWS = 30_000
CONNECTIONS_PER_REPLICA = 4  # requests in flight per replica: enough to keep a one-core replica busy
PROGRESS_SECONDS = 5.0
# How each kind's value is read (None: the kind undone).
KINDS: dict[str, Callable[[str], Any]] = {
    "click-rate": float,
    "app-share": lambda text: None if text == "off" else float(text),
    "encoding": lambda text: None if text == "off" else text,
}
ENCODINGS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "upper": lambda row: {**row, "os": row["os"].upper()},
}


@dataclass(frozen=True)
class Shift:
    kind: str
    value: Any
    since: str  # the first day it holds (ISO date)

    @classmethod
    def parse(cls, text: str, since: dt.date) -> Shift:
        kind, _, raw = text.partition("=")
        if kind not in KINDS or not raw:
            raise KeikoError(f"--shift {text!r}: expected KIND=VALUE with KIND one of {', '.join(KINDS)}")
        try:
            value = KINDS[kind](raw)
        except ValueError:
            raise KeikoError(f"--shift {text!r}: {raw!r} is not a number") from None
        if kind == "click-rate" and not -1.0 < value <= 10.0:
            raise KeikoError(f"--shift {text!r}: a click-rate change is a fraction above -1 (0.2: 20% more clicks)")
        if kind == "app-share" and value is not None and not 0.0 < value < 1.0:
            raise KeikoError(f"--shift {text!r}: an app's share is between 0 and 1 (exclusive), or off")
        if kind == "encoding" and value is not None and value not in ENCODINGS:
            raise KeikoError(f"--shift {text!r}: encodings are {', '.join(ENCODINGS)}, or off")
        return cls(kind, value, since.isoformat())


def recorded_shifts(warehouse_dir: Path) -> list[Shift]:
    path = warehouse_dir / CHANGES_FILE
    if not path.exists():
        return []
    return [Shift(**item) for item in json.loads(path.read_text())]


def record_shifts(warehouse_dir: Path, shifts: list[Shift]) -> list[Shift]:
    """Add `shifts` to the record (a shift of the same kind and day replaces the one recorded)."""
    new = {(s.kind, s.since) for s in shifts}
    kept = [s for s in recorded_shifts(warehouse_dir) if (s.kind, s.since) not in new]
    every = sorted([*kept, *shifts], key=lambda s: (s.since, s.kind))
    text = json.dumps([dataclasses.asdict(s) for s in every], indent=2) + "\n"
    write_atomically(warehouse_dir / CHANGES_FILE, lambda temp: temp.write_text(text))
    return every


def in_force(shifts: list[Shift], day: dt.date) -> dict[str, Any]:
    """Each kind's value on `day`: the latest shift of it since on or before the day."""
    values: dict[str, Any] = {}
    for shift in sorted(shifts, key=lambda s: s.since):
        if shift.since <= day.isoformat():
            values[shift.kind] = shift.value
    return {kind: value for kind, value in values.items() if value not in (None, 0.0)}


def world_change(values: Mapping[str, Any]) -> WorldChange:
    return WorldChange(click_rate=values.get("click-rate", 0.0), growing_app_share=values.get("app-share"))


def default_rows(warehouse_dir: Path, day: dt.date) -> int:
    """The day before's impressions in the warehouse (the world goes on at its volume), else DEFAULT_ROWS."""
    before = partition_path(warehouse_dir, "impressions", day - dt.timedelta(days=1))
    return pq.read_metadata(before).num_rows if before.exists() else DEFAULT_ROWS


def requests(
    impressions: pa.Table, schema: Mapping[str, str], encoding: str | None, day: dt.date, rows_per_request: int = 1
) -> list[bytes]:
    """/predict bodies of `rows_per_request` impressions each: their input fields and identifiers, as a client
    would send them."""
    fields = [*dict.fromkeys([*IDENTIFIERS, *schema])]
    encode = ENCODINGS[encoding] if encoding else None
    rows = [encode(row) if encode else row for row in json_rows(impressions.select(fields))]
    return [
        json.dumps({"request_id": f"traffic-{day}-{n}", "rows": rows[start : start + rows_per_request]}).encode()
        for n, start in enumerate(range(0, len(rows), rows_per_request))
    ]


@dataclass
class Sent:
    answered: int = 0
    refused: dict[int, int] = dataclasses.field(default_factory=dict)  # status -> requests
    unreachable: int = 0
    seconds: float = 0.0


async def send(bodies: list[bytes], urls: list[str], rate: float | None, progress: Callable[[str], None]) -> Sent:
    """Every body to the replicas in turn (request n to replica n mod len(urls)), at most `rate` a second."""
    import httpx

    sent = Sent()
    started = time.monotonic()
    pending = iter(range(len(bodies)))  # shared by the workers: each takes the next request's number
    headers = {"content-type": "application/json"}

    async def worker(client: httpx.AsyncClient) -> None:
        for n in pending:
            if rate:  # request n leaves no earlier than n / rate seconds after the start
                await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            try:
                response = await client.post(f"{urls[n % len(urls)]}/predict", content=bodies[n], headers=headers)
            except httpx.TransportError:
                sent.unreachable += 1
                continue
            if response.status_code == 200:
                sent.answered += 1
            else:
                sent.refused[response.status_code] = sent.refused.get(response.status_code, 0) + 1

    async def report() -> None:
        while True:
            await asyncio.sleep(PROGRESS_SECONDS)
            done = sent.answered + sent.unreachable + sum(sent.refused.values())
            rps = done / (time.monotonic() - started)
            progress(f"  {done:,}/{len(bodies):,} requests ({rps:,.0f}/s), {sent.answered:,} answered")

    limits = httpx.Limits(max_connections=CONNECTIONS_PER_REPLICA * len(urls))
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        reporter = asyncio.create_task(report())
        await asyncio.gather(*(worker(client) for _ in range(CONNECTIONS_PER_REPLICA * len(urls))))
        reporter.cancel()
    sent.seconds = time.monotonic() - started
    return sent


def check_servers(urls: list[str], model: str) -> None:
    """Every replica up and serving `model`, before the day is written."""
    import httpx

    for url in urls:
        try:
            version = httpx.get(f"{url}/version", timeout=10).json()
        except (httpx.TransportError, ValueError) as exc:
            raise KeikoError(
                f"no model server answers at {url} ({type(exc).__name__}): start the replicas with "
                f"`keiko serve --model {model}`, or name them in KEIKO_SERVING_URLS_{model.upper()}"
            ) from None
        if version.get("model") != model or version.get("version") is None:
            raise KeikoError(f"{url} serves {version.get('model')} v{version.get('version')}, not a {model} model")


def live_day(
    model: str,
    day: dt.date,
    *,
    rows: int | None,
    rate: float | None,
    shifts: list[str],
    seed: int = 7,
    rows_per_request: int = 1,
    progress: Callable[[str], None] = print,
) -> Sent:
    from keiko.config import settings
    from keiko.modeldef import load_model

    config = settings()
    definition = load_model(model)
    if definition.config.serving.batch is not None:
        raise KeikoError(
            f"{model} is a batch model (serving.mode batch): keiko traffic sends a day's impressions to online models "
            "(ctr, cvr); a batch model answers its keys from the batch store"
        )
    if rate is not None and not rate > 0:
        raise KeikoError(f"--rate {rate}: expected a positive number of requests a second")
    new = [Shift.parse(text, day) for text in shifts]
    serving = definition.config.serving
    if rows_per_request > serving.max_rows:
        raise KeikoError(f"--rows-per-request {rows_per_request}: the servers take at most {serving.max_rows} rows")
    urls = config.serving_urls(model, serving.port, serving.replicas)
    check_servers(urls, model)

    warehouse = config.warehouse_dir
    values = in_force(record_shifts(warehouse, new) if new else recorded_shifts(warehouse), day)
    rows = rows or default_rows(warehouse, day)
    described = ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "none"
    progress(f"traffic {model} {day}: {rows:,} impressions to {', '.join(urls)}; world changes in force: {described}")
    tables = generate_day(World.from_seed(seed), day, rows, seed, world_change(values))
    write_day(warehouse, day, tables)  # first: the outcomes are the world's, whatever the servers answer
    bodies = requests(
        tables["impressions"], definition.features.INPUT_SCHEMA, values.get("encoding"), day, rows_per_request
    )
    sent = asyncio.run(send(bodies, urls, rate, progress))
    clicked = len(set(tables["clicks"]["impression_id"].to_pylist()))
    progress(
        f"traffic {model} {day}: {sent.answered:,} of {len(bodies):,} answered in {sent.seconds:.1f}s "
        f"({len(bodies) / max(sent.seconds, 1e-9):,.0f}/s); outcomes written to {warehouse}: {clicked:,} clicked, "
        f"{tables['conversions'].num_rows:,} conversions"
    )
    if sent.unreachable or sent.refused:
        refused = ", ".join(f"{n:,} x {status}" for status, n in sorted(sent.refused.items()))
        raise KeikoError(
            f"{len(bodies) - sent.answered:,} of {len(bodies):,} requests not answered "
            f"({sent.unreachable:,} unreachable{'; ' + refused if refused else ''}): see the servers' logs"
        )
    return sent
