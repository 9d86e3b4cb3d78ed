"""Which version of an ID is current, and where: the one answer every use case shares.

A node keeps every version of an ID as a record of its own, so what it holds of the ID is one
listing. The ID's current version is the newest committed version among the nodes asked: R of its
replicas (its owner, with one copy per ID), and, unless the fleet is settled (no change of the
ring since a rebalance found every ID on its replicas), also the nodes the ID sat on before and any
draining node (either may hold a version newer than a replica's). No order of arrival can change
the answer: versions decide, never which record a node wrote last.

On the way, a replica found holding an older version gets the newest copied to it (read repair),
and a node holding older versions beside its newest has them removed: in the background, neither
delaying the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from application.fleet import Fleet
from application.holdings import Current, Holding
from application.membership import Membership
from application.node_access import NodeAccess
from application.quorum import ask_quorum
from application.upkeep import Upkeep
from domain.errors import (
    NodeUnavailable,
    NoNodesAvailable,
    ObjectKeptChanging,
    ObjectNotFound,
)
from domain.node import Node
from domain.object_id import ObjectId
from domain.objects import (
    ByteRange,
    ObjectInfo,
    StoredObject,
    StoredVersion,
    newest_committed,
)
from domain.ports import ObjectStorage
from domain.replication import ReplicationPolicy
from domain.versions import Version, VersionClock

__all__ = ["DEFAULT_FALLBACK_NODES", "Current", "Holding", "ReadCounts", "VersionReads"]

# Reads look on the replicas and on this many nodes after them: after one membership change an
# object not yet rebalanced sits on the first node after the newcomer; after two changes at once,
# on at most the second. Each extra node costs a request only when a replica has nothing.
DEFAULT_FALLBACK_NODES = 2
_T = TypeVar("_T")
# A read whose listed version vanished before it could be opened (moved by a rebalance, or
# replaced by a newer one and removed) looks again, this many times in all.
_ATTEMPTS = 3


@dataclass
class ReadCounts:
    # Requests refused because fewer replicas than the quorum could take part.
    quorum_refusals: int = 0
    # Reads that looked again: the version they found was gone before it could be opened.
    looked_again: int = 0


class VersionReads:
    def __init__(  # noqa: PLR0917 - the ports and policies a read needs
        self,
        fleet: Fleet,
        storage: ObjectStorage,
        access: NodeAccess,
        clock: VersionClock,
        policy: ReplicationPolicy,
        upkeep: Upkeep,
        *,
        fallback_nodes: int = DEFAULT_FALLBACK_NODES,
    ) -> None:
        if fallback_nodes < 0:
            raise ValueError("fallback_nodes must not be negative")
        self.fleet = fleet
        self.storage = storage
        self.access = access
        self.clock = clock
        self.policy = policy
        self.upkeep = upkeep
        self.fallback_nodes = fallback_nodes
        self.counts = ReadCounts()

    # -- what is current --------------------------------------------------------------------

    async def current(
        self,
        object_id: ObjectId,
        *,
        tolerant: bool = False,
        repair: bool = True,
        older_than: Version | None = None,
    ) -> Current:
        """The ID's current version among R replicas and, when needed, the nodes after them.

        ``tolerant``: nodes that cannot be asked count as holding nothing (what a write asks to
        tell 201 from 200, which must not fail the write). ``older_than``: only versions older
        than it count (a write asking what preceded it, which it may have landed beside)."""
        membership = await self.fleet.membership()
        replicas = membership.write_walk(object_id, self.policy.replicas)
        if not replicas:
            raise NoNodesAvailable("no storage node can take this ID")
        need = min(self.policy.read_quorum, len(replicas))
        holdings = await ask_quorum(
            replicas,
            need,
            lambda node: self.holding(node, object_id, membership),
            available=self.access.available,
            tolerant=tolerant,
            on_refusal=self._refused,
        )
        answered = len(holdings)
        asked = {holding.node.name for holding in holdings}
        if older_than is not None:
            holdings = [holding.before(older_than) for holding in holdings]
        if not membership.settled or answered < need:
            # The ring changed since a rebalance last found every ID on its replicas (a node
            # joined, left, drained or came back): the newest version may still sit where the
            # ID was before, or on a draining node. Those nodes are asked too.
            others = [
                node
                for node in membership.preference_of(
                    object_id, self.policy.replicas + self.fallback_nodes
                )
                if node.name not in asked
            ]
            # With one copy per ID, a node that may hold it and cannot be asked makes a miss
            # unknowable (503, not 404); the owner's own version is served rather than a 503
            # for a node further along that cannot be asked (a node down must cost no more than
            # its own IDs). With replicas, the quorum has answered for the ID.
            strict = (
                self.policy.single
                and not tolerant
                and all(holding.newest is None for holding in holdings)
            )
            found = await self.holdings(object_id, others, membership, strict=strict)
            if older_than is not None:
                found = [holding.before(older_than) for holding in found]
            holdings += found
        newest = newest_committed([v for holding in holdings for v in holding.versions])
        current = Current(object_id, replicas, holdings, answered, newest)
        if repair:
            self.upkeep.after_read(current)
        return current

    async def holding(self, node: Node, object_id: ObjectId, membership: Membership) -> Holding:
        """What ``node`` holds of the ID (one listing); its newest version moves this gateway's
        clock past it."""
        if not node.is_up:
            raise NodeUnavailable(node.name, "the node is not running")
        legacy = membership.holds_legacy(node)
        versions = await self.access.call(
            node, lambda: self.storage.versions(node, object_id, legacy=legacy)
        )
        newest = newest_committed(versions)
        if newest is not None:
            self.clock.observe(newest.version)
        return Holding(node, versions)

    async def holdings(
        self, object_id: ObjectId, nodes: list[Node], membership: Membership, *, strict: bool
    ) -> list[Holding]:
        """What ``nodes`` hold (asked at once); one that cannot be asked fails the lookup when
        ``strict``, else counts as holding nothing."""
        if strict:
            for node in nodes:
                if not node.is_up:
                    raise NodeUnavailable(
                        node.name, "the node is not running, and it may hold this ID"
                    )

        async def ask(node: Node) -> Holding | None:
            try:
                return await self.holding(node, object_id, membership)
            except NodeUnavailable:
                if strict:
                    raise
                return None

        answers = await asyncio.gather(*(ask(node) for node in nodes if node.is_up))
        return [holding for holding in answers if holding is not None]

    def _refused(self) -> None:
        self.counts.quorum_refusals += 1

    # -- reading the current version --------------------------------------------------------

    async def open(
        self, object_id: ObjectId, byte_range: ByteRange | None = None
    ) -> tuple[Current, tuple[Node, StoredObject] | None]:
        """The current version opened for reading (None: there is none, or it is a tombstone).

        A version listed a moment ago may be gone when it is opened: a rebalance moved it, or a
        newer version was committed and the older removed. The read then looks again."""
        for attempt in range(_ATTEMPTS):
            current = await self.current(object_id, repair=attempt == 0)
            live = current.live
            if live is None:
                return current, None
            try:
                return current, await self._first_of(
                    current.holders(), partial(_open, self.storage, object_id, byte_range)
                )
            except ObjectNotFound:
                self.counts.looked_again += 1
        raise ObjectKeptChanging(
            "the object's versions moved under every attempt to read them; retry",
        )

    async def info(self, object_id: ObjectId) -> tuple[Current, tuple[Node, ObjectInfo] | None]:
        """What is served of the current version (None: none, or a tombstone), found as ``open``
        finds it."""
        for attempt in range(_ATTEMPTS):
            current = await self.current(object_id, repair=attempt == 0)
            live = current.live
            if live is None:
                return current, None
            try:
                return current, await self._first_of(
                    current.holders(), partial(_head, self.storage, object_id)
                )
            except ObjectNotFound:
                self.counts.looked_again += 1
        raise ObjectKeptChanging("the object's versions moved under every attempt to read them")

    async def _first_of(
        self,
        holders: list[tuple[Node, StoredVersion]],
        operation: Callable[[StoredVersion, Node], Awaitable[_T]],
    ) -> tuple[Node, _T]:
        """``operation`` on the first of ``holders`` that can be asked (each with its own record
        of the version). ``ObjectNotFound`` when none holds it any more: the read then looks
        again, whole."""
        failure: NodeUnavailable | None = None
        for node, record in holders:
            try:
                return node, await self.access.call(node, partial(operation, record, node))
            except NodeUnavailable as exc:
                failure = exc
            except ObjectNotFound:
                continue  # removed here since the listing: another holder may still have it
        if failure is not None:
            raise failure
        raise ObjectNotFound("no node holds the version any more")


def _open(
    storage: ObjectStorage,
    object_id: ObjectId,
    byte_range: ByteRange | None,
    stored: StoredVersion,
    node: Node,
) -> Awaitable[StoredObject]:
    return storage.open(node, object_id, stored, byte_range)


def _head(
    storage: ObjectStorage, object_id: ObjectId, stored: StoredVersion, node: Node
) -> Awaitable[ObjectInfo]:
    return storage.head(node, object_id, stored)
