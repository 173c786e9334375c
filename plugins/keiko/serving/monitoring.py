"""What a model server counts, exposed for Prometheus at GET /metrics.

/predict's requests by status and their latency are prometheus_client's own Counter and Histogram (one
`observe` per request: ~1 us, measured with the rest of the server in bench/serving.py). What is counted per
row or per value (keiko.serving.unseen, ModelServer.refused, the prediction log's counters) stays plain ints
on the request path; ServerCollector turns them into metrics when Prometheus scrapes. Counts are kept per
version for every version this process has served, so a counter never goes down when /admin/load swaps it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from keiko.serving.app import ModelServer


class ServerCollector(Collector):
    def __init__(self, server: ModelServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        model = self.server.definition.name
        serving = GaugeMetricFamily("keiko_serving_version", "The model version serving now", labels=["model"])
        if self.server.current is not None:
            serving.add_metric([model], self.server.current.version)
        rows = CounterMetricFamily(
            "keiko_serving_rows", "Rows scored, by the version that scored them", labels=["model", "version"]
        )
        unseen = CounterMetricFamily(
            "keiko_serving_unseen_values",
            "Request values outside what the version's training split held: unseen_category (not among the "
            "field's training values) or out_of_range (outside its training min..max)",
            labels=["model", "version", "field", "kind"],
        )
        for version, values in sorted(self.server.unseen.items()):
            rows.add_metric([model, str(version)], values.rows)
            for (field, kind), count in values.counts.items():
                unseen.add_metric([model, str(version), field, kind], count)
        refused = CounterMetricFamily(
            "keiko_serving_refused_requests",
            "/predict requests answered without scoring: body_too_large and too_many_rows (413), invalid_request (422)",
            labels=["model", "reason"],
        )
        for reason, count in self.server.refused.items():
            refused.add_metric([model, reason], count)
        yield from (serving, rows, unseen, refused)
        if self.server.prediction_log is not None:
            yield from prediction_log_metrics(model, self.server.prediction_log.counters)


def prediction_log_metrics(model: str, counters) -> Iterator[Metric]:
    rows = CounterMetricFamily(
        "keiko_prediction_log_rows",
        "Answered rows by what the prediction log did with them: logged (held for writing), written (in a file "
        "of the predictions table), dropped (the buffer was full: the store is slow or down)",
        labels=["model", "outcome"],
    )
    for outcome, count in (
        ("logged", counters.rows_logged),
        ("written", counters.rows_written),
        ("dropped", counters.rows_dropped),
    ):
        rows.add_metric([model, outcome], count)
    files = CounterMetricFamily("keiko_prediction_log_files", "Files written", labels=["model"])
    files.add_metric([model], counters.files_written)
    errors = CounterMetricFamily(
        "keiko_prediction_log_write_errors", "Files that failed to write (retried next flush)", labels=["model"]
    )
    errors.add_metric([model], counters.write_errors)
    yield from (rows, files, errors)


# /predict latency, from the request's first byte read to its last byte handed to the server: a bid's budget
# is 100 ms, a replica's p95 target 10 ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class RequestMetrics:
    """/predict's requests by HTTP status, and their latency."""

    def __init__(self, model: str, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "keiko_serving_requests", "/predict requests by HTTP status", ["model", "status"], registry=registry
        )
        self.latency = Histogram(
            "keiko_serving_request_seconds",
            "/predict latency in the server, seconds",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ).labels(model)
        self.model = model
        self._by_status: dict[int, Counter] = {}

    def observe(self, status: int, seconds: float) -> None:
        counter = self._by_status.get(status)
        if counter is None:  # labels() looks the child up under a lock: once per status, not per request
            counter = self._by_status[status] = self.requests.labels(self.model, str(status))
        counter.inc()
        self.latency.observe(seconds)


def metrics_registry(server: ModelServer) -> CollectorRegistry:
    """A registry of this server's own (not the process-wide default: tests run several apps in one process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server))
    return registry


def exposition(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The scrape body in the format the scraper's Accept header asks for, and its content type."""
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type
