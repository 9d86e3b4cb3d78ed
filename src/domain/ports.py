"""What the core needs from the outside world, as Protocols the adapters implement."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from domain.node import Node
from domain.object_id import ObjectId

__all__ = [
    "ByteRange",
    "ChangeFeed",
    "ListedObject",
    "NodeDiscovery",
    "ObjectInfo",
    "ObjectStorage",
    "StoredObject",
    "WriteCondition",
]


class ChangeFeed(Protocol):
    """Notifications that the fleet may have changed (a node created, started, stopped, ...)."""

    async def next_change(self, timeout_seconds: float) -> bool:
        """Wait for the next change: True when one came (bursts count once), False on timeout.

        Raises ``DiscoveryUnavailable`` when the feed broke; it is then closed and done.
        """
        ...

    async def close(self) -> None: ...


class NodeDiscovery(Protocol):
    """Finds every storage node of the fleet, up or down."""

    async def discover(self) -> Sequence[Node]:
        """All current members. Raises ``DiscoveryUnavailable`` when the source cannot be asked."""
        ...

    async def watch(self) -> ChangeFeed:
        """Start following changes; ``DiscoveryUnavailable`` when the source cannot be asked."""
        ...


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a node says about a stored object. ``etag`` is unquoted."""

    size: int
    content_type: str
    etag: str
    last_modified: datetime | None = None


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes ``first`` to ``last`` (inclusive) of an object, as in HTTP's ``Range: bytes=``.

    ``last`` None: to the end. ``first`` None: a suffix, the final ``last`` bytes.
    """

    first: int | None
    last: int | None

    def __post_init__(self) -> None:
        if self.first is None and self.last is None:
            raise ValueError("a byte range needs a first byte, a last byte, or both")
        if self.first is not None and self.last is not None and self.last < self.first:
            raise ValueError("a byte range cannot end before it starts")

    def resolve(self, size: int) -> tuple[int, int] | None:
        """(start, end) inclusive within an object of ``size`` bytes; None if none of it exists."""
        if self.first is None:
            assert self.last is not None
            if self.last == 0 or size == 0:
                return None
            return max(0, size - self.last), size - 1
        if self.first >= size:
            return None
        return self.first, size - 1 if self.last is None else min(self.last, size - 1)

    def header_value(self) -> str:
        first = "" if self.first is None else str(self.first)
        last = "" if self.last is None else str(self.last)
        return f"bytes={first}-{last}"


@dataclass(frozen=True, slots=True)
class ListedObject:
    """One entry of a node's listing. ``name`` is the key as stored, not necessarily a valid ID."""

    name: str
    size: int
    etag: str
    last_modified: datetime | None


@dataclass(frozen=True, slots=True)
class WriteCondition:
    """A conditional write (S3's If-None-Match / If-Match on PUT).

    MinIO honours both; some S3 servers (the test stand-in among them) ignore them, so a caller
    may rely on a refusal (``PreconditionFailed``) but must not rely on one coming.
    """

    only_if_absent: bool = False
    only_if_etag: str | None = None


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object being read: its metadata, then its bytes as they arrive.

    ``whole_body`` is set instead of streaming when the object is small enough to have been read in
    one go (it then goes out to the client in one send). ``close`` must be awaited once the reader
    is done (or gives up), to return the node connection. When a byte range was asked for,
    ``content_range`` is the (start, end) the bytes cover, and ``info.size`` the whole object's.
    """

    info: ObjectInfo
    chunks: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]
    whole_body: bytes | None = None
    content_range: tuple[int, int] | None = None


class ObjectStorage(Protocol):
    """Stores and returns object bytes on one given node."""

    async def head(self, node: Node, object_id: ObjectId) -> ObjectInfo:
        """The object's metadata. Raises ``ObjectNotFound`` when it does not exist."""
        ...

    async def put(
        self,
        node: Node,
        object_id: ObjectId,
        body: AsyncIterator[bytes],
        length: int | None,
        content_type: str,
        *,
        condition: WriteCondition | None = None,
    ) -> ObjectInfo:
        """Store ``body`` atomically: on any failure no partial object becomes visible.

        ``length`` is the announced size (``None``: unknown until the body ends); a body that ends
        early or runs over raises ``IncompleteBody`` and stores nothing.
        """
        ...

    async def get(
        self, node: Node, object_id: ObjectId, byte_range: ByteRange | None = None
    ) -> StoredObject:
        """Open the object (or ``byte_range`` of it) for reading.

        Raises ``ObjectNotFound`` when it does not exist, ``RangeNotSatisfiable`` when the range
        lies beyond it. The bytes are the range's whether or not the node honours ranges.
        """
        ...

    async def delete(self, node: Node, object_id: ObjectId) -> None:
        """Remove the object; succeeds whether or not it existed."""
        ...

    def list_objects(self, node: Node) -> AsyncIterator[ListedObject]:
        """Every object the node holds, page by page as the node hands them over."""
        ...
