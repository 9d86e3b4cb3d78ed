"""The gateway's Prometheus metrics: requests by route and status, per node, and the fleet."""

from __future__ import annotations

from collections.abc import Iterator

from litestar.types import Scope
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from application.fleet import Fleet
from application.read_repair import ReadRepair
from application.readiness import NodeHealth, health_of
from application.replicas import Replicas
from domain.circuit_breaker import NodeBreakers
from entrypoints.observability.request_facts import RequestFacts

__all__ = ["GatewayMetrics"]


class GatewayMetrics:
    """The gateway's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(
        self,
        fleet: Fleet,
        breakers: NodeBreakers,
        replicas: Replicas | None = None,
        repairs: ReadRepair | None = None,
    ) -> None:
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
        self.registry.register(_ReplicationCollector(replicas, repairs))
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


# The replicas' counters: metric, help text, ReplicaCounts field.
_REPLICA_COUNTERS = (
    (
        "gateway_degraded_writes",
        "Writes acknowledged with fewer copies than GATEWAY_REPLICAS (no node to hand off to).",
        "degraded_writes",
    ),
    (
        "gateway_handoff_copies",
        "Copies written to a node in place of a replica that could not take them.",
        "handoff_copies",
    ),
    (
        "gateway_quorum_refusals",
        "Requests answered 503 because fewer replicas than the quorum could take part.",
        "quorum_refusals",
    ),
    (
        "gateway_superseded_writes",
        "Writes dropped before committing: a concurrent, later write to the ID came first.",
        "superseded_writes",
    ),
    (
        "gateway_late_replica_failures",
        "Copies that failed after their write was acknowledged at the write quorum (the "
        "repair command restores them).",
        "late_failures",
    ),
)


class _ReplicationCollector(Collector):
    """What replication did (GATEWAY_REPLICAS above 1; all zero with one copy per ID)."""

    def __init__(self, replicas: Replicas | None, repairs: ReadRepair | None) -> None:
        self._replicas = replicas
        self._repairs = repairs

    def collect(self) -> Iterator[Metric]:
        counts = None if self._replicas is None else self._replicas.counts
        for name, description, field in _REPLICA_COUNTERS:
            yield CounterMetricFamily(
                name, description, 0 if counts is None else getattr(counts, field)
            )
        repairs = CounterMetricFamily(
            "gateway_read_repairs",
            "Read repairs, by outcome: scheduled, repaired (copies), failed (copies), dropped "
            "(too many waiting; the repair command catches them).",
            labels=["outcome"],
        )
        repair_counts = None if self._repairs is None else self._repairs.counts
        for outcome in ("scheduled", "repaired", "failed", "dropped"):
            value = 0 if repair_counts is None else getattr(repair_counts, outcome)
            repairs.add_metric([outcome], value)
        yield repairs
