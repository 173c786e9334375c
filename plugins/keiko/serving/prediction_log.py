"""The prediction log: every row a model server answered, written to the warehouse table `predictions`.

Files land as Parquet under `{KEIKO_PREDICTION_LOG_URL}/dt=<day>/model=<model>/` (the day the row was served,
UTC), through fsspec: local folders by default, S3 in production (the Glue table's location, partitioned by dt
and model). Each file is written whole (renamed into place locally, one PUT on S3): a reader never sees part of
one. Names are `<host>-<pid>-<first served_at in µs>-<sequence>.parquet`, unique per replica and in time order.

The request path only appends one entry per answered request to a list under a lock (no copy of the rows,
no I/O); a writer thread turns the entries into columns and writes a file every `flush_seconds`, or sooner
once `flush_rows` rows are waiting. Memory is bounded: at most `max_buffered_rows` rows are held unwritten,
counting those of a file being written or retried, and a request's rows beyond that are dropped and counted
(`keiko_prediction_log_rows_dropped_total`), never waited for: a stalled store costs rows, not latency. A file
that fails to write is retried on the next flush. `close()` (the server's shutdown) writes what is left.
"""

from __future__ import annotations

import datetime as dt
import logging
import operator
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pyarrow as pa

from keiko.modeldef import PredictionLog as PredictionLogConfig
from keiko.storage import ArtifactStore

log = logging.getLogger("keiko.serving.prediction_log")

# Identifiers a request row may carry beside the model's inputs: logged, so the monitor can join the answers
# with the outcomes of the same impression (and the canary can assign users), never read by the model.
IDENTIFIERS = {"impression_id": "int", "user_id": "int"}
_ARROW = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "timestamp": pa.timestamp("us")}
HIVE_KEYS = ("dt", "model")  # in the path, not in the files


ANSWER_COLUMNS = [
    pa.field("request_id", pa.string(), nullable=False),
    *(pa.field(name, _ARROW[kind]) for name, kind in IDENTIFIERS.items()),
    pa.field("version", pa.int32(), nullable=False),
    pa.field("variant", pa.string(), nullable=False),
    pa.field("score", pa.float64(), nullable=False),
    pa.field("served_at", pa.timestamp("us"), nullable=False),  # UTC, naive as the warehouse's times
]


def log_schema(inputs: Mapping[str, str]) -> pa.Schema:
    """The columns of the prediction log's files: the answer's, then the model's input fields."""
    taken = {f.name for f in ANSWER_COLUMNS}
    return pa.schema([*ANSWER_COLUMNS, *(pa.field(n, _ARROW[k]) for n, k in inputs.items() if n not in taken)])


class Answered(NamedTuple):
    """One answered request, as the request path hands it over: references, not copies (a tuple: ~0.3 us)."""

    request_id: str | None  # None: the log names it (writer id and a sequence number)
    served_at_us: int  # since the epoch, UTC
    version: int
    variant: str
    rows: Sequence[Mapping[str, Any]]
    scores: Sequence[float]


DAY_US = 86_400_000_000


def to_table(entries: Sequence[Answered], schema: pa.Schema, name_prefix: str) -> pa.Table:
    """The entries' rows as one table of `schema`; a request without an id is named `name_prefix<n>`.

    The writer thread runs this holding the GIL, and the event loop waits meanwhile: the rows are transposed
    by zip and itemgetter (C), not field by field in Python, and a one-row request takes no per-row loop."""
    request_ids, served_at, versions, variants, row_lists, score_lists = zip(*entries, strict=True)
    counts = [len(rows) for rows in row_lists]
    if all(count == 1 for count in counts):  # one auction per request
        rows, scores = [rows[0] for rows in row_lists], [scores[0] for scores in score_lists]

        def per_row(values: Sequence) -> Sequence:
            return values
    else:
        rows = [row for rows in row_lists for row in rows]
        scores = [score for scores in score_lists for score in scores]

        def per_row(values: Sequence) -> Sequence:
            return [value for value, count in zip(values, counts, strict=True) for _ in range(count)]

    fields = schema.names[len(ANSWER_COLUMNS) :]  # the model's input fields
    if len(fields) > 1:
        by_field = zip(*map(operator.itemgetter(*fields), rows), strict=True)
    else:
        by_field = [[row[fields[0]] for row in rows]]
    columns: dict[str, Any] = {
        "request_id": per_row([rid or f"{name_prefix}{n}" for n, rid in enumerate(request_ids)]),
        **{name: [row.get(name) for row in rows] for name in IDENTIFIERS},
        "version": per_row(versions),
        "variant": per_row(variants),
        "score": scores,
        "served_at": pa.array(per_row(served_at), pa.int64()).cast(pa.timestamp("us")),
        **dict(zip(fields, by_field, strict=True)),
    }
    return pa.table({f.name: pa.array(columns[f.name], f.type) for f in schema}, schema=schema)


