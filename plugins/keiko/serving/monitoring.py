"""What a model server counts, exposed for Prometheus at GET /metrics.

The request path only adds to plain ints (keiko.serving.unseen, ModelServer.refused); this collector turns
them into counters when Prometheus scrapes, so no prometheus_client call (with its locks) is on the hot
path. Counts are kept per version for every version this process has served, so a counter never goes
down when /admin/load swaps the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
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


def metrics_registry(server: ModelServer) -> CollectorRegistry:
    """A registry of this server's own (not the process-wide default: tests run several apps in one process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server))
    return registry


def exposition(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The scrape body in the format the scraper's Accept header asks for, and its content type."""
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type
