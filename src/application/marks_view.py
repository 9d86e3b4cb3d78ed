"""What each node's own marks said when this gateway last asked, and when it asked.

Marks live on the nodes (``NodeMarking``): every gateway reads them every few seconds. A read's
sending time matters as much as its answer: a drain, and a rebalance settling the ring, wait
long enough after writing a mark that any write acknowledged on the strength of an older read
has landed where their last look finds it (``Fleet.confirm_placed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from application.membership import Membership
from domain.errors import GatewayError
from domain.node import Node, NodeMarks
from domain.ports import NodeMarking

__all__ = ["MarksView"]

logger = logging.getLogger(__name__)


class MarksView:
    def __init__(
        self,
        marks: NodeMarking,
        *,
        clock: Callable[[], float] = time.monotonic,
        wait_seconds: float = 2.0,
        on_answer: Callable[[str], None] | None = None,
    ) -> None:
        self.marking = marks
        self._clock = clock
        self._wait_seconds = wait_seconds
        # Told of each node that answered: a node that answers is reachable, so its breaker may
        # close without waiting for a client's request (with replicas, a resting node gets none).
        self._on_answer = on_answer
        # Each node's latest answered marks, and when that read was sent (this clock).
        self._seen: dict[str, tuple[float, NodeMarks]] = {}
        self._ring_upkeep: asyncio.Future[None] | None = None

    def seen(self, name: str) -> tuple[float, NodeMarks] | None:
        return self._seen.get(name)

    def forget(self) -> None:
        """As if no read had been answered yet (a test's way to make every look too old)."""
        self._seen.clear()

    async def read(self, node: Node) -> NodeMarks | None:
        """The node's marks now (None: it did not answer in time), remembered with when the
        request was sent."""
        sent = self._clock()
        try:
            async with asyncio.timeout(self._wait_seconds):
                marks = await self.marking.marks(node)
        except (GatewayError, TimeoutError):
            return None
        seen = self._seen.get(node.name)
        if seen is None or seen[0] <= sent:
            self._seen[node.name] = (sent, marks)
        if self._on_answer is not None:
            self._on_answer(node.name)
        return marks

    async def read_all(self, nodes: Sequence[Node]) -> tuple[dict[str, NodeMarks], set[str]]:
        """Every node's marks (asked at once; a node that is down or does not answer keeps what it
        was last seen with, if anything), and the nodes that answered."""

        async def read(node: Node) -> NodeMarks | None:
            return await self.read(node) if node.is_up else None

        found = await asyncio.gather(*(read(node) for node in nodes))
        marks: dict[str, NodeMarks] = {}
        answered: set[str] = set()
        for node, answer in zip(nodes, found, strict=True):
            if answer is not None:
                answered.add(node.name)
                marks[node.name] = answer
            elif (seen := self._seen.get(node.name)) is not None:
                marks[node.name] = seen[1]
        return marks, answered

    def keep_the_ring_honest(
        self,
        membership: Membership,
        marks: Mapping[str, NodeMarks],
        answered: set[str],
        *,
        fresh_discovery: bool,
        then: Callable[[], Awaitable[None]],
    ) -> None:
        """A fleet found wholly empty is settled at once; marks of another ring than the one the
        fleet has now (seen right after asking discovery, so not a stale view) are taken away.
        In the background: neither waits for the nodes."""
        if self._ring_upkeep is not None and not self._ring_upkeep.done():
            return
        members = [node for node in membership.nodes.values() if node.is_up]
        if not members:
            return
        fingerprint = membership.fingerprint
        if (
            not membership.settled
            and all(node.name in answered and marks[node.name].fresh for node in members)
            and len(members) == len(membership.nodes)
        ):
            self._ring_upkeep = asyncio.ensure_future(self._mark_rings(members, fingerprint, then))
        elif fresh_discovery and any(
            (node.name in marks and marks[node.name].ring not in (None, fingerprint))
            for node in membership.nodes.values()
        ):
            logger.info("the fleet changed since it was last settled: reads look further")
            self._ring_upkeep = asyncio.ensure_future(self._unmark_rings(members, then))
        if self._ring_upkeep is not None:
            self._ring_upkeep.add_done_callback(_consume_error)

    async def _mark_rings(
        self, members: list[Node], fingerprint: str, then: Callable[[], Awaitable[None]]
    ) -> None:
        marking = self.marking
        for node in members:
            with contextlib.suppress(GatewayError):
                await marking.mark_ring(node, fingerprint, settled=True)
        logger.info("a new, empty fleet: settled as it is")
        await then()

    async def _unmark_rings(self, members: list[Node], then: Callable[[], Awaitable[None]]) -> None:
        marking = self.marking
        for node in members:
            with contextlib.suppress(GatewayError):
                await marking.unmark_ring(node)
        await then()


def _consume_error(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()
