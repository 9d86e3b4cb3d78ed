"""Use cases of the gateway. They take ports in their constructors and know no framework or SDK."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass

from application.fleet import Fleet
from application.node_access import NodeAccess
from domain.errors import ObjectNotFound
from domain.node import Node
from domain.object_id import ObjectId
from domain.ports import ObjectInfo, ObjectStorage, StoredObject

__all__ = ["DEFAULT_CONTENT_TYPE", "GetObject", "PutObject", "PutOutcome", "RetrievedObject"]

DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class PutOutcome:
    info: ObjectInfo
    created: bool
    node: Node


@dataclass(frozen=True, slots=True)
class RetrievedObject:
    stored: StoredObject
    node: Node


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
    ) -> PutOutcome:
        object_id = ObjectId(raw_object_id)
        # The owner or nothing: writing elsewhere while the owner is down would leave an object
        # that reads cannot see once the owner is back.
        node = await self._fleet.owner_of(object_id)

        async def store() -> PutOutcome:
            # 201 or 200 needs to know whether the ID was taken before this write. The HEAD runs
            # beside the upload instead of before it; the last chunk of the body is held back until
            # it has answered, so the node cannot have committed the new object by then.
            existed = asyncio.ensure_future(self._exists(node, object_id))
            try:
                if length == 0:
                    await existed  # nothing to hold back: an empty body commits at once
                info = await self._storage.put(
                    node,
                    object_id,
                    _last_chunk_after(existed, body),
                    length,
                    content_type or DEFAULT_CONTENT_TYPE,
                )
                return PutOutcome(info=info, created=not await existed, node=node)
            finally:
                if not existed.done():
                    existed.cancel()
                    with contextlib.suppress(BaseException):
                        await existed

        return await self._access.call(node, store)

    async def _exists(self, node: Node, object_id: ObjectId) -> bool:
        try:
            await self._storage.head(node, object_id)
        except ObjectNotFound:
            return False
        return True


async def _last_chunk_after(
    gate: Awaitable[object], body: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    """``body`` unchanged, except that its last chunk waits for ``gate`` (and its error, if any)."""
    held: bytes | None = None
    async for chunk in body:
        if held is not None:
            yield held
        held = chunk
    await gate
    if held is not None:
        yield held


class GetObject:
    """Open the object stored under an ID on the node that owns the ID."""

    def __init__(self, fleet: Fleet, storage: ObjectStorage, access: NodeAccess) -> None:
        self._fleet = fleet
        self._storage = storage
        self._access = access

    async def __call__(self, raw_object_id: str) -> RetrievedObject:
        object_id = ObjectId(raw_object_id)
        node = await self._fleet.owner_of(object_id)
        # The node's slot is held while the body streams, and given back when the reader closes.
        release = self._access.enter(node)
        try:
            stored = await self._access.observe(node, lambda: self._storage.get(node, object_id))
        except BaseException:
            release()
            raise
        close_stored = stored.close

        async def close() -> None:
            try:
                await close_stored()
            finally:
                release()

        return RetrievedObject(
            stored=StoredObject(stored.info, stored.chunks, close, stored.whole_body), node=node
        )
