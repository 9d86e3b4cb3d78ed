"""What clients do with objects: put, get, head and delete one, by ID.

Every write is stamped with a version (``VersionClock``) and goes to the ID's owner; a delete is a
tombstone, a version of its own. Which copy of an ID is current is decided one way for everyone
(``ObjectLookup``): the owner's, unless it has none; then the newest of the nodes that held the ID
before membership changed; and the newest of all of them while one is draining. Reads serve that
copy, writes answer 201 or 200 and check their conditions by it. The use cases take ports in their
constructors and know no framework or SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from application.fleet import Fleet, Membership
from application.node_access import NodeAccess
from application.write_locks import WriteLocks
from domain.conditions import Preconditions, Verdict
from domain.errors import NodeUnavailable, ObjectNotFound, PreconditionFailed
from domain.node import Node
from domain.object_id import ObjectId
from domain.objects import (
    DEFAULT_CONTENT_TYPE,
    TOMBSTONE_CONTENT_TYPE,
    TOMBSTONE_SIZE,
    ByteRange,
    ObjectInfo,
    StoredObject,
    WriteCondition,
    tombstone_body,
)
from domain.ports import ObjectStorage
from domain.versions import VersionClock

if TYPE_CHECKING:
    from application.replicas import Replicas

__all__ = [
    "DEFAULT_FALLBACK_NODES",
    "DeleteObject",
    "Deleted",
    "Found",
    "GetObject",
    "HeadObject",
    "ObjectHeaders",
    "ObjectLookup",
    "PutObject",
    "PutOutcome",
    "RetrievedObject",
    "newest",
]

# Reads look on the owner and on this many successors: after one membership change an object not
# yet rebalanced sits on the first node after the newcomer; after two changes at once (two nodes
# added, or one added while another returns), on at most the second. Each extra node costs a
# request only for IDs the owner does not have.
DEFAULT_FALLBACK_NODES = 2


@dataclass(frozen=True, slots=True)
class PutOutcome:
    info: ObjectInfo
    created: bool
    node: Node
    copies: int = 1  # nodes that took it (0: superseded at once by a concurrent write)


@dataclass(frozen=True, slots=True)
class RetrievedObject:
    stored: StoredObject
    node: Node
    # Found on a node other than the owner (it has not been rebalanced yet).
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
    node: Node  # the ID's owner (its first replica)
    copies: int = 1  # nodes that took the tombstone


@dataclass(frozen=True, slots=True)
class Found:
    """A copy of an ID (possibly a tombstone) and the node that holds it."""

    info: ObjectInfo
    node: Node


class _Placement:
    """Where an ID's copies may be: its owner, and (worked out only when asked for, since the owner
    answers almost every request) the nodes after it."""

    __slots__ = ("_candidates", "_count", "_membership", "_object_id", "compare_all", "owner")

    def __init__(self, membership: Membership, object_id: ObjectId, count: int) -> None:
        self.owner = membership.owner_of(object_id)
        if not self.owner.is_up:
            raise NodeUnavailable(self.owner.name, "the node is not running")
        self._membership = membership
        self._object_id = object_id
        self._count = count
        self._candidates: list[Node] | None = None
        # A draining node is among them: it may hold a newer copy than the owner.
        self.compare_all = bool(membership.draining) and any(
            node.name in membership.draining for node in self.candidates
        )

    @property
    def candidates(self) -> list[Node]:
        """The owner first, then the nodes that may hold the ID."""
        if self._candidates is None:
            self._candidates = self._membership.preference_of(self._object_id, self._count)
        return self._candidates


class ObjectLookup:
    """Which copy of an ID is current, and where: the one answer every use case shares."""

    def __init__(
        self,
        fleet: Fleet,
        storage: ObjectStorage,
        access: NodeAccess,
        clock: VersionClock,
        locks: WriteLocks,
        *,
        fallback_nodes: int,
    ) -> None:
        if fallback_nodes < 0:
            raise ValueError("fallback_nodes must not be negative")
        self.fleet = fleet
        self.storage = storage
        self.access = access
        self.clock = clock
        self.locks = locks
        self.fallback_nodes = fallback_nodes
        self._fallback_nodes = fallback_nodes

    async def placement(self, object_id: ObjectId) -> _Placement:
        return _Placement(await self.fleet.membership(), object_id, 1 + self._fallback_nodes)

    async def current(
        self, object_id: ObjectId, *, tolerant: bool = False, placement: _Placement | None = None
    ) -> tuple[Found | None, ObjectInfo | None]:
        """The copy a read would serve (a tombstone included; None: none anywhere asked), and what
        the owner itself holds. ``tolerant``: a node that cannot be asked counts as holding
        nothing, instead of failing the lookup."""
        placement = placement or await self.placement(object_id)
        owner = placement.owner
        if placement.compare_all:
            copies = await self.copies(object_id, placement.candidates, tolerant=tolerant)
            owner_copy = next((found.info for found in copies if found.node is owner), None)
            return newest(copies), owner_copy
        owner_copy = await self.head_or_none(owner, object_id)
        if owner_copy is not None:
            return Found(owner_copy, owner), owner_copy
        copies = await self.copies(object_id, placement.candidates[1:], tolerant=tolerant)
        return newest(copies), None

    async def copies(
        self, object_id: ObjectId, nodes: list[Node], *, tolerant: bool = False
    ) -> list[Found]:
        """The copies on ``nodes`` (asked at once), in their order. A node that cannot be asked
        fails the lookup (it may hold the newest), unless ``tolerant``."""
        if not tolerant:
            for node in nodes:
                if not node.is_up:
                    raise NodeUnavailable(
                        node.name, "the node is not running, and it may hold this ID"
                    )

        async def ask(node: Node) -> Found | None:
            try:
                info = await self.head_or_none(node, object_id)
            except NodeUnavailable:
                if not tolerant:
                    raise
                return None
            return None if info is None else Found(info, node)

        answers = await asyncio.gather(*(ask(node) for node in nodes if node.is_up))
        return [found for found in answers if found is not None]

    async def open(
        self, node: Node, object_id: ObjectId, byte_range: ByteRange | None = None
    ) -> StoredObject:
        """The object on ``node``, opened for reading; its version moves this gateway's clock.

        The node's place in its cap is given back once its answer has arrived: the body then
        moves at the client's pace (and a node that stalls mid-body meets the idle timeout)."""
        stored = await self.access.call(node, lambda: self.storage.get(node, object_id, byte_range))
        self.clock.observe(stored.info.version)
        return stored

    async def head_or_none(self, node: Node, object_id: ObjectId) -> ObjectInfo | None:
        try:
            info = await self.access.call(node, lambda: self.storage.head(node, object_id))
        except ObjectNotFound:
            return None
        self.clock.observe(info.version)
        return info