def served_day(served_at_us: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=served_at_us // DAY_US)).isoformat()


def by_served_day(entries: list[Answered]) -> dict[str, list[Answered]]:
    """The entries of each day they were served on (UTC). They are held in the order they were answered, so
    when the first and the last are of one day, all are (one look, not one per entry)."""
    if not entries:
        return {}
    if entries[0].served_at_us // DAY_US == entries[-1].served_at_us // DAY_US:
        return {served_day(entries[0].served_at_us): entries}
    days: dict[str, list[Answered]] = {}
    for entry in entries:
        days.setdefault(served_day(entry.served_at_us), []).append(entry)
    return days


@dataclass
class LogCounters:
    """What /metrics reports of the log (plain ints: read by the scrape, written under the log's lock)."""

    rows_logged: int = 0  # accepted into the buffer
    rows_written: int = 0
    rows_dropped: int = 0  # the buffer was full
    files_written: int = 0
    write_errors: int = 0
    last_error: str | None = None
    by_day_written: dict[str, int] = field(default_factory=dict)


class PredictionLog:
    """The log of one model server process. `record()` is the request path's only call; `start()` and
    `close()` run the writer thread."""

    def __init__(
        self,
        *,
        model: str,
        inputs: Mapping[str, str],
        config: PredictionLogConfig,
        store: ArtifactStore,
        writer_id: str | None = None,
    ) -> None:
        self.model = model
        self.inputs = dict(inputs)
        self.config = config
        self.store = store
        self.writer_id = writer_id or f"{socket.gethostname()}-{os.getpid()}"
        self.schema = log_schema(self.inputs)
        self.counters = LogCounters()
        self._lock = threading.Lock()
        self._buffer: list[Answered] = []
        self._buffered_rows = 0
        self._held_rows = 0  # buffered + being written or waiting for a retry: what max_buffered_rows bounds
        self._unwritten: list[Answered] = []  # a flush that failed, retried first by the next
        self._sequence = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the request path ---------------------------------------------------------------------------------

    def record(self, entry: Answered) -> bool:
        """Hold `entry` for the writer; False (and counted) when that would exceed max_buffered_rows."""
        rows = len(entry.rows)
        with self._lock:
            if self._held_rows + rows > self.config.max_buffered_rows:
                self.counters.rows_dropped += rows
                return False
            self._buffer.append(entry)
            self._buffered_rows += rows
            self._held_rows += rows
            self.counters.rows_logged += rows
            full = self._buffered_rows >= self.config.flush_rows
        if full:
            self._wake.set()
        return True

    # -- the writer -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"prediction-log-{self.model}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.config.flush_seconds)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Write every held entry, a file per day served; the rows written. Failed files are kept for the
        next flush (and keep counting against max_buffered_rows)."""
        with self._lock:
            entries = self._unwritten + self._buffer
            self._unwritten, self._buffer, self._buffered_rows = [], [], 0
        by_day = by_served_day(entries)
        written = 0
        failed: list[Answered] = []
        for day, day_entries in sorted(by_day.items()):
            rows = sum(len(e.rows) for e in day_entries)
            try:
                self._write(day, day_entries)
            except Exception as exc:  # the store is down or refusing: keep the rows, say so, try again
                failed += day_entries
                with self._lock:
                    self.counters.write_errors += 1
                    self.counters.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("prediction log: %s rows of dt=%s not written, retried next flush: %s", rows, day, exc)
                continue
            written += rows
            with self._lock:
                self._held_rows -= rows
                self.counters.rows_written += rows
                self.counters.files_written += 1
                self.counters.by_day_written[day] = self.counters.by_day_written.get(day, 0) + rows
        if failed:
            with self._lock:
                self._unwritten = failed + self._unwritten
        return written

    def _write(self, day: str, entries: list[Answered]) -> None:
        self._sequence += 1
        stem = f"{self.writer_id}-{entries[0].served_at_us}-{self._sequence:06d}"
        table = to_table(entries, self.schema, name_prefix=f"{stem}-")
        name = f"{stem}.parquet"
        self.store.write_table(f"{self.store.root_uri}/dt={day}/model={self.model}/{name}", table)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the writer and write what is held (graceful shutdown). Waits at most `timeout` seconds for a
        stalled store; rows still unwritten then are logged as lost."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("prediction log: store still stalled after %.0f s: %s rows lost", timeout, self._held_rows)
                return
        deadline = time.monotonic() + timeout
        while self._held_rows and time.monotonic() < deadline:
            if not self.flush():
                time.sleep(0.2)
        if self._held_rows:
            log.error("prediction log: %s rows not written at shutdown: %s", self._held_rows, self.counters.last_error)
