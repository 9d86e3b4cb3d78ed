from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from application.fleet import Fleet
from domain.node import Node
from domain.object_id import ObjectId
from domain.ports import ObjectInfo, ObjectStorage, StoredObject

__all__ = ["GetObject", "PutObject", "PutOutcome", "RetrievedObject"]

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

    def __init__(self, fleet: Fleet, storage: ObjectStorage) -> None:
        self._fleet = fleet
        self._storage = storage

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
        existed = await self._storage.exists(node, object_id)
        info = await self._storage.put(
            node, object_id, body, length, content_type or DEFAULT_CONTENT_TYPE
        )
        return PutOutcome(info=info, created=not existed, node=node)


class GetObject:
    """Open the object stored under an ID on the node that owns the ID."""

    def __init__(self, fleet: Fleet, storage: ObjectStorage) -> None:
        self._fleet = fleet
        self._storage = storage

    async def __call__(self, raw_object_id: str) -> RetrievedObject:
        object_id = ObjectId(raw_object_id)
        node = await self._fleet.owner_of(object_id)
        return RetrievedObject(stored=await self._storage.get(node, object_id), node=node)
