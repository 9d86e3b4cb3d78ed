"""Listing what the fleet stores: every node's listing merged as it streams, one entry per ID.

S3 lists a bucket's keys in order, page by page, so the fleet's listing is a k-way merge of the
nodes' listings: memory is one node page each and the client's page, however many objects there
are. An ID may have several copies (replicas, a copy not rebalanced yet, a handoff); it is listed
once, as its newest copy has it, and not at all when that copy is a tombstone. The listing entries
carry no versions, so copies that could differ (ETags that disagree, or the size a tombstone has)
are asked for theirs with a HEAD; the common case (one copy, or copies that agree) costs nothing
more than the listing.
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncGenerator, Sequence

from application.copies import head_or_none
from application.fleet import Fleet
from application.node_access import NodeAccess
from domain.errors import GatewayError, InvalidObjectId, NodeUnavailable
from domain.listing import ListingEntry, ListingPage, ListingQuery
from domain.node import Node
from domain.object_id import ObjectId
from domain.objects import TOMBSTONE_SIZE, ListedObject, ObjectInfo
from domain.ports import ObjectStorage

__all__ = ["Copies", "ListObjects", "merged_listings"]

Copies = list[tuple[Node, ListedObject]]


async def merged_listings(
    storage: ObjectStorage,
    nodes: Sequence[Node],
    unlisted: dict[str, str] | None = None,
    *,
    prefix: str = "",
    start_after: str = "",
) -> AsyncGenerator[tuple[str, Copies], None]:
    """Every key held by any of ``nodes`` (under ``prefix``, after ``start_after``), in key order,
    with each node's listing entry for it.

    One page per node is held at a time. A node whose listing fails (or comes out of order) is
    recorded in ``unlisted`` and left out from there on; without ``unlisted``, its error is raised.
    """
    listings = [
        storage.list_objects(node, prefix=prefix, start_after=start_after) for node in nodes
    ]
    heap: list[tuple[str, int, ListedObject]] = []

    async def advance(index: int, previous: str | None) -> None:
        node = nodes[index]
        try:
            listed = await anext(listings[index], None)
            if listed is not None and previous is not None and listed.name <= previous:
                raise NodeUnavailable(node.name, "it lists its keys out of order")
        except GatewayError as exc:
            if unlisted is None:
                raise
            unlisted[node.name] = exc.detail
            return
        if listed is not None:
            heapq.heappush(heap, (listed.name, index, listed))

    try:
        for index in range(len(nodes)):
            await advance(index, None)
        while heap:
            key = heap[0][0]
            copies: Copies = []
            while heap and heap[0][0] == key:
                _, index, listed = heapq.heappop(heap)
                copies.append((nodes[index], listed))
                await advance(index, key)
            # Popped by (key, index): the copies are in the nodes' order.
            yield key, copies
    finally:
        # A listing left mid-way holds its node's connection until closed.
        for listing in listings:
            close = getattr(listing, "aclose", None)
            if close is not None:
                await close()


class ListObjects:
    """A page of the IDs the fleet stores, from every member's listing (``GET /object``)."""

    def __init__(self, fleet: Fleet, storage: ObjectStorage, access: NodeAccess) -> None:
        self._fleet = fleet
        self._storage = storage
        self._access = access

    async def page(self, query: ListingQuery) -> ListingPage:
        """Raises ``NodeUnavailable`` naming a member that cannot be listed: a page without it
        could miss IDs, or show as live an ID whose tombstone it holds."""
        membership = await self._fleet.membership()
        # A drained node holds nothing (that is what drained means): it is not asked.
        members = sorted(
            (node for node in membership.nodes.values() if node.name not in membership.drained),
            key=lambda node: node.name,
        )
        for node in members:
            if not node.is_up:
                raise NodeUnavailable(node.name, "the node is not running, so it cannot be listed")
        entries: list[ListingEntry] = []
        listing = merged_listings(
            self._storage, members, prefix=query.prefix, start_after=query.after or ""
        )
        try:
            async for key, copies in listing:
                if query.past_the_prefix(key):
                    break
                object_id = _object_id_or_none(key) if query.wants(key) else None
                if object_id is None:
                    continue  # a node that ignores prefix or start-after; the drain mark
                entry = await self._newest(object_id, copies)
                if entry is None:
                    continue
                if len(entries) == query.limit:
                    # One more exists: the page is full, and the client is told to go on.
                    return ListingPage(tuple(entries), next=entries[-1].object_id)
                entries.append(entry)
        finally:
            await listing.aclose()
        return ListingPage(tuple(entries), next=None)

    async def _newest(self, object_id: ObjectId, copies: Copies) -> ListingEntry | None:
        """The ID as its newest copy has it; None when that is a tombstone (or none is left)."""
        etags = {listed.etag for _, listed in copies}
        if len(etags) == 1 and all(listed.size != TOMBSTONE_SIZE for _, listed in copies):
            latest = max((listed for _, listed in copies), key=_listed_time)
            return ListingEntry(object_id.value, latest.size, latest.etag, latest.last_modified)
        infos: list[ObjectInfo] = []
        for node, _ in copies:
            info = await head_or_none(self._storage, self._access, node, object_id)
            if info is not None:
                infos.append(info)
        if not infos:
            return None  # deleted since the listing
        newest = max(infos, key=lambda info: info.rank)
        if newest.deleted:
            return None
        return ListingEntry(object_id.value, newest.size, newest.etag, newest.last_modified)


def _object_id_or_none(key: str) -> ObjectId | None:
    try:
        return ObjectId(key)
    except InvalidObjectId:
        return None


def _listed_time(listed: ListedObject) -> float:
    return 0.0 if listed.last_modified is None else listed.last_modified.timestamp()
