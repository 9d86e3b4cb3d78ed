"""Putting every ID's newest copy on its owner, and nothing anywhere else; emptying draining nodes.

The ring decides where a write goes; it does not prove where an object is. After nodes join, leave
or drain, copies of an ID may sit on several nodes. A rebalance lists every node, page by page,
and merges the listings (S3 lists keys in order), so each ID comes up once with every node that
holds it: memory is a page per node, whatever the number of objects. For each ID not held by its
owner alone, in its turn among this gateway's writes to the ID (``WriteLocks``):

1. every copy is asked for its version, and the newest wins, wherever it is (a tombstone too);
2. if the owner lacks it, it is copied there, keeping its version, on the condition that the
   owner still holds what it was seen to hold (atomic on MinIO); the copy is checked (size,
   checksum) and the owner asked again;
3. only once the owner holds a version at least as new is each other copy deleted, each asked
   again first: one that changed meanwhile is left for the next pass.

A tombstone alone on its owner and older than the grace period is removed too, when every member
could be listed (one that could not might hold an older copy the tombstone still has to cover).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from application.copies import copy_version, head_or_none
from application.fleet import Membership
from application.listing import Copies, merged_listings
from application.node_access import NodeAccess
from application.write_locks import WriteLocks
from domain.errors import (
    GatewayError,
    InvalidObjectId,
    ObjectNotFound,
    PreconditionFailed,
)
from domain.node import Node
from domain.object_id import ObjectId
from domain.objects import (
    TOMBSTONE_SIZE,
    ObjectInfo,
)
from domain.ports import ObjectStorage

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_TOMBSTONE_GRACE_SECONDS",
    "Outcome",
    "Rebalance",
    "RebalanceReporter",
    "RebalanceSummary",
    "StepResult",
    "Survey",
]

_PLAIN_MD5 = re.compile(r"[0-9a-f]{32}")
# Objects moved at once: enough to overlap one move's round trips with another's.
DEFAULT_CONCURRENCY = 4
# A tombstone must outlive every older copy it covers. Copies it covers are removed by the pass
# that finds them; the grace is for a copy no pass could see: on a node that was down or left
# the fleet and comes back. A day, as Garage keeps them (Swift keeps a week, Cassandra ten days).
DEFAULT_TOMBSTONE_GRACE_SECONDS = 24 * 3600.0


@dataclass
class Survey:
    """What a look at every node found (nothing was changed)."""

    misplaced: int = 0
    misplaced_bytes: int = 0
    in_place: int = 0
    # Nodes that are down or could not be listed (whole or in part): their objects are unknown.
    unlisted: dict[str, str] = field(default_factory=dict)
    # Keys that are not object IDs (someone else's objects in the bucket): left alone.
    foreign_keys: int = 0
    draining: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.unlisted


class Outcome(StrEnum):
    MOVED = "moved"  # the newest copy was put on the owner; the others deleted
    STALE_DELETED = "stale_deleted"  # the owner already held the newest; the others deleted
    PURGED = "purged"  # a tombstone alone and past its grace period, removed
    LEFT = "left"  # something changed meanwhile: for the next pass
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class StepResult:
    object_id: str
    holders: tuple[str, ...]
    owner: str
    size: int
    outcome: Outcome
    detail: str = ""


@dataclass
class RebalanceSummary:
    moved: int = 0
    stale_deleted: int = 0
    purged: int = 0
    left: int = 0
    failed: int = 0
    bytes_moved: int = 0
    unlisted_nodes: int = 0

    @property
    def everything_in_place(self) -> bool:
        return self.failed == 0 and self.left == 0 and self.unlisted_nodes == 0


class RebalanceReporter(Protocol):
    """Where a rebalance tells how it goes (the admin API streams it as JSON lines)."""

    def surveyed(self, survey: Survey) -> None: ...

    def planned_move(self, object_id: str, holders: Sequence[str], owner: str, size: int) -> None:
        """A move a dry run would make."""
        ...

    def step(self, result: StepResult) -> None: ...

    def finished(self, summary: RebalanceSummary) -> None: ...


class Rebalance:
    """A pass over every node: what is out of place, and (``execute``) putting it right.

    Placement is the membership's write ring: draining nodes own nothing, so everything on them
    moves.
    """

    def __init__(
        self,
        storage: ObjectStorage,
        access: NodeAccess,
        locks: WriteLocks,
        membership: Membership,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        replicas: int = 1,
        tombstone_grace_seconds: float = DEFAULT_TOMBSTONE_GRACE_SECONDS,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._storage = storage
        self._access = access
        self._locks = locks
        self._membership = membership
        self._concurrency = max(1, concurrency)
        self._replica_count = replicas
        self._grace = tombstone_grace_seconds
        self._wall_clock = wall_clock
        self._members = sorted(membership.nodes.values(), key=lambda node: node.name)

    async def survey(self, reporter: RebalanceReporter | None = None) -> Survey:
        """Look at every node and count what is out of place; a dry run reports each move."""
        survey = Survey(draining=tuple(sorted(self._membership.draining)))
        async for object_id, copies in self._walk(survey):
            replicas = self._replicas(object_id)
            if self._in_place(copies, replicas):
                survey.in_place += 1
                continue
            size = max(listed.size for _, listed in copies)
            survey.misplaced += 1
            survey.misplaced_bytes += size
            if reporter is not None:
                reporter.planned_move(
                    object_id.value, [node.name for node, _ in copies], replicas[0].name, size
                )
        return survey

    async def execute(self, reporter: RebalanceReporter) -> RebalanceSummary:
        """Put every ID's newest copy on each of its replicas, and delete the others."""
        summary = RebalanceSummary()
        survey = Survey()
        slots = asyncio.Semaphore(self._concurrency)
        running: set[asyncio.Task[None]] = set()

        async def one(object_id: ObjectId, copies: Copies, purge_allowed: bool) -> None:
            try:
                result = await self._settle(object_id, copies, purge_allowed)
            finally:
                slots.release()
            if result is None:
                return
            if result.outcome is Outcome.MOVED:
                summary.moved += 1
                summary.bytes_moved += result.size
            elif result.outcome is Outcome.STALE_DELETED:
                summary.stale_deleted += 1
            elif result.outcome is Outcome.PURGED:
                summary.purged += 1
            elif result.outcome is Outcome.LEFT:
                summary.left += 1
            else:
                summary.failed += 1
            reporter.step(result)

        async for object_id, copies in self._walk(survey):
            in_place = self._in_place(copies, self._replicas(object_id))
            if in_place and (copies[0][1].size != TOMBSTONE_SIZE or not survey.complete):
                continue  # the common case: where it belongs, and not a tombstone due
            await slots.acquire()
            task = asyncio.create_task(one(object_id, copies, purge_allowed=survey.complete))
            running.add(task)
            task.add_done_callback(running.discard)
        await asyncio.gather(*running)
        summary.unlisted_nodes = len(survey.unlisted)
        reporter.finished(summary)
        return summary

    def _replicas(self, object_id: ObjectId) -> list[Node]:
        """Where the ID belongs: its owner, and the N - 1 nodes after it on the write ring."""
        return self._membership.write_walk(object_id, self._replica_count)

    def _in_place(self, copies: Copies, replicas: list[Node]) -> bool:
        """Held by exactly its replicas, all listing the same object (by ETag: a copy that
        differs is settled by version)."""
        if len(copies) != len(replicas):
            return False
        if len(copies) == 1:
            return copies[0][0].name == replicas[0].name  # one copy per ID: on its owner
        if {node.name for node, _ in copies} != {node.name for node in replicas}:
            return False
        return len({listed.etag for _, listed in copies}) == 1

    async def _walk(self, survey: Survey) -> AsyncIterator[tuple[ObjectId, Copies]]:
        listed = []
        for node in self._members:
            if node.is_up:
                listed.append(node)
            else:
                survey.unlisted[node.name] = "the node is not running"
        async for key, copies in merged_listings(self._storage, listed, survey.unlisted):
            try:
                object_id = ObjectId(key)
            except InvalidObjectId:
                survey.foreign_keys += 1
                continue
            yield object_id, copies

    async def _settle(
        self, object_id: ObjectId, copies: Copies, purge_allowed: bool
    ) -> StepResult | None:
        replicas = self._replicas(object_id)
        holders = tuple(node.name for node, _ in copies)
        size = max(listed.size for _, listed in copies)

        def result(outcome: Outcome, detail: str = "") -> StepResult:
            return StepResult(object_id.value, holders, replicas[0].name, size, outcome, detail)

        try:
            async with self._locks.held(object_id.value):
                if self._in_place(copies, replicas):
                    purged = await self._purge_if_due(replicas, object_id, purge_allowed)
                    return result(Outcome.PURGED) if purged else None
                return await self._move(replicas, object_id, [node for node, _ in copies], result)
        except GatewayError as exc:
            return result(Outcome.FAILED, exc.detail)

    async def _move(
        self,
        replicas: list[Node],
        object_id: ObjectId,
        holders: list[Node],
        result: Callable[[Outcome, str], StepResult],
    ) -> StepResult:
        replica_names = {node.name for node in replicas}
        others = [node for node in holders if node.name not in replica_names]
        asked = [*replicas, *others]
        infos = await asyncio.gather(*(self._head(node, object_id) for node in asked))
        found = {node.name: info for node, info in zip(asked, infos, strict=True) if info}
        if not found:
            return result(Outcome.STALE_DELETED, "deleted meanwhile")
        # The replicas come first, the owner before them: it wins a tie.
        source = max(found, key=lambda name: found[name].rank)
        best = found[source]
        outcome = Outcome.STALE_DELETED
        for replica in replicas:
            on_replica = found.get(replica.name)
            if on_replica is not None and on_replica.rank >= best.rank:
                continue
            try:
                await copy_version(
                    self._storage,
                    self._access,
                    self._membership.nodes[source],
                    replica,
                    object_id,
                    best,
                    on_replica,
                )
            except (PreconditionFailed, ObjectNotFound):
                # A read repair (or another gateway's pass) may have put the same version there
                # first: then the replica is as it should be. Anything else (a newer write, a
                # delete) is left for the next pass to see whole.
                now = await self._head(replica, object_id)
                if now is None or now.rank != best.rank:
                    return result(Outcome.LEFT, "the object changed while it was copied")
            outcome = Outcome.MOVED
        landed = await asyncio.gather(*(self._head(node, object_id) for node in replicas))
        if any(info is None or info.rank < best.rank for info in landed):
            return result(Outcome.LEFT, "a replica does not hold the newest version")
        floor = min(info.rank for info in landed if info is not None)
        for node in others:
            again = await self._head(node, object_id)
            if again is None:
                continue
            if again.rank > floor:
                # Written there after the replicas were checked (a gateway that has not seen
                # the change yet): the next pass moves it.
                return result(Outcome.LEFT, f"a newer copy appeared on {node.name}")
            await self._delete(node, object_id)
        return result(outcome, "")

    async def _purge_if_due(self, replicas: list[Node], object_id: ObjectId, allowed: bool) -> bool:
        if not allowed:
            return False
        infos = await asyncio.gather(*(self._head(node, object_id) for node in replicas))
        for info in infos:
            if info is None or not info.deleted or info.version is None:
                return False
            if self._wall_clock() - info.version.seconds < self._grace:
                return False
        for node in replicas:
            await self._delete(node, object_id)
        return True

    async def _delete(self, node: Node, object_id: ObjectId) -> None:
        await self._access.call(node, lambda: self._storage.delete(node, object_id))

    async def _head(self, node: Node, object_id: ObjectId) -> ObjectInfo | None:
        return await head_or_none(self._storage, self._access, node, object_id)
