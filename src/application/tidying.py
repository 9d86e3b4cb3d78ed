"""Removing versions a newer one made useless, in the background, node by node, many at a time.

Every overwrite leaves the version it replaced to remove: one request per version would make an
overwrite cost a third more node requests than a new write. Removals wait per node instead, and one
task per node takes whatever has gathered while its last request was out (up to the node's limit
per request): under load a request removes many, and alone a removal goes out at once.

Always safe: a version is only ever given here once a newer one is committed on that very node
(or, for a pending write, once no gateway may decide it any more).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from functools import partial

from application.background import BackgroundCounts
from application.node_access import NodeAccess
from domain.errors import GatewayError
from domain.node import Node
from domain.object_id import ObjectId
from domain.objects import StoredVersion, VersionKind
from domain.ports import ObjectStorage
from domain.versions import Version

__all__ = ["Tidying"]

logger = logging.getLogger(__name__)

# What one request removes at most (S3's DeleteObjects takes 1000 keys).
DEFAULT_BATCH = 1000
# Removals waiting, over every node; beyond it they are dropped (``repair`` finds them).
DEFAULT_BACKLOG = 20_000

_Removal = tuple[ObjectId, StoredVersion]


@dataclass
class _NodeQueue:
    node: Node
    waiting: dict[tuple[str, Version, VersionKind, bool], _Removal] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None


class Tidying:
    """Counts are of versions: scheduled, removed (``done``), failed, dropped."""

    def __init__(
        self,
        storage: ObjectStorage,
        access: NodeAccess,
        *,
        batch: int = DEFAULT_BATCH,
        backlog: int = DEFAULT_BACKLOG,
    ) -> None:
        self._storage = storage
        self._access = access
        self._batch = batch
        self._backlog = backlog
        self._queues: dict[str, _NodeQueue] = {}
        self._waiting = 0
        self.counts = BackgroundCounts()

    def submit(self, object_id: ObjectId, node: Node, versions: list[StoredVersion]) -> None:
        queue = self._queues.get(node.name)
        if queue is None:
            queue = self._queues[node.name] = _NodeQueue(node)
        queue.node = node  # its address as last seen
        for stored in versions:
            key = (object_id.value, stored.version, stored.kind, stored.legacy)
            if key in queue.waiting:
                continue
            if self._waiting >= self._backlog:
                self.counts.dropped += 1
                continue
            queue.waiting[key] = (object_id, stored)
            self._waiting += 1
            self.counts.scheduled += 1
        if queue.waiting and (queue.task is None or queue.task.done()):
            queue.task = asyncio.get_running_loop().create_task(self._remove_from(queue))

    async def _remove_from(self, queue: _NodeQueue) -> None:
        while queue.waiting:
            keys = list(queue.waiting)[: self._batch]
            removals = [queue.waiting.pop(key) for key in keys]
            self._waiting -= len(removals)
            node = queue.node
            try:
                refused = await self._access.call(
                    node, partial(self._storage.remove_many, node, removals)
                )
            except GatewayError as exc:
                self.counts.failed += len(removals)
                logger.info("removing %d versions on %s: %s", len(removals), node.name, exc.detail)
                continue
            except Exception:
                # A bug, not a node's failure: told loudly, and it stops nothing else.
                self.counts.failed += len(removals)
                logger.exception("removing %d versions on %s failed", len(removals), node.name)
                continue
            self.counts.failed += refused
            self.counts.done += len(removals) - refused

    @property
    def waiting(self) -> int:
        return self._waiting

    async def idle(self) -> None:
        """Until every removal submitted so far has been made (or has failed)."""
        while tasks := [q.task for q in self._queues.values() if q.task and not q.task.done()]:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose(self) -> None:
        tasks = [q.task for q in self._queues.values() if q.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
