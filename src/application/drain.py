"""Emptying a node so that it can be removed without losing anything, under load.

The intent is recorded on the node itself (``DrainMarks``), where every gateway reads it every
few seconds: each then places new writes as if the node were gone, and still reads from it. Once
every gateway must have seen the mark, rebalance passes move everything off the node by version;
once a listing of the node finds no object left (a write a gateway placed there before it saw the
mark is moved by the next pass), the node is marked drained: gateways stop reading from it too,
and once every gateway must have seen that, the drain says the node is safe to remove.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from application.fleet import Fleet
from application.rebalance import Rebalance, RebalanceReporter, RebalanceSummary
from domain.errors import GatewayError, InvalidObjectId, InvalidRequest, NodeUnavailable
from domain.node import DrainState, Node
from domain.object_id import ObjectId
from domain.ports import DrainMarks, ObjectStorage

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
        marks: DrainMarks,
        storage: ObjectStorage,
        rebalance: Callable[..., Rebalance],
        *,
        propagation_seconds: float,
        max_passes: int = 10,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._fleet = fleet
        self._marks = marks
        self._storage = storage
        self._rebalance = rebalance
        self._propagation_seconds = propagation_seconds
        self._max_passes = max_passes
        self._sleep = sleep

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
            await self._mark(node, DrainState.DRAINING, reporter)
        for done in range(1, self._max_passes + 1):
            membership = await self._fleet.membership()
            if node_name in writable - membership.draining - membership.drained:
                raise InvalidRequest(f"{node_name} is no longer marked to be drained")
            summary: RebalanceSummary = await self._rebalance(membership=membership).execute(
                reporter
            )
            left = await self._objects_on(membership.nodes[node_name])
            reporter.remaining(node_name, left, done)
            if left == 0 and summary.failed == 0:
                # Empty: the gateways may stop asking it for reads too, and then it can go
                # without a single request meeting it down.
                await self._mark(node, DrainState.DRAINED, reporter)
                return True
        return False

    async def _mark(self, node: Node, state: DrainState, reporter: DrainReporter) -> None:
        note = f"{state.value} from {socket.gethostname()} at {time.time():.0f}"
        await self._marks.mark(node, state, note)
        await self._fleet.refresh_drain_marks()
        reporter.marked(node.name, state.value)
        reporter.waiting(self._propagation_seconds)
        await self._sleep(self._propagation_seconds)

    async def undrain(self, node_name: str) -> None:
        await self._marks.unmark(await self._member(node_name))
        await self._fleet.refresh_drain_marks()

    async def _member(self, node_name: str) -> Node:
        membership = await self._fleet.membership()
        node = membership.nodes.get(node_name)
        if node is None:
            raise InvalidRequest(
                f"{node_name} is not a member (members: {', '.join(sorted(membership.nodes))})"
            )
        return node

    async def _objects_on(self, node: Node) -> int:
        held = 0
        try:
            async for listed in self._storage.list_objects(node):
                try:
                    ObjectId(listed.name)
                except InvalidObjectId:
                    continue  # the drain mark, or someone else's key
                held += 1
        except GatewayError:
            return -1
        return held
