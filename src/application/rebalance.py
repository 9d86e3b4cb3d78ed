"""Putting every ID's newest version on its replicas, and nothing anywhere else; emptying draining
nodes; moving objects kept under the old layout to keys of their own (``repair`` is this too).

The ring decides where a write goes; it does not prove where an object is. After nodes join, leave
or drain, versions of an ID may sit on several nodes. A pass walks every node, page by page, and
merges the walks (S3 lists keys in order), so each ID comes up once with what every node holds of
it: memory is a page per node, whatever the number of objects. Each ID not in place is settled
(``Settle``), several at once, each with the membership as it is when its turn comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from application.fleet import Fleet
from application.membership import Membership
from application.node_access import NodeAccess
from application.settle import Outcome, Settle, StepResult
from application.walks import Held, merged_walk
from domain.errors import GatewayError, InvalidObjectId
from domain.node import Node
from domain.object_id import ObjectId
from domain.ports import NodeMarking, ObjectStorage

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_TOMBSTONE_GRACE_SECONDS",
    "Outcome",
    "Rebalance",
    "RebalanceReporter",
    "RebalanceSummary",
    "StepResult",
    "Survey",
]

logger = logging.getLogger(__name__)

# Objects settled at once: enough to overlap one move's round trips with another's.
DEFAULT_CONCURRENCY = 4
# A tombstone must outlive every older version it covers. Versions it covers are removed by the
# pass that finds them; the grace is for one no pass could see: on a node that was down or left
# the fleet and comes back. A day, as Garage keeps them (Swift keeps a week, Cassandra ten days).
DEFAULT_TOMBSTONE_GRACE_SECONDS = 24 * 3600.0


@dataclass
class Survey:
    """What a look at every node found (nothing was changed)."""

    misplaced: int = 0
    misplaced_bytes: int = 0
    in_place: int = 0
    # Nodes that are down or could not be listed (whole or in part): their objects are unknown.
    unlisted: dict[str, str] = field(default_factory=dict)
    # Keys that are not object IDs (someone else's objects in the bucket): left alone.
    foreign_keys: int = 0
    draining: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.unlisted


@dataclass
class RebalanceSummary:
    moved: int = 0
    stale_deleted: int = 0
    purged: int = 0
    left: int = 0
    failed: int = 0
    bytes_moved: int = 0
    unlisted_nodes: int = 0

    @property
    def everything_in_place(self) -> bool:
        return self.failed == 0 and self.left == 0 and self.unlisted_nodes == 0

    def count(self, result: StepResult) -> None:
        if result.outcome is Outcome.MOVED:
            self.moved += 1
            self.bytes_moved += result.size
        elif result.outcome is Outcome.STALE_DELETED:
            self.stale_deleted += 1
        elif result.outcome is Outcome.PURGED:
            self.purged += 1
        elif result.outcome is Outcome.LEFT:
            self.left += 1
        else:
            self.failed += 1


class RebalanceReporter(Protocol):
    """Where a rebalance tells how it goes (the admin API streams it as JSON lines)."""

    def surveyed(self, survey: Survey) -> None: ...

    def planned_move(self, object_id: str, holders: Sequence[str], owner: str, size: int) -> None:
        """A move a dry run would make."""
        ...

    def step(self, result: StepResult) -> None: ...

    def finished(self, summary: RebalanceSummary) -> None: ...

    def ring(self, fingerprint: str, settled: bool) -> None:
        """Whether the fleet is now marked settled by the ring of ``fingerprint``."""
        ...


class Rebalance:
    """A pass over every node: what is out of place, and (``execute``) putting it right.

    Placement is the write ring as it is when each ID's turn comes: draining nodes own nothing,
    so everything on them moves.
    """

    def __init__(
        self,
        fleet: Fleet,
        storage: ObjectStorage,
        access: NodeAccess,
        marks: NodeMarking,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        replicas: int = 1,
        tombstone_grace_seconds: float = DEFAULT_TOMBSTONE_GRACE_SECONDS,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._fleet = fleet
        self._sleep = sleep
        self._storage = storage
        self._marks = marks
        self._concurrency = max(1, concurrency)
        self._replica_count = replicas
        self._settle = Settle(
            fleet,
            storage,
            access,
            replicas,
            tombstone_grace_seconds=tombstone_grace_seconds,
            wall_clock=wall_clock,
        )

    async def survey(self, reporter: RebalanceReporter | None = None) -> Survey:
        """Look at every node and count what is out of place; a dry run reports each move."""
        membership = await self._fleet.membership()
        survey = Survey(draining=tuple(sorted(membership.draining)))
        async for object_id, held, _ in self._walk(survey, membership):
            replicas = membership.write_walk(object_id, self._replica_count)
            if self._settle.in_place(held, replicas, purge_allowed=survey.complete):
                survey.in_place += 1
                continue
            size = max((v.size for _, versions in held for v in versions), default=0)
            survey.misplaced += 1
            survey.misplaced_bytes += size
            if reporter is not None:
                reporter.planned_move(
                    object_id.value, [node.name for node, _ in held], replicas[0].name, size
                )
        return survey

    async def execute(self, reporter: RebalanceReporter) -> RebalanceSummary:
        """Put every ID's newest version on each of its replicas, and remove the others."""
        membership = await self._fleet.membership()
        summary = RebalanceSummary()
        survey = Survey()
        slots = asyncio.Semaphore(self._concurrency)
        running: set[asyncio.Task[None]] = set()
        legacy_seen: dict[str, int] = {}
        legacy_gone: dict[str, int] = {}

        async def one(object_id: ObjectId, held: Held, purge_allowed: bool) -> None:
            try:
                result = await self._step(object_id, held, purge_allowed)
            finally:
                slots.release()
            if result is None:
                return
            for name in result.migrated:
                legacy_gone[name] = legacy_gone.get(name, 0) + 1
            summary.count(result)
            reporter.step(result)

        async for object_id, held, legacy in self._walk(survey, membership):
            for name in legacy:
                legacy_seen[name] = legacy_seen.get(name, 0) + 1
            current = await self._fleet.membership()
            replicas = current.write_walk(object_id, self._replica_count)
            if self._settle.in_place(held, replicas, purge_allowed=survey.complete):
                continue  # the common case: where it belongs
            await slots.acquire()
            task = asyncio.create_task(one(object_id, held, purge_allowed=survey.complete))
            running.add(task)
            task.add_done_callback(running.discard)
        while running:
            await asyncio.gather(*running)
        summary.unlisted_nodes = len(survey.unlisted)
        await self._record_migrated(membership, survey, legacy_seen, legacy_gone)
        reporter.finished(summary)
        return summary

    async def settle_ring(self, reporter: RebalanceReporter) -> bool:
        """After a pass that left everything in place: mark the fleet settled by the ring it has,
        so that reads ask an ID's replicas and no one else. In two steps, as a drain: every
        member is marked *settling* first (a gateway whose writes follow another ring then
        looks again before it acknowledges one), and only once every write acknowledged on the
        strength of an older look must have landed (the ack window) and a survey still finds
        everything in place are they marked *settled*. False (and no mark) otherwise."""
        membership = await self._fleet.membership()
        fingerprint = membership.fingerprint
        nodes = list(membership.nodes.values())
        marking = self._marks
        try:
            if not nodes or not all(node.is_up for node in nodes):
                reporter.ring(fingerprint, settled=False)
                return False
            if not membership.settled:
                for node in nodes:
                    await marking.mark_ring(node, fingerprint, settled=False)
                await self._fleet.refresh_drain_marks()
                await self._sleep(self._fleet.ack_window_seconds + 1)
                survey = await self.survey()
                now = await self._fleet.membership()
                if not survey.complete or survey.misplaced or now.fingerprint != fingerprint:
                    for node in nodes:
                        with contextlib.suppress(GatewayError):
                            await marking.unmark_ring(node)
                    reporter.ring(fingerprint, settled=False)
                    return False
                for node in nodes:
                    await marking.mark_ring(node, fingerprint, settled=True)
                await self._fleet.refresh_drain_marks()
            reporter.ring(fingerprint, settled=True)
            return True
        except GatewayError as exc:
            logger.info("marking the fleet settled: %s", exc.detail)
            reporter.ring(fingerprint, settled=False)
            return False

    async def _step(
        self, object_id: ObjectId, held: Held, purge_allowed: bool
    ) -> StepResult | None:
        try:
            return await self._settle.step(object_id, held, purge_allowed=purge_allowed)
        except GatewayError as exc:
            detail = exc.detail
        except Exception as exc:
            # A bug, not a node's failure: it fails this step, loudly, and never passes for done.
            logger.exception("settling %s failed", object_id)
            detail = f"unexpected error: {exc!r}"
        owner = (await self._fleet.membership()).write_walk(object_id, 1)
        return StepResult(
            object_id.value,
            tuple(node.name for node, _ in held),
            owner[0].name if owner else "",
            max((v.size for _, versions in held for v in versions), default=0),
            Outcome.FAILED,
            detail,
        )

    async def _record_migrated(
        self,
        membership: Membership,
        survey: Survey,
        seen: dict[str, int],
        gone: dict[str, int],
    ) -> None:
        """Nodes walked whole whose every old-layout object now has a key of its own are marked
        so: reads there stop looking for one."""
        for node in self._members(membership):
            name = node.name
            if name in survey.unlisted or not membership.holds_legacy(node):
                continue
            if seen.get(name, 0) == gone.get(name, 0):
                try:
                    await self._marks.mark_migrated(node)
                except GatewayError as exc:
                    logger.info("marking %s migrated: %s", name, exc.detail)

    @staticmethod
    def _members(membership: Membership) -> list[Node]:
        return sorted(membership.nodes.values(), key=lambda node: node.name)

    async def _walk(
        self, survey: Survey, membership: Membership
    ) -> AsyncIterator[tuple[ObjectId, Held, list[str]]]:
        listed = []
        for node in self._members(membership):
            if node.is_up:
                listed.append(node)
            else:
                survey.unlisted[node.name] = "the node is not running"
        async for raw_id, held in merged_walk(
            self._storage, listed, survey.unlisted, legacy_on=membership.holds_legacy
        ):
            try:
                object_id = ObjectId(raw_id)
            except InvalidObjectId:
                survey.foreign_keys += 1
                continue
            legacy = [node.name for node, versions in held if any(v.legacy for v in versions)]
            yield object_id, held, legacy
