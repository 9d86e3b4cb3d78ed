"""The gateway's Prometheus metrics: requests by route and status, per node, and the fleet."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

from litestar.types import Scope
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from application.conditional import ConditionalWrites
from application.fleet import Fleet
from application.readiness import NodeHealth, health_of
from application.reads import VersionReads
from application.writes import VersionWrites
from domain.circuit_breaker import NodeBreakers
from entrypoints.observability.request_facts import RequestFacts

__all__ = [
    "MULTIPROCESS_DIR_VARIABLE",
    "GatewayMetrics",
    "multiprocess_dir",
    "use_multiprocess_metrics_if_asked",
]

# prometheus_client's own convention: where every process of one program writes its metrics.
MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROCESS_DIR_VARIABLE) or None


def use_multiprocess_metrics_if_asked() -> None:
    """In a worker process of several: counters and histograms made from now on keep their
    values in files every process can read (prometheus_client chose when it was imported, which
    may have been before the variable was set)."""
    if multiprocess_dir() is not None:
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


class GatewayMetrics:
    """The gateway's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(
        self,
        fleet: Fleet,
        breakers: NodeBreakers,
        *,
        reads: VersionReads | None = None,
        writes: VersionWrites | None = None,
        conditional: ConditionalWrites | None = None,
        multiprocess_dir: str | None = None,
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
        self._fleet_collector = _FleetCollector(fleet, breakers)
        self.registry.register(self._fleet_collector)
        self._published = _Published(self.registry, fleet, reads, writes, conditional)
        self._multiprocess_dir = multiprocess_dir
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._node_children: dict[str, tuple[Counter, Counter, Counter]] = {}

    @property
    def several_processes(self) -> bool:
        return bool(self._multiprocess_dir)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format: with several processes, every process's
        counters added up (and the known nodes as this one sees them)."""
        self._published.publish()
        if not self._multiprocess_dir:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self._multiprocess_dir)  # type: ignore[no-untyped-call]
        registry.register(self._fleet_collector)
        return generate_latest(registry)

    async def keep_publishing(self, every_seconds: float = 1.0) -> None:
        """With several processes: publish this one's counts every ``every_seconds``."""
        while True:
            await asyncio.sleep(every_seconds)
            self._published.publish()

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
    """Known nodes by state, read from the fleet at scrape time (the answering process's view)."""

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


# What the gateway counted in its own objects, published as counters: metric, help text, and
# where the count is (its source and field; several sources add up).
_COUNTED = (
    ("gateway_discovery_refreshes", "Successful full listings of the nodes.", "discovery",
     "refreshes"),
    ("gateway_discovery_errors", "Failed calls to the container runtime.", "discovery", "errors"),
    ("gateway_discovery_reconnects", "Times the change feed was reopened.", "discovery",
     "reconnects"),
    ("gateway_degraded_writes",
     "Writes acknowledged with fewer copies than GATEWAY_REPLICAS (no node to hand off to).",
     "writes", "degraded_writes"),
    ("gateway_handoff_copies",
     "Copies written to a node in place of a replica that could not take them.",
     "writes", "handoff_copies"),
    ("gateway_quorum_refusals",
     "Requests answered 503 because fewer replicas than the quorum could take part.",
     "reads+writes", "quorum_refusals"),
    ("gateway_late_replica_failures",
     "Copies that failed after their write was acknowledged at the write quorum (the repair "
     "command restores them).", "writes", "late_failures"),
    ("gateway_rehomed_writes",
     "Writes that landed on a node marked to be drained meanwhile (or placed by a ring that "
     "changed), copied to the ID's replicas before they were acknowledged.",
     "writes", "rehomed_writes"),
    ("gateway_reads_looked_again",
     "Reads whose version was moved or replaced before it could be opened, asked again.",
     "reads", "looked_again"),
    ("gateway_conditional_conflicts",
     "Conditional writes refused (412) because another write to the ID came while they were "
     "decided.", "conditional", "conflicts"),
)  # fmt: skip
# Work left for later, by outcome: metric, help text, which queue.
_QUEUED = (
    ("gateway_read_repairs",
     "Read repairs, by outcome: scheduled, repaired, failed, dropped (too many waiting; the "
     "repair command catches them).", "repairs"),
    ("gateway_tidying",
     "Removals of versions a newer one made useless, by outcome: scheduled, repaired (done), "
     "failed, dropped.", "tidying"),
)  # fmt: skip
_OUTCOMES = (("scheduled", "scheduled"), ("repaired", "done"), ("failed", "failed"),
             ("dropped", "dropped"))  # fmt: skip


class _Published:
    """Counts kept by the gateway's own objects, published as Prometheus counters: each time,
    what grew since the last. In one process that is done at every scrape; with several, every
    second too, so that the answer gathered from every process's files is at most that late."""

    def __init__(
        self,
        registry: CollectorRegistry,
        fleet: Fleet,
        reads: VersionReads | None,
        writes: VersionWrites | None,
        conditional: ConditionalWrites | None,
    ) -> None:
        self._fleet = fleet
        self._sources: dict[str, object] = {
            "reads": None if reads is None else reads.counts,
            "writes": None if writes is None else writes.counts,
            "conditional": None if conditional is None else conditional.counts,
        }
        self._queues = {
            "repairs": None if reads is None else reads.upkeep.repairs.counts,
            "tidying": None if reads is None else reads.upkeep.tidying.counts,
        }
        self._counters = [
            (Counter(name, text, registry=registry), sources, field)
            for name, text, sources, field in _COUNTED
        ]
        self._queued = [
            (Counter(name, text, ["outcome"], registry=registry), queue)
            for name, text, queue in _QUEUED
        ]
        for counter, _ in self._queued:
            for outcome, _ in _OUTCOMES:
                counter.labels(outcome)  # each outcome exported from the start, at zero
        self._published: dict[tuple[str, str], float] = {}

    def publish(self) -> None:
        discovery = self._fleet.status()
        for counter, sources, field in self._counters:
            value = 0
            for source in sources.split("+"):
                owner = discovery if source == "discovery" else self._sources[source]
                value += 0 if owner is None else getattr(owner, field)
            self._add(counter, "", value)
        for counter, queue in self._queued:
            counts = self._queues[queue]
            for outcome, field in _OUTCOMES:
                self._add(counter, outcome, 0 if counts is None else getattr(counts, field))

    def _add(self, counter: Counter, label: str, value: float) -> None:
        key = (counter._name, label)  # noqa: SLF001 - the counter's own name, as registered
        grown = value - self._published.get(key, 0)
        if grown > 0:
            (counter.labels(label) if label else counter).inc(grown)
            self._published[key] = value
