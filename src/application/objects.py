"""What clients do with objects: put, get, head and delete one, by ID.

The use cases take ports in their constructors and know no framework or SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from application.fleet import Fleet
from application.node_access import NodeAccess
from domain.conditions import Preconditions, Verdict
from domain.errors import NodeUnavailable, ObjectNotFound, PreconditionFailed
from domain.node import Node
from domain.object_id import ObjectId
from domain.objects import (
    DEFAULT_CONTENT_TYPE,
    ByteRange,
    ObjectInfo,
    StoredObject,
    WriteCondition,
)
from domain.ports import ObjectStorage

__all__ = [
    "DEFAULT_FALLBACK_NODES",
    "DeleteObject",
    "GetObject",
    "HeadObject",
    "ObjectHeaders",
    "PutObject",
    "PutOutcome",
    "RetrievedObject",
]

# Reads look on the owner and on this many successors: after one membership change an object not
# yet rebalanced sits on the first node after the newcomer; after two changes at once (two nodes
# added, or one added while another returns), on at most the second. Each extra node costs a
# request only for IDs the owner does not have.
DEFAULT_FALLBACK_NODES = 2
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class PutOutcome:
    info: ObjectInfo
    created: bool
    node: Node


@dataclass(frozen=True, slots=True)
class RetrievedObject:
    stored: StoredObject
    node: Node
    # Found on a node other than the owner (it has not been rebalanced yet).
    from_fallback: bool = False


@dataclass(frozen=True, slots=True)
class ObjectHeaders:
    info: ObjectInfo
    node: Node
    from_fallback: bool = False


class PutObject:
    """Store a body under an ID on the node that owns the ID, replacing any earlier object."""

    def __init__(self, fleet: Fleet, storage: ObjectStorage, access: NodeAccess) -> None:
        self._fleet = fleet
        self._storage = storage
        self._access = access

    async def __call__(
        self,
        raw_object_id: str,
        body: AsyncIterator[bytes],
        length: int | None,
        content_type: str | None,
        preconditions: Preconditions | None = None,
    ) -> PutOutcome:
        object_id = ObjectId(raw_object_id)
        # The owner or nothing: writing elsewhere while the owner is down would leave an object
        # that reads cannot see once the owner is back.
        node = await self._fleet.owner_of(object_id)
        content_type = content_type or DEFAULT_CONTENT_TYPE
        self._access.admit(node)
        # While the client's body is coming, the upload waits for the client, not the node: it
        # takes a place in the node's cap only once the body has ended (the HEAD beside it holds
        # one while it runs).
        slot = _SlotAfterBody(self._access, node)
        try:
            if preconditions is not None and not preconditions.empty:
                return await self._access.observe(
                    node,
                    lambda: self._store_if(
                        node, object_id, slot.body(body), length, content_type, preconditions
                    ),
                )

            async def store() -> PutOutcome:
                # 201 or 200 needs to know whether the ID was taken before this write. The HEAD
                # runs beside the upload instead of before it; the last chunk of the body is held
                # back until it has answered, so the node cannot have committed the new object
                # by then.
                existed = asyncio.ensure_future(self._current(node, object_id))
                try:
                    if length == 0:
                        await existed  # nothing to hold back: an empty body commits at once
                    info = await self._storage.put(
                        node, object_id, slot.body(body, after=existed), length, content_type
                    )
                    return PutOutcome(info=info, created=await existed is None, node=node)
                finally:
                    if not existed.done():
                        existed.cancel()
                        with contextlib.suppress(BaseException):
                            await existed

            return await self._access.observe(node, store)
        finally:
            slot.release()

    async def _store_if(  # noqa: PLR0917 - private, called from one place
        self,
        node: Node,
        object_id: ObjectId,
        body: AsyncIterator[bytes],
        length: int | None,
        content_type: str,
        preconditions: Preconditions,
    ) -> PutOutcome:
        """A conditional write: the conditions are evaluated on what is stored before any byte is
        sent, and the node is told to write only if that is still so, which makes it atomic on
        nodes that honour conditional writes (MinIO does)."""
        current = await self._current(node, object_id)
        if preconditions.evaluate(current, reading=False) is not Verdict.PROCEED:
            raise PreconditionFailed("the object stored under this ID does not meet the conditions")
        unchanged = (
            WriteCondition(only_if_absent=True)
            if current is None
            else WriteCondition(only_if_etag=current.etag)
        )
        info = await self._storage.put(
            node, object_id, body, length, content_type, condition=unchanged
        )
        return PutOutcome(info=info, created=current is None, node=node)

    async def _current(self, node: Node, object_id: ObjectId) -> ObjectInfo | None:
        release = self._access.hold(node)
        try:
            return await self._storage.head(node, object_id)
        except ObjectNotFound:
            return None
        finally:
            release()


class _SlotAfterBody:
    """An upload's place in its node's cap, taken when the client's body has ended."""

    __slots__ = ("_access", "_node", "_release")

    def __init__(self, access: NodeAccess, node: Node) -> None:
        self._access = access
        self._node = node
        self._release: Callable[[], None] | None = None

    async def body(
        self, body: AsyncIterator[bytes], after: Awaitable[object] | None = None
    ) -> AsyncIterator[bytes]:
        """``body`` unchanged, except that its last chunk waits for ``after`` (and its error, if
        any) and for a place in the node's cap."""
        held: bytes | None = None
        async for chunk in body:
            if held is not None:
                yield held
            held = chunk
        if after is not None:
            await after
        self._release = self._access.hold(self._node)
        if held is not None:
            yield held

    def release(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None


class _WherePlaced:
    """The nodes that may hold an ID: its owner, then the nodes that held it before membership
    changed (an object sits on its former owner until rebalanced, and former owners are the next
    nodes of the ID's preference list)."""

    def __init__(
        self, fleet: Fleet, storage: ObjectStorage, access: NodeAccess, fallback_nodes: int
    ) -> None:
        if fallback_nodes < 0:
            raise ValueError("fallback_nodes must not be negative")
        self._fleet = fleet
        self._storage = storage
        self._access = access
        self._fallback_nodes = fallback_nodes

    async def _candidates(self, object_id: ObjectId) -> list[Node]:
        candidates = await self._fleet.preference_of(object_id, 1 + self._fallback_nodes)
        owner = candidates[0]
        if not owner.is_up:
            raise NodeUnavailable(owner.name, "the node is not running")
        return candidates


class _Reads(_WherePlaced):
    """Reads that ask the owner first, then the nodes that held the ID before membership changed.

    An owner that is down still fails the read (503): a copy elsewhere may be stale. Not found is
    answered only when every node asked said so; a node that could not be asked makes it a 503.
    """

    async def _first_holder(
        self, object_id: ObjectId, read: Callable[[Node], Awaitable[_T]]
    ) -> tuple[_T, Node, bool]:
        """The first answer of ``read`` along the candidates, its node, and whether it was not the
        owner."""
        # The owner answers almost every read: the rest of the preference list only on a miss.
        owner = await self._fleet.owner_of(object_id)
        try:
            return await read(owner), owner, False
        except ObjectNotFound:
            pass
        for node in (await self._candidates(object_id))[1:]:
            if not node.is_up:
                raise NodeUnavailable(node.name, "the node is not running, and it may hold this ID")
            try:
                return await read(node), node, True
            except ObjectNotFound:
                continue
        # The owner answers for the ID.
        raise ObjectNotFound("no object is stored under this ID", node_name=owner.name)


class GetObject(_Reads):
    """Open the object stored under an ID: on its owner, else on the nodes that held it before."""

    async def __call__(
        self, raw_object_id: str, byte_range: ByteRange | None = None
    ) -> RetrievedObject:
        object_id = ObjectId(raw_object_id)
        stored, node, fallback = await self._first_holder(
            object_id, lambda node: self._open(node, object_id, byte_range)
        )
        return RetrievedObject(stored=stored, node=node, from_fallback=fallback)

    async def _open(
        self, node: Node, object_id: ObjectId, byte_range: ByteRange | None
    ) -> StoredObject:
        # The node's place in its cap is given back once its answer has arrived: the body then
        # moves at the client's pace (and a node that stalls mid-body meets the idle timeout).
        return await self._access.call(node, lambda: self._storage.get(node, object_id, byte_range))


class HeadObject(_Reads):
    """The metadata of the object stored under an ID, found as ``GetObject`` finds it."""

    async def __call__(self, raw_object_id: str) -> ObjectHeaders:
        object_id = ObjectId(raw_object_id)
        info, node, fallback = await self._first_holder(
            object_id,
            lambda node: self._access.call(node, lambda: self._storage.head(node, object_id)),
        )
        return ObjectHeaders(info=info, node=node, from_fallback=fallback)


class DeleteObject(_WherePlaced):
    """Remove an ID's object from its owner and from every node a read would look on.

    Idempotent, as in S3: no error when nothing was stored. Every one of those nodes must be up,
    or nothing is attempted: a copy left behind on a node that was skipped would come back.
    """

    async def __call__(self, raw_object_id: str) -> list[Node]:
        object_id = ObjectId(raw_object_id)
        candidates = await self._candidates(object_id)
        for node in candidates[1:]:  # the owner was checked with the candidates
            if not node.is_up:
                raise NodeUnavailable(
                    node.name, "the node is not running, and it may hold a copy of this ID"
                )
        await asyncio.gather(*(self._delete(node, object_id) for node in candidates))
        return candidates

    async def _delete(self, node: Node, object_id: ObjectId) -> None:
        await self._access.call(node, lambda: self._storage.delete(node, object_id))
