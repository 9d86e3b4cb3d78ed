from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from application.fleet import Fleet
from domain.circuit_breaker import NodeBreakers
from domain.errors import GatewayError, NodeUnavailable, NodeUnreachable
from domain.node import Node
from domain.object_id import ObjectId
from domain.ports import ObjectInfo, ObjectStorage, StoredObject

__all__ = ["GetObject", "PutObject", "PutOutcome", "RetrievedObject"]

DEFAULT_CONTENT_TYPE = "application/octet-stream"
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


async def _on_node(
    breakers: NodeBreakers, node: Node, operation: Callable[[], Awaitable[_T]]
) -> _T:
    """Run ``operation`` on ``node`` unless its breaker is open; tell the breaker how it went."""
    retry_after = breakers.admit(node.name)
    if retry_after is not None:
        raise NodeUnavailable(
            node.name, "it failed repeatedly and is resting", retry_after_seconds=retry_after
        )
    try:
        result = await operation()
    except NodeUnreachable:
        breakers.record_failure(node.name)
        raise
    except GatewayError as exc:
        # Any other answer (not found, a bad body, ...) means the node did answer. A cancelled
        # request says nothing either way; a probe it was leaves the breaker to its own timeout.
        exc.node_name = node.name
        breakers.record_success(node.name)
        raise
    breakers.record_success(node.name)
    return result


class PutObject:
    """Store a body under an ID on the node that owns the ID, replacing any earlier object."""

    def __init__(self, fleet: Fleet, storage: ObjectStorage, breakers: NodeBreakers) -> None:
        self._fleet = fleet
        self._storage = storage
        self._breakers = breakers

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
            existed = await self._storage.exists(node, object_id)
            info = await self._storage.put(
                node, object_id, body, length, content_type or DEFAULT_CONTENT_TYPE
            )
            return PutOutcome(info=info, created=not existed, node=node)

        return await _on_node(self._breakers, node, store)


class GetObject:
    """Open the object stored under an ID on the node that owns the ID."""

    def __init__(self, fleet: Fleet, storage: ObjectStorage, breakers: NodeBreakers) -> None:
        self._fleet = fleet
        self._storage = storage
        self._breakers = breakers

    async def __call__(self, raw_object_id: str) -> RetrievedObject:
        object_id = ObjectId(raw_object_id)
        node = await self._fleet.owner_of(object_id)
        stored = await _on_node(self._breakers, node, lambda: self._storage.get(node, object_id))
        return RetrievedObject(stored=stored, node=node)
