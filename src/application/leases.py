"""Jobs that must not overlap (a rebalance, a repair, a drain) kept apart across every gateway by a
lease whose claims live on the nodes (``domain.leases`` tells how a claim wins without any node
comparing-and-swapping)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from application.fleet import Fleet
from domain.errors import GatewayError, JobInProgress, NoNodesAvailable
from domain.leases import LeaseClaim, holder_of
from domain.node import Node
from domain.ports import Leases
from domain.versions import VersionClock

__all__ = ["JobLease"]

logger = logging.getLogger(__name__)


class JobLease:
    def __init__(
        self,
        fleet: Fleet,
        leases: Leases,
        clock: VersionClock,
        *,
        name: str = "admin",
        ttl_seconds: float = 30.0,
        settle_seconds: float = 1.0,
        wall_clock: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._fleet = fleet
        self._leases = leases
        self._clock = clock
        self._name = name
        self._ttl_ns = int(ttl_seconds * 1e9)
        self._settle_seconds = settle_seconds
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._sleep = sleep

    @contextlib.asynccontextmanager
    async def held(self, job: str) -> AsyncIterator[None]:
        """Hold the lease while the block runs; ``JobInProgress`` when another holds it."""
        membership = await self._fleet.membership()
        # A majority of the members: any two majorities share a node, on which the later claimant
        # finds the earlier one's claim.
        majority = len(membership.nodes) // 2 + 1
        nodes = [node for node in membership.nodes.values() if node.is_up]
        claim = LeaseClaim(self._clock.next(), self._wall_clock() + self._ttl_ns)
        asked = self._monotonic()
        written = await self._write(nodes, claim)
        try:
            if len(written) < majority:
                raise NoNodesAvailable(
                    f"{len(written)} of the {len(membership.nodes)} nodes took the job's claim, "
                    f"and a majority ({majority}) must"
                )
            if self._monotonic() - asked > self._settle_seconds / 2:
                # A claim this slow could appear after a rival's look, older than the rival's.
                raise JobInProgress("the claim on the job's lease took too long to write; retry")
            await self._sleep(self._settle_seconds)
            claims: list[LeaseClaim] = []
            answered = 0
            for node in nodes:
                with contextlib.suppress(GatewayError):
                    claims += await self._leases.claims(node, self._name)
                    answered += 1
            if answered < majority:
                raise NoNodesAvailable(
                    f"{answered} of the {len(membership.nodes)} nodes answered for the job's "
                    f"lease, and a majority ({majority}) must"
                )
            holder = holder_of(claims, self._wall_clock())
            if holder is None or holder.version != claim.version:
                since = "" if holder is None else f" (since {holder.version})"
                raise JobInProgress(f"another rebalance or drain is running{since}; {job} waits")
            renewing = asyncio.create_task(self._renew(written, claim))
            try:
                yield
            finally:
                renewing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewing
        finally:
            await asyncio.shield(self._drop(written, claim))

    async def _write(self, nodes: list[Node], claim: LeaseClaim) -> list[Node]:
        async def write(node: Node) -> Node | None:
            try:
                await self._leases.claim(node, self._name, claim)
            except GatewayError as exc:
                logger.info("claiming the lease on %s: %s", node.name, exc.detail)
                return None
            return node

        return [node for node in await asyncio.gather(*(write(n) for n in nodes)) if node]

    async def _renew(self, nodes: list[Node], claim: LeaseClaim) -> None:
        while True:
            await self._sleep(self._ttl_ns / 3e9)
            renewed = LeaseClaim(claim.version, self._wall_clock() + self._ttl_ns)
            await self._write(nodes, renewed)

    async def _drop(self, nodes: list[Node], claim: LeaseClaim) -> None:
        for node in nodes:
            with contextlib.suppress(GatewayError):
                await self._leases.drop(node, self._name, claim)
