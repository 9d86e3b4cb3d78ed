"""Listing what the fleet stores (``GET /objects``): every member's walk merged as it streams, one
entry per ID, as its newest committed version has it; none for an ID whose newest is a tombstone.

A version's key says what it is (data, tombstone, pending), so the walk alone answers: no node is
asked anything more, except for an object still kept under the old layout (its version is in its
metadata). The work of one page is bounded: the IDs looked at without being listed (deleted ones,
above all) count against a scan budget, and a page may come back short, even empty, with a
``next`` to go on from.
"""

from __future__ import annotations

from application.fleet import Fleet
from application.walks import Held, merged_walk
from domain.errors import InvalidObjectId, NodeUnavailable
from domain.listing import ListingEntry, ListingPage, ListingQuery
from domain.object_id import ObjectId
from domain.objects import moment_of, newest_committed
from domain.ports import ObjectStorage

__all__ = ["DEFAULT_SCAN_BUDGET", "ListObjects"]

# IDs a page may look at without listing them (deleted, or not IDs at all) before it returns.
DEFAULT_SCAN_BUDGET = 1000


class ListObjects:
    """A page of the IDs the fleet stores, from every member's walk."""

    def __init__(
        self, fleet: Fleet, storage: ObjectStorage, *, scan_budget: int = DEFAULT_SCAN_BUDGET
    ) -> None:
        self._fleet = fleet
        self._storage = storage
        self._scan_budget = scan_budget

    async def page(self, query: ListingQuery) -> ListingPage:
        """Raises ``NodeUnavailable`` naming a member that cannot be listed: a page without it
        could miss IDs, or list an ID whose tombstone it holds."""
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
        budget = self._scan_budget
        last_id: str | None = None
        walk = merged_walk(
            self._storage,
            members,
            legacy_on=membership.holds_legacy,
            prefix=query.prefix,
            start_after=query.after or "",
        )
        try:
            async for raw_id, held in walk:
                if query.past_the_prefix(raw_id):
                    break
                if not query.wants(raw_id) or not _is_id(raw_id):
                    continue  # a node that ignores prefix or start-after; someone else's key
                entry = _entry(raw_id, held)
                if entry is None:
                    last_id = raw_id
                    budget -= 1
                    if budget <= 0:
                        # Enough looked at for one page: the client goes on from here.
                        return ListingPage(tuple(entries), next=last_id)
                    continue
                if len(entries) == query.limit:
                    # One more exists: the page is full, and the client is told to go on.
                    return ListingPage(tuple(entries), next=entries[-1].object_id)
                entries.append(entry)
        finally:
            await walk.aclose()
        return ListingPage(tuple(entries), next=None)


def _entry(raw_id: str, held: Held) -> ListingEntry | None:
    """The ID as its newest committed version has it; None for a tombstone."""
    newest = newest_committed([v for _, versions in held for v in versions])
    if newest is None or newest.deleted:
        return None
    return ListingEntry(raw_id, newest.size, newest.etag, moment_of(newest.version))


def _is_id(raw_id: str) -> bool:
    try:
        ObjectId(raw_id)
    except InvalidObjectId:
        return False
    return True
