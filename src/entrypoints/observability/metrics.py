"""The gateway's Prometheus metrics: requests by route and status, per node, and the fleet."""

from __future__ import annotations

from collections.abc import Iterator

from litestar.types import Scope
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from application.fleet import Fleet
from application.readiness import NodeHealth, health_of
from domain.circuit_breaker import NodeBreakers
from entrypoints.observability.request_facts import RequestFacts

__all__ = ["GatewayMetrics"]


class GatewayMetrics:
    """The gateway's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self, fleet: Fleet, breakers: NodeBreakers) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gateway_http_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_http_request_duration_seconds",
            "Time from request to the last byte of the response, by route and method.",
            ["route", "method"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.bytes_in = Counter(
            "gateway_http_request_bytes", "Request body bytes received.", registry=self.registry
        )
        self.bytes_out = Counter(
            "gateway_http_response_bytes", "Response body bytes sent.", registry=self.registry
        )
        self.node_requests = Counter(
            "gateway_node_requests",
            "Requests served through each storage node.",
            ["node"],
            registry=self.registry,
        )
        self.fallback_hits = Counter(
            "gateway_fallback_reads",
            "Reads served by a node other than the ID's owner: objects not rebalanced yet.",
            ["node"],
            registry=self.registry,
        )
        self.node_errors = Counter(
            "gateway_node_errors",
            "Requests that failed because of their storage node (down, unreachable, resting).",
            ["node"],
            registry=self.registry,
        )
        self.registry.register(_FleetCollector(fleet, breakers))
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._node_children: dict[str, tuple[Counter, Counter, Counter]] = {}

    def observe(
        self,
        scope: Scope,
        *,
        facts: RequestFacts,
        status: int,
        duration: float,
        sent: int,
        received: int,
    ) -> None:
        route = facts.route or str(scope.get("path_template") or "unmatched")
        method = str(scope.get("method", ""))
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            # labels() takes a lock and builds its key on every call; a request need not.
            children = self._children[key] = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route, method),
            )
        children[0].inc()
        children[1].observe(duration)
        self.bytes_in.inc(received)
        self.bytes_out.inc(sent)
        node = facts.node
        if node is not None:
            per_node = self._node_children.get(node)
            if per_node is None:
                per_node = self._node_children[node] = (
                    self.node_requests.labels(node),
                    self.node_errors.labels(node),
                    self.fallback_hits.labels(node),
                )
            per_node[0].inc()
            if facts.node_failed:
                per_node[1].inc()
            if facts.from_fallback:
                per_node[2].inc()


class _FleetCollector(Collector):
    """Known nodes and discovery counters, read from the fleet at scrape time."""

    def __init__(self, fleet: Fleet, breakers: NodeBreakers) -> None:
        self._fleet = fleet
        self._breakers = breakers

    def collect(self) -> Iterator[Metric]:
        nodes = GaugeMetricFamily(
            "gateway_known_nodes", "Storage nodes known, by state.", labels=["state"]
        )
        membership = self._fleet.current
        counts = dict.fromkeys(NodeHealth, 0)
        if membership is not None:
            for node in membership.nodes.values():
                counts[health_of(node, self._breakers, membership)] += 1
        for health, count in counts.items():
            nodes.add_metric([health.value], count)
        yield nodes
        status = self._fleet.status()
        yield CounterMetricFamily(
            "gateway_discovery_refreshes",
            "Successful full listings of the nodes.",
            status.refreshes,
        )
        yield CounterMetricFamily(
            "gateway_discovery_errors", "Failed calls to the container runtime.", status.errors
        )
        yield CounterMetricFamily(
            "gateway_discovery_reconnects",
            "Times the change feed was reopened.",
            status.reconnects,
        )
