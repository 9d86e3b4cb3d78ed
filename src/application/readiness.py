from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from application.fleet import Fleet, Membership
from domain.circuit_breaker import NodeBreakers
from domain.node import Node
from domain.replication import ReplicationPolicy

__all__ = [
    "DiscoveryReport",
    "NodeHealth",
    "NodeReport",
    "ReadinessReport",
    "ReplicationReport",
    "check_readiness",
    "health_of",
]


class NodeHealth(StrEnum):
    """Whether a member can serve now: the one word readiness and the metrics use for it."""

    UP = "up"
    DRAINING = "draining"  # marked to be emptied: it serves reads, takes no new writes
    DRAINED = "drained"  # emptied: asked nothing any more, safe to remove
    DOWN = "down"  # not running, per discovery
    RESTING = "resting"  # its breaker is open


def health_of(node: Node, breakers: NodeBreakers, membership: Membership) -> NodeHealth:
    if node.name in membership.drained:
        return NodeHealth.DRAINED
    if not node.is_up:
        return NodeHealth.DOWN
    if breakers.state(node.name).open:
        return NodeHealth.RESTING
    if node.name in membership.draining:
        return NodeHealth.DRAINING
    return NodeHealth.UP


@dataclass(frozen=True, slots=True)
class NodeReport:
    name: str
    address: str | None
    state: NodeHealth


@dataclass(frozen=True, slots=True)
class DiscoveryReport:
    # "ok", "degraded" (failing, serving the last known nodes) or "unavailable" (no nodes known).
    state: str
    seconds_since_success: float | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class ReplicationReport:
    replicas: int  # copies of each object (N)
    write_quorum: int  # W
    read_quorum: int  # R
    # Nodes that must be up for every ID to be read and written: max(W, R), or all there are.
    nodes_needed: int


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    ready: bool
    discovery: DiscoveryReport
    replication: ReplicationReport
    nodes: list[NodeReport]


def check_readiness(
    fleet: Fleet,
    breakers: NodeBreakers,
    stale_after_seconds: float,
    replication: ReplicationPolicy | None = None,
) -> ReadinessReport:
    """Ready while the gateway can serve: enough nodes known, up and not resting that every ID
    can be read and written (one, with one copy per ID; with N copies, as many as the larger
    quorum).

    Failing discovery alone does not make it unready (the known nodes keep serving, and all
    replicas sharing that daemon would otherwise leave the load balancer at once); it shows as
    ``degraded``, as does discovery that has not succeeded for ``stale_after_seconds``.
    """
    status = fleet.status()
    membership = fleet.current
    nodes = []
    if membership is not None:
        for node in sorted(membership.nodes.values(), key=lambda n: n.name):
            nodes.append(
                NodeReport(
                    name=node.name,
                    address=node.endpoint,
                    state=health_of(node, breakers, membership),
                )
            )
    if not status.known:
        discovery_state = "unavailable"
    elif status.last_error is not None or (
        status.seconds_since_success is not None
        and status.seconds_since_success >= stale_after_seconds
    ):
        discovery_state = "degraded"
    else:
        discovery_state = "ok"
    policy = replication or ReplicationPolicy()
    members = sum(1 for node in nodes if node.state is not NodeHealth.DRAINED)
    needed = max(1, min(max(policy.write_quorum, policy.read_quorum), members))
    up = sum(1 for node in nodes if node.state is NodeHealth.UP)
    return ReadinessReport(
        ready=up >= needed,
        discovery=DiscoveryReport(
            state=discovery_state,
            seconds_since_success=(
                None
                if status.seconds_since_success is None
                else round(status.seconds_since_success, 3)
            ),
            last_error=status.last_error,
        ),
        replication=ReplicationReport(
            replicas=policy.replicas,
            write_quorum=policy.write_quorum,
            read_quorum=policy.read_quorum,
            nodes_needed=needed,
        ),
        nodes=nodes,
    )
