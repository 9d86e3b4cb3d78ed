"""What the gateway knows about stored objects: values that cross every layer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from domain.versions import Rank, Version, rank_of

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "TOMBSTONE_CONTENT_TYPE",
    "TOMBSTONE_SIZE",
    "ByteRange",
    "ListedObject",
    "ObjectInfo",
    "StoredObject",
    "WriteCondition",
    "quoted_etag",
    "tombstone_body",
    "unquoted_etag",
]

# What an object stored without a Content-Type is served as (RFC 9110 section 8.3).
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# A tombstone's body is its version's text: every tombstone has an ETag of its own, so a write
# over one (even of an empty object) never looks like the tombstone.
TOMBSTONE_SIZE = len(str(Version(0, "0" * 16, 0)))
TOMBSTONE_CONTENT_TYPE = "application/x-gateway-tombstone"


def tombstone_body(version: Version) -> bytes:
    return str(version).encode("ascii")


def quoted_etag(etag: str) -> str:
    """An entity tag as HTTP and S3 write it: in double quotes."""
    return f'"{etag}"'


def unquoted_etag(value: str) -> str:
    """An entity tag as the gateway keeps it (``ObjectInfo.etag``): without its quotes."""
    return value.strip().strip('"')


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a node says about a stored object. ``etag`` is unquoted.

    ``version`` is the gateway's stamp of the write (None for objects written before versions);
    ``deleted`` marks a tombstone: the record that the ID was deleted, as a version of its own.
    """

    size: int
    content_type: str
    etag: str
    last_modified: datetime | None = None
    version: Version | None = None
    deleted: bool = False

    @property
    def rank(self) -> Rank:
        return rank_of(self.version, self.last_modified)


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
