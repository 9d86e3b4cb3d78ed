from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from domain.errors import DiscoveryUnavailable, GatewayError, NodeUnavailable, NoNodesAvailable
from domain.hash_ring import DEFAULT_VIRTUAL_NODES, HashRing
from domain.node import DrainState, Node, NodeState
from domain.object_id import ObjectId
from domain.ports import DrainMarks, NodeDiscovery

__all__ = ["DiscoveryStatus", "Fleet", "Membership"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Membership:
    """One consistent view of the fleet: the nodes by name, which of them are draining or drained,
    and the rings built from those names.

    ``ring`` places IDs on every member but the drained ones (which hold nothing): where an ID may
    sit. ``write_ring`` leaves the draining nodes out too: where writes go, so that a draining
    node takes no new object.
    """

    nodes: Mapping[str, Node]
    ring: HashRing
    write_ring: HashRing
    draining: frozenset[str] = frozenset()
    drained: frozenset[str] = frozenset()

    def owner_of(self, object_id: ObjectId) -> Node:
        """The node that takes the ID's writes, and answers for it first."""
        if not self.write_ring.node_names and self.ring.node_names:
            raise NoNodesAvailable("every storage node is draining")
        return self.nodes[self.write_ring.owner(object_id)]

    def write_walk(self, object_id: ObjectId, count: int) -> list[Node]:
        """The first ``count`` distinct nodes of the ID's walk on the write ring: its replicas,
        then the nodes a write hands off to when one of them cannot take it."""
        return [self.nodes[name] for name in self.write_ring.preference_list(object_id, count)]

    def preference_of(self, object_id: ObjectId, count: int) -> list[Node]:
        """Where the ID may be stored: its owner, then up to ``count - 1`` distinct successors on
        the write ring, then any node of the first ``count`` on the whole ring not yet named (a
        draining node holds what it was written before its drain)."""
        names = self.write_ring.preference_list(object_id, count)
        if self.draining:
            names += [
                name for name in self.ring.preference_list(object_id, count) if name not in names
            ]
        return [self.nodes[name] for name in names]


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
        marks: DrainMarks,
        *,
        virtual_nodes: int = DEFAULT_VIRTUAL_NODES,
        clock: Callable[[], float] = time.monotonic,
        first_wait_seconds: float = 5.0,
        marks_wait_seconds: float = 2.0,
        on_answer: Callable[[str], None] | None = None,
    ) -> None:
        self._discovery = discovery
        self._marks = marks
        # Told of each member that answered the periodic probe of its drain mark: a node that
        # answers is reachable, so its breaker may close without waiting for a client's request
        # (with replicas, a resting node gets none: reads and writes pass it over).
        self._on_answer = on_answer
        self._marks_wait_seconds = marks_wait_seconds
        self._virtual_nodes = virtual_nodes
        self._clock = clock
        self._membership: Membership | None = None
        # What discovery found last; the names let into the fleet; newcomers not answering yet.
        self._discovered: list[Node] = []
        self._admitted: set[str] = set()
        self._waiting: set[str] = set()
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
        self._discovered = list(nodes)
        await self._admit(nodes)

    async def refresh_drain_marks(self) -> None:
        """Read the nodes' drain marks again (drains are marked on the nodes, which discovery does
        not report), and let in a newcomer that has begun to answer."""
        if self._membership is None:
            return
        await self._admit(self._discovered)

    async def _admit(self, nodes: Sequence[Node]) -> None:
        """The membership of ``nodes``: each with its drain mark; a node that joined the fleet
        since the first discovery only once it answers.

        A container runs a moment before its server answers (MinIO takes a second or two): in the
        ring before that, a newcomer's IDs would answer 503 although their objects still sit, and
        serve, where they were. A member that restarts is another matter: it holds its IDs'
        objects, so it stays on the ring, down, until it answers (``_until_it_answers``).
        """
        drains, answered = await self._drains_among(nodes)
        if self._membership is None:
            self._admitted.update(node.name for node in nodes)
        for node in nodes:
            if node.name not in self._admitted:
                if node.name in answered:
                    self._admitted.add(node.name)
                    logger.info("%s answers: it joins the fleet", node.name)
                elif node.name not in self._waiting:
                    self._waiting.add(node.name)
                    logger.info("%s joins the fleet once it answers", node.name)
        current = self._membership
        members = [
            self._until_it_answers(node, current, answered)
            for node in nodes
            if node.name in self._admitted
        ]
        self._waiting &= {node.name for node in nodes} - self._admitted
        if (
            current is not None
            and drains == _drains_of(current)
            and dict(current.nodes) == {node.name: node for node in members}
        ):
            return
        self._membership = self._membership_of(members, drains)

    @staticmethod
    def _until_it_answers(node: Node, current: Membership | None, answered: set[str]) -> Node:
        """A member back up (restarted, or replaced at a new address) counts as down until its
        server answers: asked before, it would refuse the connection, and a write with replicas
        to spare would wait for it instead of handing off. One that was up and whose probe
        failed (a busy node) is left up: its requests find out."""
        before = None if current is None else current.nodes.get(node.name)
        if (
            node.is_up
            and node.name not in answered
            and before is not None
            and (not before.is_up or before.endpoint != node.endpoint)
        ):
            return dataclasses.replace(node, state=NodeState.DOWN)
        return node

    async def _drains_among(self, nodes: Sequence[Node]) -> tuple[dict[str, DrainState], set[str]]:
        """The nodes marked to be drained and how far, and the nodes that answered. A node that
        cannot be asked keeps what it was known to be (nothing, for a node not seen before): a
        node down takes no writes."""
        known = _drains_of(self._membership) if self._membership is not None else {}
        answered: set[str] = set()

        async def mark_of(node: Node) -> DrainState | None:
            if not node.is_up:
                return known.get(node.name)
            try:
                async with asyncio.timeout(self._marks_wait_seconds):
                    state = await self._marks.drain_state(node)
            except (GatewayError, TimeoutError):
                return known.get(node.name)
            answered.add(node.name)
            if self._on_answer is not None:
                self._on_answer(node.name)
            return state

        states = await asyncio.gather(*(mark_of(node) for node in nodes))
        drains = {node.name: state for node, state in zip(nodes, states, strict=True) if state}
        return drains, answered

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

    def _membership_of(self, nodes: Sequence[Node], drains: Mapping[str, DrainState]) -> Membership:
        by_name = {node.name: node for node in nodes}
        draining = frozenset(n for n, s in drains.items() if s is DrainState.DRAINING)
        drained = frozenset(n for n, s in drains.items() if s is DrainState.DRAINED)
        previous = self._membership
        if previous is None or frozenset(previous.nodes) != frozenset(by_name):
            logger.info("storage fleet is now %s", sorted(by_name) or "empty")
        if previous is None or _drains_of(previous) != dict(drains):
            for name, state in sorted(drains.items()):
                logger.info("%s is %s", name, state.value)
        # The rings depend only on the names: they are rebuilt only when membership (or a drain)
        # changed, so a node going down or changing address swaps one immutable view for another
        # and moves no ID.
        reusable = [] if previous is None else [previous.ring, previous.write_ring]
        ring = self._ring_of(frozenset(by_name) - drained, reusable)
        write_ring = self._ring_of(ring.node_names - draining, [ring, *reusable])
        return Membership(
            nodes=by_name, ring=ring, write_ring=write_ring, draining=draining, drained=drained
        )

    def _ring_of(self, names: frozenset[str], reusable: list[HashRing]) -> HashRing:
        for ring in reusable:
            if ring.node_names == names:
                return ring
        return HashRing(names, self._virtual_nodes)


def _drains_of(membership: Membership) -> dict[str, DrainState]:
    return {
        **dict.fromkeys(membership.draining, DrainState.DRAINING),
        **dict.fromkeys(membership.drained, DrainState.DRAINED),
    }


def _consume_error(attempt: asyncio.Future[None]) -> None:
    if not attempt.cancelled():
        attempt.exception()
