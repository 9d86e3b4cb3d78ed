"""Read repair: when the replicas a read asked disagree, the newest version is written over the
stale ones, in the background, so that a replica that missed writes catches up on the next read."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from application.copies import copy_version, head_or_none
from application.node_access import NodeAccess
from application.write_locks import WriteLocks
from domain.errors import GatewayError
from domain.node import Node
from domain.object_id import ObjectId
from domain.objects import ObjectInfo
from domain.ports import ObjectStorage

__all__ = ["ReadRepair", "RepairCounts"]

logger = logging.getLogger(__name__)


@dataclass
class RepairCounts:
    scheduled: int = 0
    repaired: int = 0
    failed: int = 0
    # Not scheduled: too many already waiting (the repair command catches them).
    dropped: int = 0


class ReadRepair:
    """At most ``concurrency`` repairs run at once and ``backlog`` wait; more are dropped. Each
    takes its ID's turn among this gateway's writes, and writes over a replica only what is still
    older than the newest version (a conditional copy, as a rebalance makes)."""

    def __init__(
        self,
        storage: ObjectStorage,
        access: NodeAccess,
        locks: WriteLocks,
        *,
        concurrency: int = 4,
        backlog: int = 256,
    ) -> None:
        self._storage = storage
        self._access = access
        self._locks = locks
        self._slots = asyncio.Semaphore(concurrency)
        self._backlog = backlog
        self._pending: dict[str, asyncio.Task[None]] = {}
        self.counts = RepairCounts()

    def schedule(
        self, object_id: ObjectId, source: Node, newest: ObjectInfo, stale: list[Node]
    ) -> None:
        if not stale or object_id.value in self._pending:
            return
        if len(self._pending) >= self._backlog:
            self.counts.dropped += 1
            return
        self.counts.scheduled += 1
        task = asyncio.create_task(self._repair(object_id, source, newest, stale))
        self._pending[object_id.value] = task
        task.add_done_callback(lambda _: self._pending.pop(object_id.value, None))

    async def aclose(self) -> None:
        for task in list(self._pending.values()):
            task.cancel()
        await asyncio.gather(*self._pending.values(), return_exceptions=True)

    async def _repair(
        self, object_id: ObjectId, source: Node, newest: ObjectInfo, stale: list[Node]
    ) -> None:
        async with self._slots, self._locks.held(object_id.value):
            for target in stale:
                try:
                    now = await head_or_none(self._storage, self._access, target, object_id)
                    if now is not None and now.rank >= newest.rank:
                        continue
                    await copy_version(
                        self._storage, self._access, source, target, object_id, newest, now
                    )
                except GatewayError as exc:
                    self.counts.failed += 1
                    logger.info("read repair of %s on %s: %s", object_id, target.name, exc.detail)
                else:
                    self.counts.repaired += 1
