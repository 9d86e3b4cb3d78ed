"""Moving objects home after membership changed, and emptying nodes that are to be removed.

The ring decides where a write goes; it does not prove where an object is. After nodes join or
leave, objects sit on their former owners (reads find them there through the fallback). A
rebalance lists every node, and moves each object that is not on its owner: it streams the object
to the owner, checks size and checksum there, and only then deletes the misplaced copy. So an
interrupted run leaves at most an extra copy, and running again finishes the job.

A misplaced copy never replaces a newer object: when the owner already holds the ID, the newer of
the two (by Last-Modified; the owner's on a tie, since writes go to the owner) is kept and the
other deleted. Copies onto the owner are conditional (If-None-Match: *, or If-Match on the owner's
ETag when replacing an older one), so a client write that lands meanwhile wins on nodes that
honour conditional writes (MinIO does). Nodes that ignore them leave a window: a client write to
the owner between the rebalance's check and the end of its copy can be overwritten by the copy.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from domain.errors import (
    CopyMismatch,
    GatewayError,
    InvalidObjectId,
    InvalidRequest,
    ObjectNotFound,
    PreconditionFailed,
)
from domain.hash_ring import HashRing
from domain.node import Node
from domain.object_id import ObjectId
from domain.objects import ListedObject, ObjectInfo, StoredObject, WriteCondition
from domain.ports import ObjectStorage

__all__ = [
    "DEFAULT_CONCURRENCY",
    "Misplaced",
    "Outcome",
    "Rebalance",
    "RebalancePlan",
    "RebalanceReporter",
    "RebalanceSummary",
    "StepResult",
]

_PLAIN_MD5 = re.compile(r"[0-9a-f]{32}")
# Objects moved at once: enough to overlap one move's round trips with another's.
DEFAULT_CONCURRENCY = 4


@dataclass(frozen=True, slots=True)
class Misplaced:
    """An object found on ``holder`` whose owner (under the target placement) is ``owner``."""

    listed: ListedObject
    holder: str
    owner: str

    @property
    def object_id(self) -> str:
        return self.listed.name

    @property
    def size(self) -> int:
        return self.listed.size


@dataclass
class RebalancePlan:
    misplaced: list[Misplaced] = field(default_factory=list)
    in_place: int = 0
    # Nodes that are down or could not be listed: their objects are unknown, so not in place.
    unlisted: dict[str, str] = field(default_factory=dict)
    # Keys that are not object IDs (someone else's objects in the bucket): left alone.
    foreign_keys: int = 0
    drained: tuple[str, ...] = ()

    @property
    def misplaced_bytes(self) -> int:
        return sum(item.size for item in self.misplaced)


class Outcome(StrEnum):
    MOVED = "moved"  # copied to the owner, checked there, misplaced copy deleted
    STALE_DELETED = "stale_deleted"  # the owner had a newer (or the same) version
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class StepResult:
    item: Misplaced
    outcome: Outcome
    detail: str = ""


@dataclass
class RebalanceSummary:
    moved: int = 0
    stale_deleted: int = 0
    failed: int = 0
    bytes_moved: int = 0
    unlisted_nodes: int = 0

    @property
    def everything_in_place(self) -> bool:
        return self.failed == 0 and self.unlisted_nodes == 0


class RebalanceReporter(Protocol):
    """Where progress goes (a progress bar on a terminal, JSON lines elsewhere)."""

    def error(self, error: GatewayError) -> None:
        """Nothing could be planned (discovery failed, a node named to drain is unknown, ...)."""
        ...

    def planned(self, plan: RebalancePlan) -> None: ...

    def planned_move(self, item: Misplaced) -> None:
        """A move a dry run would make."""
        ...

    def dry_run_done(self, plan: RebalancePlan) -> None: ...

    def step(self, result: StepResult) -> None: ...

    def finished(self, summary: RebalanceSummary) -> None: ...


class Rebalance:
    """Plans and carries out the moves that put every object on its owner.

    ``drain`` names nodes to be emptied: placement is computed as if they were gone, so every
    object on them moves, and nothing new is placed on them by this run.
    """

    def __init__(
        self,
        storage: ObjectStorage,
        nodes: Sequence[Node],
        *,
        virtual_nodes: int,
        drain: Sequence[str] = (),
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self._storage = storage
        self._nodes: Mapping[str, Node] = {node.name: node for node in nodes}
        unknown = sorted(set(drain) - set(self._nodes))
        if unknown:
            raise InvalidRequest(
                f"cannot drain {', '.join(unknown)}: not a member (members: "
                f"{', '.join(sorted(self._nodes)) or 'none'})"
            )
        remaining = set(self._nodes) - set(drain)
        if not remaining:
            raise InvalidRequest("cannot drain every node: nothing would be left")
        self._drain = tuple(sorted(set(drain)))
        self._ring = HashRing(remaining, virtual_nodes)
        self._concurrency = max(1, concurrency)

    async def plan(self) -> RebalancePlan:
        plan = RebalancePlan(drained=self._drain)
        for name in sorted(self._nodes):
            node = self._nodes[name]
            if not node.is_up:
                plan.unlisted[name] = "the node is not running"
                continue
            try:
                async for listed in self._storage.list_objects(node):
                    self._place(plan, node, listed)
            except GatewayError as exc:
                plan.unlisted[name] = exc.detail
        return plan

    def _place(self, plan: RebalancePlan, node: Node, listed: ListedObject) -> None:
        try:
            object_id = ObjectId(listed.name)
        except InvalidObjectId:
            plan.foreign_keys += 1
            return
        owner = self._ring.owner(object_id)
        if owner == node.name:
            plan.in_place += 1
            return
        plan.misplaced.append(Misplaced(listed=listed, holder=node.name, owner=owner))

    async def execute(self, plan: RebalancePlan, reporter: RebalanceReporter) -> RebalanceSummary:
        summary = RebalanceSummary(unlisted_nodes=len(plan.unlisted))
        slots = asyncio.Semaphore(self._concurrency)

        async def one(item: Misplaced) -> None:
            async with slots:
                result = await self._settle(item)
            if result.outcome is Outcome.MOVED:
                summary.moved += 1
                summary.bytes_moved += item.size
            elif result.outcome is Outcome.STALE_DELETED:
                summary.stale_deleted += 1
            else:
                summary.failed += 1
            reporter.step(result)

        await asyncio.gather(*(one(item) for item in plan.misplaced))
        reporter.finished(summary)
        return summary

    async def _settle(self, item: Misplaced) -> StepResult:
        """Make ``item``'s owner hold the newest version and the misplaced copy go away."""
        owner, holder = self._nodes[item.owner], self._nodes[item.holder]
        object_id = ObjectId(item.object_id)
        for _ in range(3):  # a client write that lands meanwhile makes us look again
            try:
                current = await self._head_or_none(owner, object_id)
                if current is not None and not _newer(item.listed, current):
                    await self._storage.delete(holder, object_id)
                    return StepResult(item, Outcome.STALE_DELETED, "the owner's copy is newer")
                condition = (
                    WriteCondition(only_if_absent=True)
                    if current is None
                    else WriteCondition(only_if_etag=current.etag)
                )
                await self._copy(holder, owner, object_id, condition)
                await self._storage.delete(holder, object_id)
                return StepResult(item, Outcome.MOVED)
            except PreconditionFailed:
                continue
            except ObjectNotFound:
                # Gone from the holder since it was listed (deleted by a client): nothing to move.
                return StepResult(item, Outcome.STALE_DELETED, "deleted meanwhile")
            except GatewayError as exc:
                return StepResult(item, Outcome.FAILED, exc.detail)
        return StepResult(item, Outcome.FAILED, "the owner kept changing; run again")

    async def _head_or_none(self, node: Node, object_id: ObjectId) -> ObjectInfo | None:
        try:
            return await self._storage.head(node, object_id)
        except ObjectNotFound:
            return None

    async def _copy(
        self, source: Node, target: Node, object_id: ObjectId, condition: WriteCondition
    ) -> None:
        stored = await self._storage.get(source, object_id)
        digest = hashlib.md5(usedforsecurity=False)
        try:
            written = await self._storage.put(
                target,
                object_id,
                _digesting(stored, digest.update),
                stored.info.size,
                stored.info.content_type,
                condition=condition,
            )
        finally:
            await stored.close()
        checksum = digest.hexdigest()
        if _PLAIN_MD5.fullmatch(stored.info.etag) and stored.info.etag != checksum:
            raise CopyMismatch(
                f"read {checksum} from the holder, which reported {stored.info.etag}"
            )
        landed = await self._storage.head(target, object_id)
        if landed.size != stored.info.size:
            raise CopyMismatch(f"the owner holds {landed.size} bytes, not {stored.info.size}")
        if _PLAIN_MD5.fullmatch(written.etag) and written.etag != checksum:
            raise CopyMismatch(f"the owner stored {written.etag}, not {checksum}")


def _newer(candidate: ListedObject, current: ObjectInfo) -> bool:
    if candidate.last_modified is None or current.last_modified is None:
        return False
    return candidate.last_modified > current.last_modified


async def _digesting(
    stored: StoredObject, update: Callable[[bytes], object]
) -> AsyncIterator[bytes]:
    async for chunk in stored.chunks:
        update(chunk)
        yield chunk
