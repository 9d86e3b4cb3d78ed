from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Credentials", "DrainState", "Node", "NodeMarks", "NodeState"]


class NodeState(StrEnum):
    """Whether a member of the fleet can be asked to serve requests right now."""

    UP = "up"
    DOWN = "down"


class DrainState(StrEnum):
    """Where a node marked to be emptied is: draining (it serves reads, takes no new writes), or
    drained (it holds nothing and is no longer asked anything: safe to remove)."""

    DRAINING = "draining"
    DRAINED = "drained"


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key: str
    # Kept out of repr so that logging a node or an error never leaks the secret.
    secret_key: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Node:
    """A storage node of the fleet.

    ``name`` is its identity on the ring (stable across restarts); ``host`` may change when the node
    restarts and is ``None`` while it is down.
    """

    name: str
    host: str | None
    port: int
    credentials: Credentials
    state: NodeState

    @property
    def is_up(self) -> bool:
        return self.state is NodeState.UP and self.host is not None

    @property
    def endpoint(self) -> str | None:
        if self.host is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class NodeMarks:
    """What a node's own marks say: whether it is being drained; whether it is known to hold
    nothing in the layout from before versions had keys of their own (``migrated``); the ring a
    rebalance last found every ID placed by (``settled``: its fingerprint) or is checking
    (``settling``); and whether the node holds nothing at all (``fresh``: no bucket)."""

    drain: DrainState | None = None
    migrated: bool = False
    settled: str | None = None
    settling: str | None = None
    fresh: bool = False

    @property
    def ring(self) -> str | None:
        """The fingerprint of a ring this node is marked with (settled or being settled)."""
        return self.settled or self.settling
