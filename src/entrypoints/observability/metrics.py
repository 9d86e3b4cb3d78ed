"""The gateway's Prometheus metrics: requests by route and status, per node, and the fleet."""

from __future__ import annotations

from collections.abc import Iterator

from litestar.types import Scope
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from application.conditional import ConditionalWrites
from application.fleet import Fleet
from application.readiness import NodeHealth, health_of
from application.reads import VersionReads
from application.writes import VersionWrites
from domain.circuit_breaker import NodeBreakers
from entrypoints.observability.request_facts import RequestFacts

__all__ = ["GatewayMetrics"]


class GatewayMetrics:
    """The gateway's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(
        self,
        fleet: Fleet,
        breakers: NodeBreakers,
        reads: VersionReads | None = None,
        writes: VersionWrites | None = None,
        conditional: ConditionalWrites | None = None,
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
        self.registry.register(_ReplicationCollector(reads, writes, conditional))
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


# What the read and write paths counted: metric, help text, which counts, field.
_COUNTERS = (
    (
        "gateway_degraded_writes",
        "Writes acknowledged with fewer copies than GATEWAY_REPLICAS (no node to hand off to).",
        "writes",
        "degraded_writes",
    ),
    (
        "gateway_handoff_copies",
        "Copies written to a node in place of a replica that could not take them.",
        "writes",
        "handoff_copies",
    ),
    (
        "gateway_quorum_refusals",
        "Requests answered 503 because fewer replicas than the quorum could take part.",
        "reads+writes",
        "quorum_refusals",
    ),
    (
        "gateway_late_replica_failures",
        "Copies that failed after their write was acknowledged at the write quorum (the "
        "repair command restores them).",
        "writes",
        "late_failures",
    ),
    (
        "gateway_rehomed_writes",
        "Writes that landed on a node marked to be drained meanwhile, copied to the ID's "
        "replicas before they were acknowledged.",
        "writes",
        "rehomed_writes",
    ),
    (
        "gateway_reads_looked_again",
        "Reads whose version was moved or replaced before it could be opened, asked again.",
        "reads",
        "looked_again",
    ),
    (
        "gateway_conditional_conflicts",
        "Conditional writes refused (412) because another write to the ID came while they "
        "were decided.",
        "conditional",
        "conflicts",
    ),
)


class _ReplicationCollector(Collector):
    """What the read and write paths did, and the work they left for later."""

    def __init__(
        self,
        reads: VersionReads | None,
        writes: VersionWrites | None,
        conditional: ConditionalWrites | None,
    ) -> None:
        self._sources = {"reads": reads, "writes": writes, "conditional": conditional}
        self._reads = reads

    def collect(self) -> Iterator[Metric]:
        for name, description, sources, field in _COUNTERS:
            value = 0
            for source in sources.split("+"):
                owner = self._sources[source]
                value += 0 if owner is None else getattr(owner.counts, field)
            yield CounterMetricFamily(name, description, value)
        reads = self._reads
        for name, description, work in (
            (
                "gateway_read_repairs",
                "Read repairs, by outcome: scheduled, repaired, failed, dropped (too many "
                "waiting; the repair command catches them).",
                None if reads is None else reads.upkeep.repairs,
            ),
            (
                "gateway_tidying",
                "Removals of versions a newer one made useless, by outcome: scheduled, "
                "repaired (done), failed, dropped.",
                None if reads is None else reads.upkeep.tidying,
            ),
        ):
            family = CounterMetricFamily(name, description, labels=["outcome"])
            for outcome, field in (
                ("scheduled", "scheduled"),
                ("repaired", "done"),
                ("failed", "failed"),
                ("dropped", "dropped"),
            ):
                family.add_metric([outcome], 0 if work is None else getattr(work.counts, field))
            yield family