def newest(copies: list[Found]) -> Found | None:
    """The newest of ``copies``; of equals, the first (the owner's side of the walk)."""
    best: Found | None = None
    for found in copies:
        if best is None or found.info.rank > best.info.rank:
            best = found
    return best


def _missing(owner: Node | None) -> ObjectNotFound:
    # The owner answers for the ID.
    return ObjectNotFound(
        "no object is stored under this ID", node_name=None if owner is None else owner.name
    )


class GetObject:
    """Open the object stored under an ID: its current copy, wherever it is."""

    def __init__(self, lookup: ObjectLookup, replicas: Replicas | None = None) -> None:
        self._lookup = lookup
        self._replicas = replicas

    async def __call__(
        self, raw_object_id: str, byte_range: ByteRange | None = None
    ) -> RetrievedObject:
        object_id = ObjectId(raw_object_id)
        if self._replicas is not None:
            try:
                read = await self._replicas.read(object_id, body=True, byte_range=byte_range)
            except ObjectNotFound:
                raise _missing(owner=None) from None  # gone between the HEAD and the GET
            if read.found is None or read.stored is None:
                raise _missing(read.primary)
            return RetrievedObject(
                await _unless_deleted(read.stored, read.primary),
                read.found.node,
                from_fallback=read.found.node not in read.replicas,
                answered=read.answered,
            )
        lookup = self._lookup
        placement = await lookup.placement(object_id)
        owner = placement.owner
        if not placement.compare_all:
            # The owner answers almost every read: the others are asked only when it has nothing.
            try:
                stored = await self._lookup.open(owner, object_id, byte_range)
            except ObjectNotFound:
                pass
            else:
                # A tombstone: the ID was deleted, and no copy further along may come back.
                return RetrievedObject(await _unless_deleted(stored, owner), owner)
            found = newest(await lookup.copies(object_id, placement.candidates[1:]))
        else:
            found = newest(await lookup.copies(object_id, placement.candidates))
        if found is None or found.info.deleted:
            raise _missing(owner)
        try:
            stored = await self._lookup.open(found.node, object_id, byte_range)
        except ObjectNotFound:
            raise _missing(owner) from None  # deleted since it was found
        return RetrievedObject(
            await _unless_deleted(stored, owner), found.node, from_fallback=found.node is not owner
        )


