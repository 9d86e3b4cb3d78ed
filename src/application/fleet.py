from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from domain.errors import DiscoveryUnavailable, NodeUnavailable
from domain.hash_ring import DEFAULT_VIRTUAL_NODES, HashRing
from domain.node import Node
from domain.object_id import ObjectId
from domain.ports import NodeDiscovery

__all__ = ["Fleet", "Membership"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Membership:
    """One consistent view of the fleet: the nodes by name and the ring built from those names."""

    nodes: Mapping[str, Node]
    ring: HashRing

    def owner_of(self, object_id: ObjectId) -> Node:
        return self.nodes[self.ring.owner(object_id)]


class Fleet:
    """The known storage nodes, refreshed from discovery at most once per ``ttl_seconds``.

    The request path never waits for discovery while the cached view is fresh. When discovery fails
    after it has once succeeded, the last known membership keeps serving (and the failure is
    reported by ``last_error``); before the first success, ``DiscoveryUnavailable`` propagates.
    """

    def __init__(
        self,
        discovery: NodeDiscovery,
        ttl_seconds: float,
        virtual_nodes: int = DEFAULT_VIRTUAL_NODES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._discovery = discovery
        self._ttl_seconds = ttl_seconds
        self._virtual_nodes = virtual_nodes
        self._clock = clock
        self._membership: Membership | None = None
        self._checked_at = float("-inf")
        self._refresh_lock = asyncio.Lock()
        self.last_error: DiscoveryUnavailable | None = None

    async def membership(self) -> Membership:
        if self._is_fresh() and self._membership is not None:
            return self._membership
        async with self._refresh_lock:
            # Another request may have refreshed while this one waited for the lock.
            if not self._is_fresh() or self._membership is None:
                await self._refresh()
        if self._membership is None:
            assert self.last_error is not None
            raise self.last_error
        return self._membership

    async def owner_of(self, object_id: ObjectId) -> Node:
        """The node that owns ``object_id``; ``NodeUnavailable`` if it is a member but down."""
        node = (await self.membership()).owner_of(object_id)
        if not node.is_up:
            raise NodeUnavailable(node.name, "the node is not running")
        return node

    def _is_fresh(self) -> bool:
        return self._clock() - self._checked_at < self._ttl_seconds

    async def _refresh(self) -> None:
        try:
            nodes = await self._discovery.discover()
        except DiscoveryUnavailable as exc:
            if self.last_error is None or str(exc) != str(self.last_error):
                logger.warning("node discovery failed: %s", exc.detail)
            self.last_error = exc
            # A failure counts as a check too: an unreachable daemon is not asked on every request.
            self._checked_at = self._clock()
            return
        if self.last_error is not None:
            logger.info("node discovery recovered")
        self.last_error = None
        self._checked_at = self._clock()
        self._membership = self._membership_of(nodes)

    def _membership_of(self, nodes: Sequence[Node]) -> Membership:
        by_name = {node.name: node for node in nodes}
        previous = self._membership
        # The ring depends only on the names: it is rebuilt only when membership changed, so a node
        # going down or changing address swaps one immutable view for another and moves no ID.
        if previous is not None and previous.ring.node_names == frozenset(by_name):
            ring = previous.ring
        else:
            ring = HashRing(by_name, self._virtual_nodes)
            logger.info("storage fleet is now %s", sorted(by_name) or "empty")
        return Membership(nodes=by_name, ring=ring)
