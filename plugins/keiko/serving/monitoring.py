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
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from keiko.contract import VariantCounts

if TYPE_CHECKING:
    from keiko.serving.model_server import ModelServer


class ServerCollector(Collector):
    def __init__(self, server: ModelServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        model = self.server.definition.name
        serving = GaugeMetricFamily("keiko_serving_version", "The model version serving now", labels=["model"])
        if self.server.version is not None:
            serving.add_metric([model], self.server.version)
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
            "Requests answered without scoring: body_too_large and too_many_rows (413), invalid_request "
            "(422; 400 in the inference protocol)",
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
    """A model's requests by protocol, variant and status, and their latency by variant: what a canary's analysis
    compares (`variant` is stable or canary, `unrouted` for a request refused before it was routed; `protocol` is
    predict (keiko's /predict), v2_rest or v2_grpc (the Open Inference Protocol); a gRPC status is counted as the
    HTTP status it maps to)."""

    def __init__(self, model: str, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "keiko_serving_requests",
            "Requests by protocol, variant and HTTP status",
            ["model", "protocol", "variant", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "keiko_serving_request_seconds",
            "Latency in the server by variant, seconds",
            ["model", "variant"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.model = model
        self._children: dict[tuple[int, str, str], tuple[Counter, Histogram]] = {}

    def observe(self, status: int, seconds: float, variant: str, protocol: str) -> None:
        key = (status, variant, protocol)
        children = self._children.get(key)
        if children is None:  # labels() looks the child up under a lock: once per label set, not per request
            children = self._children[key] = (
                self.requests.labels(self.model, protocol, variant, str(status)),
                self.latency.labels(self.model, variant),
            )
        children[0].inc()
        children[1].observe(seconds)


def metrics_registry(server: ModelServer) -> CollectorRegistry:
    """A registry of this server's own (not the process-wide default: tests run several apps in one process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server))
    return registry


class ProcessCollector(Collector):
    """Every hosted model's metrics as one exposition (GET /metrics of a process hosting several): a metric family
    is one block in Prometheus' text format, so each family's samples are merged across the models' registries."""

    def __init__(self, registries: list[CollectorRegistry]) -> None:
        self.registries = registries

    @classmethod
    def registry(cls, registries: list[CollectorRegistry]) -> CollectorRegistry:
        merged = CollectorRegistry(auto_describe=False)
        merged.register(cls(registries))
        return merged

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for registry in self.registries:
            for family in registry.collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                merged.samples.extend(family.samples)
        yield from families.values()


def exposition(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The scrape body in the format the scraper's Accept header asks for, and its content type."""
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type


def variant_counts(exposition_text: str) -> dict[str, VariantCounts]:
    """One server's /predict counts by variant, from its /metrics text: requests, 5xx answers and the cumulative
    latency buckets (what a canary's analysis compares)."""
    requests: dict[str, int] = {}
    errors: dict[str, int] = {}
    buckets: dict[str, dict[str, int]] = {}
    for family in text_string_to_metric_families(exposition_text):
        for sample in family.samples:
            variant = sample.labels.get("variant")
            if variant is None:
                continue
            if sample.name == "keiko_serving_requests_total":
                requests[variant] = requests.get(variant, 0) + int(sample.value)
                if sample.labels.get("status", "").startswith("5"):
                    errors[variant] = errors.get(variant, 0) + int(sample.value)
            elif sample.name == "keiko_serving_request_seconds_bucket":
                buckets.setdefault(variant, {})[sample.labels["le"]] = int(sample.value)
    return {
        v: VariantCounts(requests=n, errors=errors.get(v, 0), latency_buckets=buckets.get(v, {}))
        for v, n in requests.items()
    }


def summed(counts: list[dict[str, VariantCounts]]) -> dict[str, VariantCounts]:
    """Several servers' counts as one."""
    total: dict[str, VariantCounts] = {}
    for server in counts:
        for variant, c in server.items():
            t = total.get(variant, VariantCounts())
            buckets = {b: t.latency_buckets.get(b, 0) + n for b, n in c.latency_buckets.items()}
            total[variant] = VariantCounts(
                requests=t.requests + c.requests, errors=t.errors + c.errors, latency_buckets=buckets
            )
    return total
