from __future__ import annotations

from dataclasses import dataclass

from application.fleet import Fleet
from domain.circuit_breaker import NodeBreakers

__all__ = ["DiscoveryReport", "NodeReport", "ReadinessReport", "check_readiness"]


@dataclass(frozen=True, slots=True)
class NodeReport:
    name: str
    address: str | None
    # "up", "down" (not running, per discovery) or "resting" (its breaker is open).
    state: str


@dataclass(frozen=True, slots=True)
class DiscoveryReport:
    # "ok", "degraded" (failing, serving the last known nodes) or "unavailable" (no nodes known).
    state: str
    seconds_since_success: float | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    ready: bool
    discovery: DiscoveryReport
    nodes: list[NodeReport]


def check_readiness(
    fleet: Fleet, breakers: NodeBreakers, stale_after_seconds: float
) -> ReadinessReport:
    """Ready while the gateway can serve: some node is known, up and not resting.

    A failing Docker daemon alone does not make it unready (the known nodes keep serving, and all
    replicas sharing that daemon would otherwise leave the load balancer at once); it shows as
    ``degraded``, as does discovery that has not succeeded for ``stale_after_seconds``.
    """
    status = fleet.status()
    membership = fleet.current
    nodes = []
    for node in (
        [] if membership is None else sorted(membership.nodes.values(), key=lambda n: n.name)
    ):
        state = "down" if not node.is_up else "resting" if breakers.state(node.name).open else "up"
        nodes.append(NodeReport(name=node.name, address=node.endpoint, state=state))
    if not status.known:
        discovery_state = "unavailable"
    elif status.last_error is not None or (
        status.seconds_since_success is not None
        and status.seconds_since_success >= stale_after_seconds
    ):
        discovery_state = "degraded"
    else:
        discovery_state = "ok"
    return ReadinessReport(
        ready=any(node.state == "up" for node in nodes),
        discovery=DiscoveryReport(
            state=discovery_state,
            seconds_since_success=(
                None
                if status.seconds_since_success is None
                else round(status.seconds_since_success, 3)
            ),
            last_error=status.last_error,
        ),
        nodes=nodes,
    )
