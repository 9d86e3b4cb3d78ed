from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from domain.errors import DiscoveryUnavailable, NodeUnavailable
from domain.hash_ring import DEFAULT_VIRTUAL_NODES, HashRing
from domain.node import Node
from domain.object_id import ObjectId
from domain.ports import NodeDiscovery

__all__ = ["DiscoveryStatus", "Fleet", "Membership"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Membership:
    """One consistent view of the fleet: the nodes by name and the ring built from those names."""

    nodes: Mapping[str, Node]
    ring: HashRing

    def owner_of(self, object_id: ObjectId) -> Node:
        return self.nodes[self.ring.owner(object_id)]

    def preference_of(self, object_id: ObjectId, count: int) -> list[Node]:
        """The owner, then up to ``count - 1`` distinct successors: where the ID may be stored."""
        return [self.nodes[name] for name in self.ring.preference_list(object_id, count)]


@dataclass(frozen=True, slots=True)
class DiscoveryStatus:
    """How discovery is doing, for readiness and metrics."""

    known: bool
    seconds_since_success: float | None
    last_error: str | None
    refreshes: int
    errors: int
    reconnects: int


class Fleet:
    """The known storage nodes, kept current by ``refresh`` (called by the ``FleetWatcher``).

    Requests read the current view without waiting for discovery; only before the first successful
    discovery does a request ask for one itself. A view is replaced whole, so a request sees the old
    or the new membership, never a mix. When discovery fails, the last known view keeps serving.
    """

    def __init__(
        self,
        discovery: NodeDiscovery,
        virtual_nodes: int = DEFAULT_VIRTUAL_NODES,
        clock: Callable[[], float] = time.monotonic,
        first_wait_seconds: float = 5.0,
    ) -> None:
        self._discovery = discovery
        self._virtual_nodes = virtual_nodes
        self._clock = clock
        self._membership: Membership | None = None
        self._first_wait_seconds = first_wait_seconds
        self._refreshing: asyncio.Future[None] | None = None
        self._last_success_at: float | None = None
        self._last_error: DiscoveryUnavailable | None = None
        self._refreshes = 0
        self._errors = 0
        self._reconnects = 0

    @property
    def current(self) -> Membership | None:
        return self._membership

    async def membership(self) -> Membership:
        """The current view; before the first one, wait (at most ``first_wait_seconds``) for it.

        Requests that arrive before any discovery succeeded share one attempt (and the watcher's),
        rather than queueing one each behind a daemon that does not answer.
        """
        if self._membership is not None:
            return self._membership
        attempt = self._attempt()
        try:
            async with asyncio.timeout(self._first_wait_seconds):
                await asyncio.shield(attempt)
        except TimeoutError:
            raise DiscoveryUnavailable(
                f"node discovery did not answer within {self._first_wait_seconds:g} seconds"
            ) from None
        except DiscoveryUnavailable:
            pass  # recorded by the attempt; raised below
        if self._membership is None:
            raise self._last_error or DiscoveryUnavailable("node discovery has not run yet")
        return self._membership

    async def owner_of(self, object_id: ObjectId) -> Node:
        """The node that owns ``object_id``; ``NodeUnavailable`` if it is a member but down."""
        node = (await self.membership()).owner_of(object_id)
        if not node.is_up:
            raise NodeUnavailable(node.name, "the node is not running")
        return node

    async def preference_of(self, object_id: ObjectId, count: int) -> list[Node]:
        """Where ``object_id`` belongs and may have been before membership changed; up or down."""
        return (await self.membership()).preference_of(object_id, count)

    async def refresh(self) -> None:
        """Ask discovery for the members now. A failure is recorded and raised.

        An attempt already under way began before whatever made the caller ask, so it is waited
        out, not joined; concurrent callers then share the next one.
        """
        under_way = self._refreshing
        if under_way is not None and not under_way.done():
            with contextlib.suppress(DiscoveryUnavailable):
                await asyncio.shield(under_way)
        await asyncio.shield(self._attempt())

    def _attempt(self) -> asyncio.Future[None]:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh_now())
            # Nobody may be left awaiting it (every waiter timed out): its error is recorded.
            self._refreshing.add_done_callback(_consume_error)
        return self._refreshing

    async def _refresh_now(self) -> None:
        try:
            nodes = await self._discovery.discover()
        except DiscoveryUnavailable as exc:
            self.record_failure(exc)
            raise
        self._refreshes += 1
        if self._last_error is not None:
            logger.info("node discovery recovered")
        self._last_error = None
        self._last_success_at = self._clock()
        self._membership = self._membership_of(nodes)

    def record_failure(self, error: DiscoveryUnavailable) -> None:
        if error is self._last_error:
            return  # the same failure, reported by the fleet and again by its watcher
        self._errors += 1
        if self._last_error is None or str(error) != str(self._last_error):
            logger.warning("node discovery failed: %s", error.detail)
        self._last_error = error

    def record_reconnect(self) -> None:
        self._reconnects += 1

    def status(self) -> DiscoveryStatus:
        since = None if self._last_success_at is None else self._clock() - self._last_success_at
        return DiscoveryStatus(
            known=self._membership is not None,
            seconds_since_success=since,
            last_error=None if self._last_error is None else self._last_error.detail,
            refreshes=self._refreshes,
            errors=self._errors,
            reconnects=self._reconnects,
        )

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


def _consume_error(attempt: asyncio.Future[None]) -> None:
    if not attempt.cancelled():
        attempt.exception()
