"""Where a write goes, and where its version may stay.

A write goes to the ID's replicas (the first N nodes of its walk on the write ring), or to the next
nodes of the walk in place of replicas that cannot take it (handoffs); only replicas count towards
the write quorum. A version that landed on a node marked to be drained meanwhile may not stay there
alone: it is copied to the ID's replicas as they are now (``rehome``) before the write is
acknowledged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from application.copies import copy_version
from application.fleet import Fleet
from application.membership import Membership
from application.node_access import NodeAccess
from domain.errors import GatewayError, NodeUnavailable, NoNodesAvailable, QuorumUnavailable
from domain.node import Node
from domain.object_id import ObjectId
from domain.objects import StoredVersion
from domain.ports import ObjectStorage
from domain.replication import ReplicationPolicy

__all__ = ["Placed", "Placement", "WriteCounts"]

logger = logging.getLogger(__name__)

Placed = tuple[Node, StoredVersion]


@dataclass
class WriteCounts:
    # Acknowledged with fewer than N copies (some replica down, and no node to hand off to).
    degraded_writes: int = 0
    # Copies written to a node in place of a replica that could not take them.
    handoff_copies: int = 0
    # Writes refused because fewer replicas than the quorum could take them.
    quorum_refusals: int = 0
    # Copies that failed after their write was acknowledged without waiting for them.
    late_failures: int = 0
    # Writes whose version landed on a node marked to be drained meanwhile, copied elsewhere.
    rehomed_writes: int = 0


class Placement:
    def __init__(
        self,
        fleet: Fleet,
        storage: ObjectStorage,
        access: NodeAccess,
        policy: ReplicationPolicy,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fleet = fleet
        self._storage = storage
        self._access = access
        self._policy = policy
        self._monotonic = monotonic
        self.counts = WriteCounts()

    def need(self, replicas: list[Node]) -> int:
        return min(self._policy.write_quorum, len(replicas))

    def targets(self, object_id: ObjectId, membership: Membership) -> tuple[list[Node], list[Node]]:
        """The ID's replicas, and where this write goes: the replicas that can take it, then the
        next nodes of the walk in place of those that cannot. Refused at once (nothing sent)
        when fewer replicas than the write quorum can take it; with one copy per ID, with the
        owner's own reason."""
        full_walk = membership.write_walk(object_id, len(membership.write_ring.node_names))
        replicas = full_walk[: self._policy.replicas]
        if not replicas:
            raise NoNodesAvailable("no storage node can take this ID")
        if self._policy.single:
            owner = replicas[0]
            if not owner.is_up:
                raise NodeUnavailable(owner.name, "the node is not running")
            self._access.admit(owner)
            return replicas, replicas
        usable = [node for node in replicas if self._admitted(node)]
        need = self.need(replicas)
        if len(usable) < need:
            self.counts.quorum_refusals += 1
            raise QuorumUnavailable(
                f"{len(usable)} of this ID's {len(replicas)} replicas can take a write, and "
                f"{need} must"
            )
        handoffs: list[Node] = []
        for node in full_walk[self._policy.replicas :]:
            if len(usable) + len(handoffs) >= len(replicas):
                break
            if self._admitted(node):
                handoffs.append(node)
        return replicas, usable + handoffs

    def _admitted(self, node: Node) -> bool:
        if not self._access.available(node):
            return False
        try:
            self._access.admit(node)
        except NodeUnavailable:
            return False
        return True

    async def settle(
        self,
        object_id: ObjectId,
        replicas: list[Node],
        committed: list[Placed],
        placed: list[Placed],
    ) -> tuple[list[Node], list[Placed]]:
        """Where a committed version may stay, as the ring is now: the ID's replicas, and those
        of them that hold it. The ring may have changed while the body was coming (a node joined,
        left, drained, came back: this gateway's view, possibly just refreshed on a node's mark);
        a version short of its quorum there is copied to the replicas as they are now."""
        now = (await self._fleet.membership()).write_walk(object_id, self._policy.replicas)
        if [node.name for node in now] != [node.name for node in replicas]:
            replicas = now
        names = {node.name for node in replicas}
        on_replicas = [(node, stored) for node, stored in placed if node.name in names]
        if len(on_replicas) < self.need(replicas) and committed:
            replicas, on_replicas = await self.rehome(object_id, committed, placed)
        return replicas, on_replicas

    async def rehome(
        self, object_id: ObjectId, committed: list[Placed], placed: list[Placed]
    ) -> tuple[list[Node], list[Placed]]:
        """The version, which landed on nodes marked to be drained meanwhile, copied to the ID's
        replicas as they are now: the replicas, and those that hold it where it may stay."""
        self.counts.rehomed_writes += 1
        await self._fleet.refresh_drain_marks()  # the marks that made them unplaced
        membership = await self._fleet.membership()
        replicas = membership.write_walk(object_id, self._policy.replicas)
        names = {node.name for node in replicas}
        have = [(node, stored) for node, stored in placed if node.name in names]
        stored = committed[0][1]
        for target in replicas:
            if len(have) >= self.need(replicas):
                break
            if any(node.name == target.name for node, _ in have):
                continue
            if not self._access.available(target):
                continue
            for source, _ in committed:
                try:
                    written = await copy_version(
                        self._storage, self._access, source, target, object_id, stored
                    )
                    if await self._fleet.confirm_placed(target, self._monotonic()):
                        have.append((target, written))
                    break
                except GatewayError as exc:
                    logger.info("moving %s to %s: %s", object_id, target.name, exc.detail)
        return replicas, have
