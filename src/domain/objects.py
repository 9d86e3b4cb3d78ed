"""What the gateway knows about stored objects: values that cross every layer.

Every write is a version of its ID, kept by a node as a record of its own (``StoredVersion``) that
no later write changes: the newest committed version is the ID's current state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from domain.versions import Version

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "PENDING_ABANDONED_SECONDS",
    "ByteRange",
    "ObjectInfo",
    "StoredObject",
    "StoredVersion",
    "VersionKind",
    "abandoned",
    "moment_of",
    "newest_committed",
    "quoted_etag",
    "unquoted_etag",
]

# What an object stored without a Content-Type is served as (RFC 9110 section 8.3).
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def quoted_etag(etag: str) -> str:
    """An entity tag as HTTP and S3 write it: in double quotes."""
    return f'"{etag}"'


def unquoted_etag(value: str) -> str:
    """An entity tag as the gateway keeps it (``ObjectInfo.etag``): without its quotes."""
    return value.strip().strip('"')


class VersionKind(StrEnum):
    """What a version records."""

    DATA = "data"  # an object's bytes
    TOMBSTONE = "deleted"  # the ID was deleted: no older version may come back
    # A conditional write not decided yet: never served, never copied, never counted as newer
    # than anything; made DATA once its conditions are known to hold, else removed.
    PENDING = "pending"


@dataclass(frozen=True, slots=True, order=True)
class StoredVersion:
    """One version of an ID as a node holds it: what the node's listing says of it.

    They order by version (then kind). ``legacy``: kept under the ID's own key, as every object
    was before versions had keys of their own (read, and moved to a key of its own by ``repair``).
    """

    version: Version
    kind: VersionKind
    size: int
    etag: str
    legacy: bool = False
    # How long before it was listed the node stored this record, by the node's own clock (so a
    # node whose clock is off still tells it right); None: not known.
    age_seconds: float | None = field(default=None, compare=False)

    @property
    def committed(self) -> bool:
        return self.kind is not VersionKind.PENDING

    @property
    def deleted(self) -> bool:
        return self.kind is VersionKind.TOMBSTONE


# A conditional write decides within moments of its pending version being stored: one still
# pending this long after was abandoned (its gateway stopped), and is cleared away.
PENDING_ABANDONED_SECONDS = 300.0


def abandoned(stored: StoredVersion, now: float) -> bool:
    """Whether ``stored`` is a pending version no gateway will decide any more: stored long ago
    by the node's own clock (else, when its age is not known, begun long ago by ``now``)."""
    if stored.committed:
        return False
    if stored.age_seconds is not None:
        return stored.age_seconds > PENDING_ABANDONED_SECONDS
    return now - stored.version.seconds > 2 * PENDING_ABANDONED_SECONDS


def newest_committed(versions: list[StoredVersion]) -> StoredVersion | None:
    """The newest of ``versions`` that is not pending (the ID's state where they are held)."""
    best: StoredVersion | None = None
    for stored in versions:
        if stored.committed and (best is None or stored.version > best.version):
            best = stored
    return best


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What is served of a version: ``etag`` is unquoted; ``last_modified`` is when the version
    was written (its version's time, the same on every node that holds a copy of it)."""

    size: int
    content_type: str
    etag: str
    last_modified: datetime | None = None
    version: Version | None = None
    deleted: bool = False


def moment_of(version: Version) -> datetime:
    """A version's time, in whole seconds (what HTTP dates carry)."""
    return datetime.fromtimestamp(version.timestamp_ns // 1_000_000_000, tz=UTC)


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
