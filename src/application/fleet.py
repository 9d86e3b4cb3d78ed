"""The fleet as this gateway knows it: members from discovery, marks from the nodes themselves.

Discovery says which nodes exist and where; each node's own marks (``MarksView``) say whether it is
being drained, whether it still holds objects under the old layout, and which ring a rebalance last
found every ID placed by. Both are read again and again; a view is replaced whole, and a view read
earlier never replaces one read later.

A drain must never declare a node empty while a write there may still be acknowledged, whichever
gateway took it and however slowly its body came. So a version a node committed counts as placed
there only if a read of the node's marks, sent at most ``ack_window_seconds`` before the node
answered the write, found no drain mark (``confirm_placed``); a drain waits that long after marking
before its last look at the node. Otherwise the version must be put elsewhere before the write is
acknowledged.

The fleet is *settled* when every member is marked with the fingerprint of the ring this gateway
places IDs by: a rebalance found every ID's newest version on its replicas by that ring, and
nothing has changed since. Then a read asks the ID's replicas and no one else. Any change of the
ring (a node joins, leaves, drains, returns) unsettles it: the first gateway to see the change
takes the marks away, and reads look where IDs sat before too, until a rebalance settles it again.
A fleet found wholly empty (a new one) is settled at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from application.marks_view import MarksView
from application.membership import Membership
from domain.errors import DiscoveryUnavailable, NodeUnavailable
from domain.hash_ring import DEFAULT_VIRTUAL_NODES, HashRing, ring_fingerprint
from domain.node import DrainState, Node, NodeMarks, NodeState
from domain.object_id import ObjectId
from domain.ports import NodeDiscovery, NodeMarking

__all__ = ["DiscoveryStatus", "Fleet", "Membership"]

logger = logging.getLogger(__name__)
# A gateway whose view of the ring differs from a node's mark asks discovery again, at most this
# often (its view may be the stale one).
_CATCH_UP_SECONDS = 1.0


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
        replicas: int = 1,
        on_answer: Callable[[str], None] | None = None,
    ) -> None:
        self._discovery = discovery
        self.marks = MarksView(
            marks, clock=clock, wait_seconds=marks_wait_seconds, on_answer=on_answer
        )
        self.ack_window_seconds = ack_window_seconds
        self._replicas = replicas
        self._virtual_nodes = virtual_nodes
        self._last_catch_up = -_CATCH_UP_SECONDS
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
        await self._admit(nodes, fresh_discovery=True)

    async def refresh_drain_marks(self) -> None:
        """Read the nodes' drain marks again (drains are marked on the nodes, which discovery does
        not report), and let in a newcomer that has begun to answer."""
        if self._membership is None:
            return
        await self._admit(self._discovered)

    async def _admit(self, nodes: Sequence[Node], *, fresh_discovery: bool = False) -> None:
        """The membership of ``nodes``: each with its drain mark; a node that joined the fleet
        since the first discovery only once it answers.

        A container runs a moment before its server answers (MinIO takes a second or two): in the
        ring before that, a newcomer's IDs would answer 503 although their objects still sit, and
        serve, where they were. A member that restarts is another matter: it holds its IDs'
        objects, so it stays on the ring, down, until it answers (``_until_it_answers``).
        """
        self._views_started += 1
        view = self._views_started
        marks, answered = await self.marks.read_all(nodes)
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
        membership = self._membership_of(members, marks)
        if current is None or not _same(current, membership):
            self._membership = membership
        self.marks.keep_the_ring_honest(
            self._membership or membership,
            marks,
            answered,
            fresh_discovery=fresh_discovery,
            then=self.refresh_drain_marks,
        )

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

    async def confirm_placed(self, node: Node, answered_at: float) -> bool:
        """Whether a version ``node`` committed (its answer came at ``answered_at``, this clock)
        stays there safely: a read of its marks sent at most ``ack_window_seconds`` before found
        no drain mark (a drain waits that long after marking before its last look, so the
        version is either seen and moved, or marked first). False when the node is marked: the
        version must be put elsewhere. ``NodeUnavailable`` when its marks cannot be read.

        A node marked with another ring than this gateway's makes it ask discovery again first:
        its own view may be the stale one (the writer then compares the ID's replicas anew)."""
        seen = self.marks.seen(node.name)
        if seen is None or answered_at - seen[0] > self.ack_window_seconds:
            if await self.marks.read(node) is None:
                raise NodeUnavailable(
                    node.name, "its drain mark cannot be read, so a write there cannot be confirmed"
                )
            seen = self.marks.seen(node.name)
            assert seen is not None
        marks = seen[1]
        current = self._membership
        if marks.ring is not None and current is not None and marks.ring != current.fingerprint:
            await self._catch_up()
        return marks.drain is None

    async def _catch_up(self) -> None:
        """Ask discovery again, at most every ``_CATCH_UP_SECONDS``."""
        now = self._clock()
        if now - self._last_catch_up < _CATCH_UP_SECONDS:
            return
        self._last_catch_up = now
        with contextlib.suppress(DiscoveryUnavailable):
            await self.refresh()

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

    def _membership_of(self, nodes: Sequence[Node], marks: Mapping[str, NodeMarks]) -> Membership:
        by_name = {node.name: node for node in nodes}
        drains = {
            name: mark.drain
            for name, mark in marks.items()
            if name in by_name and mark.drain is not None
        }
        draining = frozenset(n for n, s in drains.items() if s is DrainState.DRAINING)
        drained = frozenset(n for n, s in drains.items() if s is DrainState.DRAINED)
        migrated = frozenset(n for n, mark in marks.items() if n in by_name and mark.migrated)
        previous = self._membership
        if previous is None or frozenset(previous.nodes) != frozenset(by_name):
            logger.info("storage fleet is now %s", sorted(by_name) or "empty")
        if previous is None or _drains_of(previous) != drains:
            for name, state in sorted(drains.items()):
                logger.info("%s is %s", name, state.value)
        # The rings depend only on the names: they are rebuilt only when membership (or a drain)
        # changed, so a node going down or changing address swaps one immutable view for another
        # and moves no ID.
        reusable = [] if previous is None else [previous.ring, previous.write_ring]
        ring = self._ring_of(frozenset(by_name) - drained, reusable)
        write_ring = self._ring_of(ring.node_names - draining, [ring, *reusable])
        fingerprint = ring_fingerprint(write_ring.node_names, self._replicas)
        settled = bool(by_name) and all(
            name in marks and marks[name].settled == fingerprint for name in by_name
        )
        return Membership(
            nodes=by_name,
            ring=ring,
            write_ring=write_ring,
            draining=draining,
            drained=drained,
            migrated=migrated,
            fingerprint=fingerprint,
            settled=settled,
        )

    def _ring_of(self, names: frozenset[str], reusable: list[HashRing]) -> HashRing:
        for ring in reusable:
            if ring.node_names == names:
                return ring
        return HashRing(names, self._virtual_nodes)


def _same(one: Membership, other: Membership) -> bool:
    return (
        dict(one.nodes) == dict(other.nodes)
        and _drains_of(one) == _drains_of(other)
        and one.migrated == other.migrated
        and one.settled == other.settled
    )


def _drains_of(membership: Membership) -> dict[str, DrainState]:
    return {
        **dict.fromkeys(membership.draining, DrainState.DRAINING),
        **dict.fromkeys(membership.drained, DrainState.DRAINED),
    }


def _consume_error(attempt: asyncio.Future[None]) -> None:
    if not attempt.cancelled():
        attempt.exception()
