"""What clients do with objects: put, get, head and delete one, by ID.

Each use case validates the ID, then asks the one read path (``VersionReads``: the current
version, wherever it is) or the one write path (``VersionWrites``: a new version on the ID's
replicas; ``ConditionalWrites`` when the request carries conditions). A delete is a write: its
version is a tombstone. The use cases take their collaborators in their constructors and know no
framework or SDK.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from application.conditional import ConditionalWrites
from application.reads import Current, VersionReads
from application.writes import VersionWrites, Written
from domain.conditions import Preconditions
from domain.errors import ObjectNotFound
from domain.node import Node
from domain.object_id import ObjectId
from domain.objects import (
    DEFAULT_CONTENT_TYPE,
    ByteRange,
    ObjectInfo,
    StoredObject,
    VersionKind,
    moment_of,
)

__all__ = [
    "DeleteObject",
    "Deleted",
    "GetObject",
    "HeadObject",
    "ObjectHeaders",
    "PutObject",
    "PutOutcome",
    "RetrievedObject",
]


@dataclass(frozen=True, slots=True)
class PutOutcome:
    info: ObjectInfo
    created: bool
    node: Node
    copies: int = 1  # nodes that took it


@dataclass(frozen=True, slots=True)
class RetrievedObject:
    stored: StoredObject
    node: Node
    # Served by a node other than the ID's replicas (it has not been rebalanced yet).
    from_fallback: bool = False
    answered: int = 1  # replicas whose answers were compared


@dataclass(frozen=True, slots=True)
class ObjectHeaders:
    info: ObjectInfo
    node: Node
    from_fallback: bool = False
    answered: int = 1


@dataclass(frozen=True, slots=True)
class Deleted:
    node: Node  # the ID's first replica
    copies: int = 1  # nodes that took the tombstone


def _missing(current: Current) -> ObjectNotFound:
    # The ID's first replica answers for it.
    return ObjectNotFound("no object is stored under this ID", node_name=current.primary.name)


class GetObject:
    """Open the object stored under an ID: its current version, wherever it is."""

    def __init__(self, reads: VersionReads) -> None:
        self._reads = reads

    async def __call__(
        self, raw_object_id: str, byte_range: ByteRange | None = None
    ) -> RetrievedObject:
        current, opened = await self._reads.open(ObjectId(raw_object_id), byte_range)
        if opened is None:
            raise _missing(current)
        node, stored = opened
        return RetrievedObject(
            stored, node, from_fallback=node not in current.replicas, answered=current.answered
        )


class HeadObject:
    """What is served of the object stored under an ID, found as ``GetObject`` finds it."""

    def __init__(self, reads: VersionReads) -> None:
        self._reads = reads

    async def __call__(self, raw_object_id: str) -> ObjectHeaders:
        current, found = await self._reads.info(ObjectId(raw_object_id))
        if found is None:
            raise _missing(current)
        node, info = found
        return ObjectHeaders(
            info, node, from_fallback=node not in current.replicas, answered=current.answered
        )


class PutObject:
    """Store a body under an ID as its newest version, on the ID's replicas."""

    def __init__(self, writes: VersionWrites, conditional: ConditionalWrites) -> None:
        self._writes = writes
        self._conditional = conditional

    async def __call__(
        self,
        raw_object_id: str,
        body: AsyncIterator[bytes],
        length: int | None,
        content_type: str | None,
        preconditions: Preconditions | None = None,
    ) -> PutOutcome:
        object_id = ObjectId(raw_object_id)
        content_type = content_type or DEFAULT_CONTENT_TYPE
        written: Written
        if preconditions is not None and not preconditions.empty:
            written = await self._conditional.put(
                object_id, body, length, content_type, preconditions
            )
        else:
            written = await self._writes.write(object_id, body, length, content_type)
        stored = written.stored
        info = ObjectInfo(
            stored.size, content_type, stored.etag, moment_of(stored.version), stored.version
        )
        return PutOutcome(info, written.created, written.node, written.copies)


class DeleteObject:
    """Delete the object stored under an ID: a tombstone, its newest version.

    The tombstone is a version of its own, newer than every version before it, so no older copy
    left on another node (not yet rebalanced) can ever come back; the rebalance removes those, and
    the tombstone itself once it is alone and old. Idempotent, as in S3: 204 whether or not
    something was stored. One write, so all or nothing: a delete that fails changes nothing.
    """

    def __init__(self, writes: VersionWrites) -> None:
        self._writes = writes

    async def __call__(self, raw_object_id: str) -> Deleted:
        written = await self._writes.write(
            ObjectId(raw_object_id),
            _empty(),
            0,
            DEFAULT_CONTENT_TYPE,
            kind=VersionKind.TOMBSTONE,
            ask_before=False,
        )
        return Deleted(written.node, written.copies)


async def _empty() -> AsyncIterator[bytes]:
    yield b""
