"""Putting one ID right: its newest version on each of its replicas, nothing anywhere else.

Versions are records that are never changed, only added and removed, so each step is safe on its
own, whatever runs beside it (a client's write through any gateway, a read repair, another pass):

1. what the ID's replicas and holders hold now is asked afresh (membership too, as it is now);
2. each replica lacking the newest committed version gets it copied, as it is; a copy to a node
   marked meanwhile to be drained does not count (``Fleet.confirm_placed``), and is left;
3. only once every replica is seen holding it are older versions removed: on the replicas those
   older than it, elsewhere those not newer (a newer one there, written since, is left for the
   next pass); an object under the old layout is removed once its version has a key of its own;
4. a tombstone alone on the replicas, past its grace period, with every node listed, is removed.

Removing a version only ever removes that record: a write landing meanwhile is a record of its
own, and stays.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import partial

from application.copies import copy_version
from application.fleet import Fleet
from application.node_access import NodeAccess
from application.walks import Held
from domain.node import Node
from domain.object_id import ObjectId
from domain.objects import StoredVersion, abandoned, newest_committed
from domain.ports import ObjectStorage

__all__ = ["Outcome", "Settle", "StepResult"]


class Outcome(StrEnum):
    MOVED = "moved"  # the newest version was copied to a replica; the others removed
    STALE_DELETED = "stale_deleted"  # the replicas held the newest already; the others removed
    PURGED = "purged"  # a tombstone alone and past its grace period, removed
    LEFT = "left"  # something changed meanwhile, or cannot be done now: for the next pass
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class StepResult:
    object_id: str
    holders: tuple[str, ...]
    owner: str
    size: int
    outcome: Outcome
    detail: str = ""
    # Objects under the old layout this step removed (their versions have keys now), by node.
    migrated: tuple[str, ...] = ()


class Settle:
    def __init__(
        self,
        fleet: Fleet,
        storage: ObjectStorage,
        access: NodeAccess,
        replicas: int,
        *,
        tombstone_grace_seconds: float,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fleet = fleet
        self._storage = storage
        self._access = access
        self._replicas = replicas
        self._grace = tombstone_grace_seconds
        self._wall_clock = wall_clock
        self._monotonic = monotonic

    def in_place(self, held: Held, replicas: list[Node], *, purge_allowed: bool) -> bool:
        """Held by exactly its replicas, each with only the newest version under its own key
        (pending writes still being decided aside), and not a tombstone due for removal."""
        now = self._wall_clock()
        newest = newest_committed([v for _, versions in held for v in versions])
        names = {node.name for node in replicas}
        holders = set()
        for node, versions in held:
            kept = [v for v in versions if v.committed or abandoned(v, now)]
            if not kept:
                continue
            if node.name not in names or len(kept) != 1:
                return False
            only = kept[0]
            if newest is None or only.version != newest.version or only.legacy:
                return False
            holders.add(node.name)
        if newest is None:
            return True  # only pending writes, still being decided
        if holders != names:
            return False
        return not (purge_allowed and newest.deleted and self._due(newest))

    def _due(self, tombstone: StoredVersion) -> bool:
        return self._wall_clock() - tombstone.version.seconds >= self._grace

    async def step(  # noqa: PLR0911 - one outcome per way a step can end
        self, object_id: ObjectId, held: Held, *, purge_allowed: bool
    ) -> StepResult | None:
        """Settle the ID; what was done (None: nothing was needed any more)."""
        membership = await self._fleet.membership()
        replicas = membership.write_walk(object_id, self._replicas)
        names = {node.name for node in replicas}
        nodes = list(replicas) + [
            node for node, _ in held if node.name not in names and node.name in membership.nodes
        ]
        size = max((v.size for _, versions in held for v in versions), default=0)

        def result(
            outcome: Outcome, detail: str = "", migrated: tuple[str, ...] = ()
        ) -> StepResult:
            return StepResult(
                object_id.value,
                tuple(node.name for node, _ in held),
                replicas[0].name,
                size,
                outcome,
                detail,
                migrated,
            )

        fresh = await self._ask(object_id, nodes, membership.holds_legacy)
        newest = newest_committed([v for versions in fresh.values() for v in versions])
        moved = False
        if newest is not None:
            for replica in replicas:
                if _holds(fresh[replica.name], newest):
                    continue
                source = next(n for n in nodes if _holds(fresh[n.name], newest, legacy=True))
                await copy_version(self._storage, self._access, source, replica, object_id, newest)
                if not await self._fleet.confirm_placed(replica, self._monotonic()):
                    return result(Outcome.LEFT, f"{replica.name} is being drained")
                moved = True
            if moved:
                again = await self._ask(object_id, replicas, membership.holds_legacy)
                if not all(_holds(again[r.name], newest) for r in replicas):
                    return result(Outcome.LEFT, "a replica does not hold the newest version")
        now = self._wall_clock()
        removed, migrated, newer = await self._remove_older(
            object_id, nodes, names, fresh, newest, now
        )
        if newer:
            return result(Outcome.LEFT, f"a newer version appeared on {newer}", migrated)
        if (
            newest is not None
            and newest.deleted
            and purge_allowed
            and self._due(newest)
            and all(not fresh[n.name] or n.name in names for n in nodes)
        ):
            for replica in replicas:
                await self._remove(replica, object_id, [newest])
            return result(Outcome.PURGED, "", migrated)
        if moved:
            return result(Outcome.MOVED, "", migrated)
        if removed:
            return result(Outcome.STALE_DELETED, "", migrated)
        return None  # in place by the time its turn came (a write or a tidy-up settled it)

    async def _remove_older(  # noqa: PLR0917 - the step's view of the ID
        self,
        object_id: ObjectId,
        nodes: list[Node],
        replica_names: set[str],
        fresh: dict[str, list[StoredVersion]],
        newest: StoredVersion | None,
        now: float,
    ) -> tuple[bool, tuple[str, ...], str | None]:
        """Whether anything was removed, the nodes whose old-layout object went, and a node
        found holding a version newer than ``newest`` (written since)."""
        removed = False
        migrated: list[str] = []
        newer: str | None = None
        for node in nodes:
            versions = fresh[node.name]
            useless = [v for v in versions if abandoned(v, now)]
            if newest is not None:
                if node.name in replica_names:
                    # The newest is under its own key here: everything older is of no use.
                    useless += [v for v in versions if v.committed and v.version < newest.version]
                    useless += [v for v in versions if v.legacy and v.version == newest.version]
                else:
                    useless += [v for v in versions if v.committed and v.version <= newest.version]
                    if any(v.committed and v.version > newest.version for v in versions):
                        newer = node.name
            if useless:
                await self._remove(node, object_id, useless)
                removed = True
                if any(v.legacy for v in useless):
                    migrated.append(node.name)
        return removed, tuple(migrated), newer

    async def _ask(
        self, object_id: ObjectId, nodes: list[Node], legacy: Callable[[Node], bool]
    ) -> dict[str, list[StoredVersion]]:
        async def versions(node: Node) -> list[StoredVersion]:
            return await self._access.call(
                node, lambda: self._storage.versions(node, object_id, legacy=legacy(node))
            )

        found = await asyncio.gather(*(versions(node) for node in nodes), return_exceptions=True)
        for answer in found:
            if isinstance(answer, BaseException):
                raise answer
        return {node.name: answer for node, answer in zip(nodes, found, strict=True)}  # type: ignore[misc]

    async def _remove(self, node: Node, object_id: ObjectId, versions: list[StoredVersion]) -> None:
        for stored in versions:
            await self._access.call(node, partial(self._storage.remove, node, object_id, stored))


def _holds(versions: list[StoredVersion], wanted: StoredVersion, *, legacy: bool = False) -> bool:
    """Whether ``versions`` include ``wanted`` (under its own key, unless ``legacy``)."""
    return any(
        v.version == wanted.version and v.kind is wanted.kind and (legacy or not v.legacy)
        for v in versions
    )
