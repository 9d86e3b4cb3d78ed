"""What reads and writes leave for later, in the background, delaying no answer: a replica found
holding an older version gets the newest copied to it (read repair), and a node holding versions
that a newer one there made useless has them removed (always safe: the newer one is committed on
that very node)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from application.background import Background
from application.copies import copy_version
from application.fleet import Fleet
from application.holdings import Current, Holding
from application.node_access import NodeAccess
from application.tidying import Tidying
from domain.node import Node
from domain.object_id import ObjectId
from domain.objects import StoredVersion, abandoned, newest_committed
from domain.ports import ObjectStorage
from domain.versions import Version

__all__ = ["Upkeep"]


class Upkeep:
    def __init__(
        self,
        fleet: Fleet,
        storage: ObjectStorage,
        access: NodeAccess,
        repairs: Background,
        tidying: Tidying,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._fleet = fleet
        self._storage = storage
        self._access = access
        # Apart, so that one kind of work never crowds out the other (each has its own counts).
        self.repairs = repairs
        self.tidying = tidying
        self._wall_clock = wall_clock

    def after_read(self, current: Current) -> None:
        """Repair the replicas asked that lack the current version; tidy every node asked."""
        newest = current.newest
        if newest is None:
            return
        replicas = {node.name for node in current.replicas}
        stale = [
            h.node
            for h in current.holdings
            if h.node.name in replicas and (h.newest is None or h.newest.version < newest.version)
        ]
        holders = current.holders()
        if stale and holders:
            source, record = holders[0]
            self.repairs.submit(
                f"repair {current.object_id}",
                partial(self._repair, current.object_id, source, record, stale),
            )
        now = self._wall_clock()
        for holding in current.holdings:
            self.remove_later(current.object_id, holding.node, useless(holding, now))

    def after_write(
        self, object_id: ObjectId, placed: list[Node], before: Current | None, version: Version
    ) -> None:
        """Once ``version`` is committed on ``placed``, the older versions seen there are of no
        use."""
        if before is None:
            return
        held = {holding.node.name: holding for holding in before.holdings}
        for node in placed:
            holding = held.get(node.name)
            if holding is not None:
                older = [v for v in holding.versions if v.committed and v.version < version]
                self.remove_later(object_id, node, older)

    def remove_later(self, object_id: ObjectId, node: Node, versions: list[StoredVersion]) -> None:
        if versions:
            self.tidying.submit(object_id, node, versions)

    async def remove(self, object_id: ObjectId, node: Node, versions: list[StoredVersion]) -> None:
        for stored in versions:
            await self._access.call(node, partial(self._storage.remove, node, object_id, stored))

    async def _repair(
        self, object_id: ObjectId, source: Node, newest: StoredVersion, stale: list[Node]
    ) -> None:
        membership = await self._fleet.membership()
        for target in stale:
            legacy = membership.holds_legacy(target)
            held = await self._access.call(
                target, partial(self._storage.versions, target, object_id, legacy=legacy)
            )
            now = newest_committed(held)
            if now is not None and now.version >= newest.version:
                continue  # caught up meanwhile
            await copy_version(self._storage, self._access, source, target, object_id, newest)


def useless(holding: Holding, now: float) -> list[StoredVersion]:
    """What ``holding`` keeps that nothing needs: committed versions older than its newest (it
    holds a newer one itself), and pending writes no gateway will decide any more."""
    newest = holding.newest
    return [
        stored
        for stored in holding.versions
        if (stored.committed and newest is not None and stored.version < newest.version)
        or abandoned(stored, now)
    ]
