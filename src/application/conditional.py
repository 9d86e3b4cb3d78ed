"""Conditional writes (If-Match, If-None-Match, If-Unmodified-Since on PUT) with no lock held at
anyone's pace, in any gateway, and no condition asked of a node (which some ignore).

The conditions are evaluated on the ID's current version before a byte of the body is taken. The
body is then written as a pending version: a record no read serves and no copy counts as newer
than anything. Once W replicas hold it, they are asked again: if a version newer than the one the
conditions held for has appeared meanwhile (a write, a delete, another conditional write's pending
version) the conditions may no longer hold, so the pending version is removed and the answer is
412. Otherwise each replica that holds it makes it data, copying it to itself (no byte passes
through the gateway again), and the write is acknowledged.

Of two conditional writes on one base, at most one succeeds: whichever looks second finds the
other's version. Both may fail (each found the other), which is safe: each client retries or gives
up. A plain write racing with a conditional one is ordered by the versions, as any two writes are.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from application.reads import VersionReads
from application.writes import Placed, VersionWrites, Written
from domain.conditions import Preconditions, Verdict
from domain.errors import GatewayError, PreconditionFailed, QuorumUnavailable
from domain.node import Node
from domain.object_id import ObjectId
from domain.objects import (
    PENDING_ABANDONED_SECONDS,
    ObjectInfo,
    StoredVersion,
    VersionKind,
    abandoned,
    moment_of,
)
from domain.versions import Version

__all__ = ["ConditionalCounts", "ConditionalWrites"]

# How long an answer waits for its pending records to be removed; slower removals go on alone.
_CLEAR_WAIT_SECONDS = 1.0
_LEFT_RUNNING: set[asyncio.Future[None]] = set()


@dataclass
class ConditionalCounts:
    # Conditional writes refused because another write to the ID came while they were decided.
    conflicts: int = 0


class ConditionalWrites:
    def __init__(
        self,
        reads: VersionReads,
        writes: VersionWrites,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._reads = reads
        self._writes = writes
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self.counts = ConditionalCounts()

    async def put(
        self,
        object_id: ObjectId,
        body: AsyncIterator[bytes],
        length: int | None,
        content_type: str,
        preconditions: Preconditions,
    ) -> Written:
        before = await self._reads.current(object_id)
        live = before.live
        present = None if live is None else _served(live, content_type)
        if preconditions.evaluate(present, reading=False) is not Verdict.PROCEED:
            raise PreconditionFailed("the object stored under this ID does not meet the conditions")
        base = None if before.newest is None else before.newest.version
        pending = await self._writes.write(
            object_id, body, length, content_type, kind=VersionKind.PENDING
        )
        version = pending.stored.version
        try:
            decided = self._monotonic()
            if await self._rivals(object_id, base, version, preconditions, content_type):
                self.counts.conflicts += 1
                raise PreconditionFailed(
                    "another write to this ID came while this one's conditions were checked"
                )
            if self._monotonic() - decided > PENDING_ABANDONED_SECONDS / 5:
                # Frozen between the look and the promotion: a rival may since have taken this
                # pending version for abandoned.
                raise QuorumUnavailable("the conditional write took too long to be decided")
            promoted, placed = await self._promote(object_id, pending.placed)
            # Data now: it must stay where a plain write's version may (a replica, not a node
            # marked to be drained meanwhile), and W replicas must hold it, as for any write.
            replicas, on_replicas = await self._writes.placement.settle(
                object_id, pending.replicas, promoted, placed
            )
        finally:
            await self._clear(object_id, pending.placed)
        need = self._writes.placement.need(replicas)
        if len(on_replicas) < need:
            raise QuorumUnavailable(
                f"{len(on_replicas)} of this ID's replicas hold the write as data, and {need} must"
            )
        self._reads.upkeep.after_write(
            object_id, [node for node, _ in on_replicas], pending.before, version
        )
        node, stored = on_replicas[0]
        return Written(
            stored,
            node,
            on_replicas,
            created=live is None,
            replicas=replicas,
            before=before,
            quorum=need,
        )

    async def _rivals(
        self,
        object_id: ObjectId,
        base: Version | None,
        version: Version,
        preconditions: Preconditions,
        content_type: str,
    ) -> bool:
        """Whether the replicas now hold a version newer than ``base``, other than ``version``,
        that the conditions would not have held for: another pending write (still being
        decided), or a committed version they fail on (a delete under If-Match, a write under
        If-None-Match; a delete leaves an If-None-Match write free to go)."""
        found = await self._reads.current(object_id, repair=False)
        wall = self._wall_clock()
        for holding in found.holdings:
            for stored in holding.versions:
                if stored.version == version or (base is not None and stored.version <= base):
                    continue
                if not stored.committed:
                    if not abandoned(stored, wall):
                        return True
                    continue
                state = None if stored.deleted else _served(stored, content_type)
                if preconditions.evaluate(state, reading=False) is not Verdict.PROCEED:
                    return True
        return False

    async def _promote(
        self, object_id: ObjectId, placed: list[Placed]
    ) -> tuple[list[Placed], list[Placed]]:
        """The pending version made data on every node that holds it: where it became data, and
        where it may stay there (its node not marked to be drained, by a fresh enough look)."""
        reads = self._reads

        async def promote(node_and_pending: Placed) -> tuple[Placed, bool] | None:
            node, stored = node_and_pending
            try:
                promoted = await reads.access.call(
                    node, lambda: reads.storage.promote(node, object_id, stored)
                )
                stays = await reads.fleet.confirm_placed(node, self._monotonic())
            except GatewayError:
                return None
            return (node, promoted), stays

        done = [one for one in await asyncio.gather(*(promote(p) for p in placed)) if one]
        return [one for one, _ in done], [one for one, stays in done if stays]

    async def _clear(self, object_id: ObjectId, placed: list[Placed]) -> None:
        """The pending records are of no use once decided, either way: removed before the answer
        (once more on a failure), so that none is left to look like a rival to the next
        conditional write; one still left is removed later."""
        upkeep = self._reads.upkeep

        async def clear(node: Node, stored: StoredVersion) -> None:
            pending = StoredVersion(stored.version, VersionKind.PENDING, stored.size, stored.etag)
            for attempt in range(2):
                try:
                    await upkeep.remove(object_id, node, [pending])
                except GatewayError:
                    if attempt:
                        upkeep.remove_later(object_id, node, [pending])
                else:
                    return

        clearing = [asyncio.ensure_future(clear(node, stored)) for node, stored in placed]
        if clearing:
            # A node slow to answer does not hold the answer up: its removal goes on alone.
            _, slow = await asyncio.wait(clearing, timeout=_CLEAR_WAIT_SECONDS)
            for task in slow:
                _LEFT_RUNNING.add(task)
                task.add_done_callback(_LEFT_RUNNING.discard)


def _served(stored: StoredVersion, content_type: str) -> ObjectInfo:
    """What conditions are evaluated on: the version's entity tag and date."""
    return ObjectInfo(stored.size, content_type, stored.etag, moment_of(stored.version))
