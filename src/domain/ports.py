"""What the core needs from the outside world, as Protocols the adapters implement."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from typing import Protocol

from domain.auth import Keyring
from domain.leases import LeaseClaim
from domain.node import DrainState, Node, NodeMarks
from domain.object_id import ObjectId
from domain.objects import ByteRange, ObjectInfo, StoredObject, StoredVersion, VersionKind
from domain.versions import Version

__all__ = [
    "ChangeFeed",
    "CredentialStore",
    "Leases",
    "NodeDiscovery",
    "NodeMarking",
    "ObjectStorage",
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


class ObjectStorage(Protocol):
    """The versions of objects on one given node: each version a record of its own, written once
    and never changed, only removed (``StoredVersion``).

    Every method raises ``NodeUnavailable`` (or a subclass) when the node cannot be asked.
    """

    async def versions(
        self, node: Node, object_id: ObjectId, *, legacy: bool = False
    ) -> list[StoredVersion]:
        """Every version of the ID the node holds, oldest first (none: an empty list). With
        ``legacy``, also the object kept under the ID's own key (the layout before versions had
        keys of their own), if there is one."""
        ...

    async def open(
        self,
        node: Node,
        object_id: ObjectId,
        stored: StoredVersion,
        byte_range: ByteRange | None = None,
    ) -> StoredObject:
        """Open one version (or ``byte_range`` of it) for reading.

        Raises ``ObjectNotFound`` when the node no longer holds it (removed since it was listed),
        ``RangeNotSatisfiable`` when the range lies beyond it. The bytes are the range's whether
        or not the node honours ranges.
        """
        ...

    async def head(self, node: Node, object_id: ObjectId, stored: StoredVersion) -> ObjectInfo:
        """What is served of one version (its Content-Type above all); ``ObjectNotFound`` when
        the node no longer holds it."""
        ...

    async def put(  # noqa: PLR0917 - a version's ID, identity, body and type
        self,
        node: Node,
        object_id: ObjectId,
        version: Version,
        kind: VersionKind,
        body: AsyncIterator[bytes],
        length: int | None,
        content_type: str,
        *,
        content_md5: str | None = None,
    ) -> StoredVersion:
        """Store ``body`` as ``version`` of the ID, atomically: on any failure nothing of it
        becomes visible. Writing a version the node already holds writes the same record again.

        ``length`` is the announced size (``None``: unknown until the body ends); a body that ends
        early or runs over raises ``IncompleteBody``. With ``content_md5`` (hex), the node checks
        the bytes it received against it and refuses a body that differs (``CopyMismatch``).
        """
        ...

    async def promote(
        self, node: Node, object_id: ObjectId, pending: StoredVersion
    ) -> StoredVersion:
        """Make the node's ``pending`` version of the ID data, the node copying it to itself (no
        byte passes through the gateway); the pending record stays until removed."""
        ...

    async def remove(self, node: Node, object_id: ObjectId, stored: StoredVersion) -> None:
        """Remove one version; succeeds whether or not the node held it."""
        ...

    async def remove_many(
        self, node: Node, versions: Sequence[tuple[ObjectId, StoredVersion]]
    ) -> int:
        """Remove these versions from the node, as few requests as it allows (a version it does
        not hold counts as removed); how many it refused to remove. Raises when it could not be
        asked at all."""
        ...

    def walk(
        self, node: Node, *, prefix: str = "", start_after: str = "", legacy: bool = False
    ) -> AsyncIterator[tuple[str, StoredVersion]]:
        """Every version the node holds, as (the ID as stored, the version), in ID order and by
        version within an ID, page by page as the node hands them over: the IDs that start with
        ``prefix`` and sort after ``start_after``. With ``legacy``, the objects kept under their
        ID's own key too, each before the versions of its ID. The ID is as the node stores it,
        not necessarily a valid one."""
        ...

    async def aclose(self) -> None:
        """Let go of what the storage holds (its connections); once, when the gateway stops."""
        ...


class NodeMarking(Protocol):
    """What is recorded about a node on the node itself, where every gateway reads it and where it
    outlives any gateway's restart and leaves with the node: whether it is being drained, and
    whether it holds nothing in the layout before versions had keys of their own."""

    async def marks(self, node: Node) -> NodeMarks:
        """One request; ``NodeUnavailable`` when the node cannot be asked."""
        ...

    async def mark(self, node: Node, state: DrainState, note: str) -> None: ...

    async def unmark(self, node: Node) -> None: ...

    async def mark_migrated(self, node: Node) -> None: ...

    async def mark_ring(self, node: Node, fingerprint: str, *, settled: bool) -> None:
        """Mark the node with the ring of ``fingerprint``: being settled, or settled (every ID
        found placed by it); replaces any other ring mark."""
        ...

    async def unmark_ring(self, node: Node) -> None:
        """Take the node's ring mark away (the fleet changed since)."""
        ...


class Leases(Protocol):
    """Claims on a named lease, kept on a node: who runs a job that must not overlap another,
    whichever gateway it runs in."""

    async def claims(self, node: Node, lease: str) -> list[LeaseClaim]: ...

    async def claim(self, node: Node, lease: str, claim: LeaseClaim) -> None:
        """Write (or renew: the same version with a later expiry) a claim."""
        ...

    async def drop(self, node: Node, lease: str, claim: LeaseClaim) -> None:
        """Remove one claim (every expiry of its version written so far)."""
        ...


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