async def _unless_deleted(stored: StoredObject, owner: Node) -> StoredObject:
    if stored.info.deleted:
        await stored.close()
        raise _missing(owner)
    return stored


class HeadObject:
    """The metadata of the object stored under an ID, found as ``GetObject`` finds it."""

    def __init__(self, lookup: ObjectLookup, replicas: Replicas | None = None) -> None:
        self._lookup = lookup
        self._replicas = replicas

    async def __call__(self, raw_object_id: str) -> ObjectHeaders:
        object_id = ObjectId(raw_object_id)
        if self._replicas is not None:
            read = await self._replicas.read(object_id, body=False)
            if read.found is None or read.found.info.deleted:
                raise _missing(read.primary)
            return ObjectHeaders(
                read.found.info,
                read.found.node,
                from_fallback=read.found.node not in read.replicas,
                answered=read.answered,
            )
        placement = await self._lookup.placement(object_id)
        found, _ = await self._lookup.current(object_id, placement=placement)
        owner = placement.owner
        if found is None or found.info.deleted:
            raise _missing(owner)
        return ObjectHeaders(found.info, found.node, from_fallback=found.node is not owner)


class PutObject:
    """Store a body under an ID on the node that owns the ID (on its N replicas, when there are
    more), replacing any earlier object."""

    def __init__(self, lookup: ObjectLookup, replicas: Replicas | None = None) -> None:
        self._lookup = lookup
        self._replicas = replicas

    async def __call__(
        self,
        raw_object_id: str,
        body: AsyncIterator[bytes],
        length: int | None,
        content_type: str | None,
        preconditions: Preconditions | None = None,
    ) -> PutOutcome:
        object_id = ObjectId(raw_object_id)
        if self._replicas is not None:
            return await self._replicas.put(
                object_id, body, length, content_type or DEFAULT_CONTENT_TYPE, preconditions
            )
        lookup = self._lookup
        # The owner or nothing: writing elsewhere while the owner is down would leave an object
        # that reads cannot see once the owner is back.
        placement = await lookup.placement(object_id)
        node = placement.owner
        content_type = content_type or DEFAULT_CONTENT_TYPE
        lookup.access.admit(node)
        version = lookup.clock.next()
        # While the client's body is coming, the upload waits for the client, not the node: it
        # takes a place in the node's cap only once the body has ended (the HEADs beside it hold
        # one while they run), and its turn among this gateway's writes to the ID then too.
        if preconditions is not None and not preconditions.empty:
            # Conditions are checked and the object written in one turn.
            slot = _SlotAfterBody(lookup.access, node)
            try:
                async with lookup.locks.held(object_id.value):
                    return await lookup.access.observe(
                        node,
                        lambda: self._store_if(
                            placement,
                            object_id,
                            slot.body(body),
                            length,
                            content_type,
                            preconditions,
                        ),
                    )
            finally:
                slot.release()
        slot = _SlotAfterBody(lookup.access, node, (lookup.locks, object_id.value))
        try:

            async def store() -> PutOutcome:
                # 201 or 200 needs to know whether the ID was taken before this write, as a read
                # would have answered. The lookup runs beside the upload instead of before it; the
                # last chunk of the body is held back until it has answered, so the node cannot
                # have committed the new object by then. A node that cannot be asked does not
                # fail the write: it only cannot tell 201 from 200.
                existed = asyncio.ensure_future(
                    lookup.current(object_id, tolerant=True, placement=placement)
                )
                try:
                    if length == 0:
                        await existed  # nothing to hold back: an empty body commits at once
                    info = await lookup.storage.put(
                        node,
                        object_id,
                        slot.body(body, after=existed),
                        length,
                        content_type,
                        version=version,
                    )
                    found, _ = await existed
                    created = found is None or found.info.deleted
                    return PutOutcome(info=info, created=created, node=node)
                finally:
                    if not existed.done():
                        existed.cancel()
                        with contextlib.suppress(BaseException):
                            await existed

            return await lookup.access.observe(node, store)
        finally:
            slot.release()

    async def _store_if(  # noqa: PLR0917 - private, called from one place
        self,
        placement: _Placement,
        object_id: ObjectId,
        body: AsyncIterator[bytes],
        length: int | None,
        content_type: str,
        preconditions: Preconditions,
    ) -> PutOutcome:
        """A conditional write: the conditions are evaluated on the current copy before any byte
        is sent, and the owner is told to write only if what it holds is still what it held,
        which makes it atomic on nodes that honour conditional writes (MinIO does)."""
        lookup = self._lookup
        node = placement.owner
        found, owner_copy = await lookup.current(object_id, placement=placement)
        current = None if found is None or found.info.deleted else found.info
        if preconditions.evaluate(current, reading=False) is not Verdict.PROCEED:
            raise PreconditionFailed("the object stored under this ID does not meet the conditions")
        unchanged = (
            WriteCondition(only_if_absent=True)
            if owner_copy is None
            else WriteCondition(only_if_etag=owner_copy.etag)
        )
        # Stamped after the lookup, so later than anything it saw.
        info = await lookup.storage.put(
            node,
            object_id,
            body,
            length,
            content_type,
            version=lookup.clock.next(),
            condition=unchanged,
        )
        return PutOutcome(info=info, created=current is None, node=node)


