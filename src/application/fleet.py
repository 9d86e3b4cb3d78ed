"""The fleet as this gateway knows it: members from discovery, marks from the nodes themselves.

Discovery says which nodes exist and where; each node's own marks say whether it is being drained
(and whether it still holds objects under the old layout). Both are read again and again; a view
is replaced whole, and a view read earlier never replaces one read later.

A drain must never declare a node empty while a write there may still be acknowledged, whichever
gateway took it and however slowly its body came. So a version a node committed counts as placed
there only if a read of the node's marks, sent at most ``ack_window_seconds`` before the node
answered the write, found no drain mark (``confirm_placed``); a drain waits that long after marking
before its last look at the node. Otherwise the version must be put elsewhere before the write is
acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from application.membership import Membership
from domain.errors import DiscoveryUnavailable, GatewayError, NodeUnavailable
from domain.hash_ring import DEFAULT_VIRTUAL_NODES, HashRing
from domain.node import DrainState, Node, NodeMarks, NodeState
from domain.object_id import ObjectId
from domain.ports import NodeDiscovery, NodeMarking

__all__ = ["DiscoveryStatus", "Fleet", "Membership"]

logger = logging.getLogger(__name__)


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
        marks: NodeMarking,
        *,
        virtual_nodes: int = DEFAULT_VIRTUAL_NODES,
        clock: Callable[[], float] = time.monotonic,
        first_wait_seconds: float = 5.0,
        marks_wait_seconds: float = 2.0,
        ack_window_seconds: float = 10.0,
        on_answer: Callable[[str], None] | None = None,
    ) -> None:
        self._discovery = discovery
        self._marks = marks
        # Told of each member that answered the periodic probe of its drain mark: a node that
        # answers is reachable, so its breaker may close without waiting for a client's request
        # (with replicas, a resting node gets none: reads and writes pass it over).
        self._on_answer = on_answer
        self._marks_wait_seconds = marks_wait_seconds
        self.ack_window_seconds = ack_window_seconds
        self._virtual_nodes = virtual_nodes
        # Each node's latest answered marks, and when that read was sent (this clock).
        self._seen: dict[str, tuple[float, NodeMarks]] = {}
        # Views are numbered as they start to be read; one read earlier never replaces a later.
        self._views_started = 0
        self._view_applied = 0
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
        self._views_started += 1
        view = self._views_started
        drains, migrated, answered = await self._marks_among(nodes)
        if view < self._view_applied:
            return  # a view read after this one is in place already
        self._view_applied = view
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
            and migrated == current.migrated
            and dict(current.nodes) == {node.name: node for node in members}
        ):
            return
        self._membership = self._membership_of(members, drains, migrated)

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

    async def _marks_among(
        self, nodes: Sequence[Node]
    ) -> tuple[dict[str, DrainState], frozenset[str], set[str]]:
        """The nodes marked to be drained and how far, the nodes known to hold nothing under the
        old layout, and the nodes that answered. A node that cannot be asked keeps what it was
        known to be (nothing, for a node not seen before): a node down takes no writes, and a
        write on a node whose marks cannot be read is not acknowledged (``confirm_placed``)."""
        current = self._membership
        known = _drains_of(current) if current is not None else {}
        answered: set[str] = set()

        async def marks_of(node: Node) -> NodeMarks | None:
            if not node.is_up:
                return None
            marks = await self._read_marks(node)
            if marks is None:
                return None
            answered.add(node.name)
            if self._on_answer is not None:
                self._on_answer(node.name)
            return marks

        found = await asyncio.gather(*(marks_of(node) for node in nodes))
        drains: dict[str, DrainState] = {}
        migrated: set[str] = set()
        for node, marks in zip(nodes, found, strict=True):
            if marks is None:
                if node.name in known:
                    drains[node.name] = known[node.name]
                if current is not None and node.name in current.migrated:
                    migrated.add(node.name)
                continue
            if marks.drain is not None:
                drains[node.name] = marks.drain
            if marks.migrated:
                migrated.add(node.name)
        return drains, frozenset(migrated), answered

    async def _read_marks(self, node: Node) -> NodeMarks | None:
        """The node's marks now (None: it did not answer in time), remembered with when the
        request was sent."""
        sent = self._clock()
        try:
            async with asyncio.timeout(self._marks_wait_seconds):
                marks = await self._marks.marks(node)
        except (GatewayError, TimeoutError):
            return None
        seen = self._seen.get(node.name)
        if seen is None or seen[0] <= sent:
            self._seen[node.name] = (sent, marks)
        return marks

    async def confirm_placed(self, node: Node, answered_at: float) -> bool:
        """Whether a version ``node`` committed (its answer came at ``answered_at``, this clock)
        stays there safely: a read of its marks sent at most ``ack_window_seconds`` before found
        no drain mark (a drain waits that long after marking before its last look, so the
        version is either seen and moved, or marked first). False when the node is marked: the
        version must be put elsewhere. ``NodeUnavailable`` when its marks cannot be read."""
        seen = self._seen.get(node.name)
        if seen is not None and seen[1].drain is not None:
            return False
        if seen is not None and answered_at - seen[0] <= self.ack_window_seconds:
            return True
        marks = await self._read_marks(node)
        if marks is None:
            raise NodeUnavailable(
                node.name, "its drain mark cannot be read, so a write there cannot be confirmed"
            )
        return marks.drain is None

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

    def _membership_of(
        self,
        nodes: Sequence[Node],
        drains: Mapping[str, DrainState],
        migrated: frozenset[str] = frozenset(),
    ) -> Membership:
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
            nodes=by_name,
            ring=ring,
            write_ring=write_ring,
            draining=draining,
            drained=drained,
            migrated=migrated & frozenset(by_name),
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
