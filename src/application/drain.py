"""Emptying a node so that it can be removed without losing anything, under load, whichever
gateways take writes meanwhile.

The intent is recorded on the node itself (``NodeMarking``), where every gateway reads it every
few seconds: each then places new writes as if the node were gone, and still reads from it. Once
every gateway must have seen the mark, rebalance passes move everything off the node by version.
A write placed on the node before its gateway saw the mark may still be coming (a slow client's
upload): it is acknowledged only if a read of the node's marks sent at most the ack window before
it landed found none (``Fleet.confirm_placed``), else it is copied elsewhere first. So the drain's
last look at the node waits until the ack window has passed since the mark: a listing then finds
every version that any gateway acknowledged there. Once one finds none, the node is marked
drained: gateways stop reading from it too, and once every gateway must have seen that, the drain
says the node is safe to remove.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from application.fleet import Fleet
from application.membership import Membership
from application.rebalance import Rebalance, RebalanceReporter, RebalanceSummary
from domain.errors import GatewayError, InvalidRequest, NodeUnavailable
from domain.node import DrainState, Node
from domain.ports import NodeMarking, ObjectStorage

__all__ = ["Drain", "DrainReporter"]


class DrainReporter(RebalanceReporter, Protocol):
    def marked(self, node: str, state: str) -> None: ...

    def waiting(self, seconds: float) -> None:
        """For every gateway to have seen the mark."""
        ...

    def remaining(self, node: str, objects: int, passes: int) -> None:
        """After a pass: what the node still holds."""
        ...


class Drain:
    def __init__(
        self,
        fleet: Fleet,
        marks: NodeMarking,
        storage: ObjectStorage,
        rebalance: Callable[..., Rebalance],
        *,
        propagation_seconds: float,
        max_passes: int = 10,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fleet = fleet
        self._marks = marks
        self._storage = storage
        self._rebalance = rebalance
        self._propagation_seconds = propagation_seconds
        self._max_passes = max_passes
        self._sleep = sleep
        self._monotonic = monotonic

    async def drain(self, node_name: str, reporter: DrainReporter) -> bool:
        """True once the node holds nothing and every gateway has stopped asking it anything;
        False when the passes ran out with objects left on it."""
        node = await self._member(node_name)
        membership = await self._fleet.membership()
        writable = set(membership.nodes) - membership.draining - membership.drained
        if not writable - {node_name}:
            raise InvalidRequest("cannot drain every node: nothing would be left to write to")
        if not node.is_up:
            raise NodeUnavailable(node.name, "a node that is not running cannot be drained")
        if node_name in writable:
            await self._marks.mark(node, DrainState.DRAINING, self._note(DrainState.DRAINING))
            # The ring changes: the fleet is no longer settled (reads look further meanwhile).
            await self._unsettle(membership)
        # Marked by now (by this run or an earlier one): the ack window counts from here.
        marked_at = self._monotonic()
        await self._propagate(node, DrainState.DRAINING, reporter)
        for done in range(1, self._max_passes + 1):
            membership = await self._fleet.membership()
            if node_name in writable - membership.draining - membership.drained:
                raise InvalidRequest(f"{node_name} is no longer marked to be drained")
            summary: RebalanceSummary = await self._rebalance().execute(reporter)
            # The last look only once every write placed there before the mark was seen has
            # been acknowledged (and is listed) or refused.
            wait = marked_at + self._fleet.ack_window_seconds + 1 - self._monotonic()
            if wait > 0:
                reporter.waiting(wait)
                await self._sleep(wait)
            left = await self._objects_on(membership.nodes[node_name], membership)
            reporter.remaining(node_name, left, done)
            if left == 0 and summary.failed == 0:
                # Empty: the gateways may stop asking it for reads too, and then it can go
                # without a single request meeting it down.
                await self._marks.mark(node, DrainState.DRAINED, self._note(DrainState.DRAINED))
                await self._propagate(node, DrainState.DRAINED, reporter)
                await self._rebalance().settle_ring(reporter)
                return True
        return False

    @staticmethod
    def _note(state: DrainState) -> str:
        return f"{state.value} from {socket.gethostname()} at {time.time():.0f}"

    async def _propagate(self, node: Node, state: DrainState, reporter: DrainReporter) -> None:
        """Until every gateway must have read the mark."""
        await self._fleet.refresh_drain_marks()
        reporter.marked(node.name, state.value)
        reporter.waiting(self._propagation_seconds)
        await self._sleep(self._propagation_seconds)

    async def undrain(self, node_name: str) -> None:
        await self._marks.unmark(await self._member(node_name))
        # The ring changes back, but what was written meanwhile sits elsewhere until a rebalance.
        await self._unsettle(await self._fleet.membership())
        await self._fleet.refresh_drain_marks()

    async def _unsettle(self, membership: Membership) -> None:
        for member in membership.nodes.values():
            if member.is_up:
                with contextlib.suppress(GatewayError):
                    await self._marks.unmark_ring(member)

    async def _member(self, node_name: str) -> Node:
        membership = await self._fleet.membership()
        node = membership.nodes.get(node_name)
        if node is None:
            raise InvalidRequest(
                f"{node_name} is not a member (members: {', '.join(sorted(membership.nodes))})"
            )
        return node

    async def _objects_on(self, node: Node, membership: Membership) -> int:
        """Versions the node still holds (pending writes aside: one decided there is copied
        elsewhere before it is acknowledged); -1 when it cannot be listed."""
        held = 0
        walk = self._storage.walk(node, legacy=membership.holds_legacy(node))
        try:
            async for _, stored in walk:
                if stored.committed:
                    held += 1
        except GatewayError:
            return -1
        finally:
            await walk.aclose()  # type: ignore[attr-defined]
        return held