class _SlotAfterBody:
    """An upload's place in its node's cap, and its turn among the writes to its ID, taken when
    the client's body has ended."""

    __slots__ = ("_access", "_node", "_releases", "_turn")

    def __init__(
        self, access: NodeAccess, node: Node, turn: tuple[WriteLocks, str] | None = None
    ) -> None:
        self._access = access
        self._node = node
        self._turn = turn
        self._releases: list[Callable[[], None]] = []

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
        if self._turn is not None:
            locks, object_id = self._turn
            self._releases.append(await locks.acquire(object_id))
        self._releases.append(self._access.hold(self._node))
        if held is not None:
            yield held

    def release(self) -> None:
        while self._releases:
            self._releases.pop()()


class DeleteObject:
    """Delete the object stored under an ID: a tombstone, written to the ID's owner.

    The tombstone is a version of its own, newer than every copy before it, so no older copy left
    on another node (not yet rebalanced) can ever come back; the rebalance removes those copies,
    and the tombstone itself once it is alone and old. Idempotent, as in S3: 204 whether or not
    something was stored. One write, so all or nothing: a delete that fails changes nothing.
    """

    def __init__(self, lookup: ObjectLookup, replicas: Replicas | None = None) -> None:
        self._lookup = lookup
        self._replicas = replicas

    async def __call__(self, raw_object_id: str) -> Deleted:
        object_id = ObjectId(raw_object_id)
        if self._replicas is not None:
            outcome = await self._replicas.delete(object_id)
            return Deleted(outcome.node, outcome.copies)
        lookup = self._lookup
        owner = (await lookup.placement(object_id)).owner
        async with lookup.locks.held(object_id.value):
            version = lookup.clock.next()
            await lookup.access.call(
                owner,
                lambda: lookup.storage.put(
                    owner,
                    object_id,
                    _single(tombstone_body(version)),
                    TOMBSTONE_SIZE,
                    TOMBSTONE_CONTENT_TYPE,
                    version=version,
                    deleted=True,
                ),
            )
        return Deleted(owner)


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data
