"""What the core needs from the outside world, as Protocols the adapters implement."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from typing import Protocol

from domain.auth import Keyring
from domain.node import DrainState, Node
from domain.object_id import ObjectId
from domain.objects import ByteRange, ListedObject, ObjectInfo, StoredObject, WriteCondition
from domain.versions import Version

__all__ = ["ChangeFeed", "CredentialStore", "DrainMarks", "NodeDiscovery", "ObjectStorage"]


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
        version: Version,
        deleted: bool = False,
        condition: WriteCondition | None = None,
    ) -> ObjectInfo:
        """Store ``body`` atomically, stamped with ``version`` (``deleted``: as a tombstone); on
        any failure no partial object becomes visible.

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

    def list_objects(
        self, node: Node, *, prefix: str = "", start_after: str = ""
    ) -> AsyncIterator[ListedObject]:
        """Every object the node holds (whose key starts with ``prefix`` and sorts after
        ``start_after``), page by page as the node hands them over, in key order. A node may
        ignore the two bounds: callers filter too."""
        ...

    async def aclose(self) -> None:
        """Let go of what the storage holds (its connections); once, when the gateway stops."""
        ...


class DrainMarks(Protocol):
    """The intent that a node be emptied, kept on the node itself: every gateway reads it, it
    outlives any gateway's restart, and it leaves with the node."""

    async def drain_state(self, node: Node) -> DrainState | None:
        """The node's mark (None: none); ``NodeUnavailable`` when it cannot be asked."""
        ...

    async def mark(self, node: Node, state: DrainState, note: str) -> None: ...

    async def unmark(self, node: Node) -> None: ...


class CredentialStore(Protocol):
    """Where the tokens (as hashes) and the signing keys are kept: one keyring, read whole and
    replaced whole."""

    def stamp(self) -> Hashable:
        """Cheap (no read of the content): changes whenever the keyring may have changed."""
        ...

    def load(self) -> Keyring:
        """The keyring; empty when none was stored yet. ``CredentialsUnreadable`` when it cannot
        be read or parsed."""
        ...

    def update(self, change: Callable[[Keyring], Keyring]) -> Keyring:
        """Replace the keyring with ``change(current)``, exclusively (no other update between
        the read and the write) and atomically (a reader sees the old or the new, never half)."""
        ...
