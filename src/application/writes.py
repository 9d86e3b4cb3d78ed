"""Writing a version of an ID to its N replicas at once, acknowledged once W of them hold it where
it may stay. One path for every N: with one copy per ID, the replica is the ID's owner.

Every write (a delete too: its tombstone) is a new version, stored as a record of its own beside
the ID's older ones. Nothing a write does can undo a newer version, and nothing a straggler of an
older write does later can undo this one: versions decide, not the order of arrival. The body
streams to every target at once (``Fanout``); a replica that cannot take it is replaced by the next
node of the walk (a handoff copy, which ``repair`` moves home), but only replicas count towards W.

A version counts on a node only once the node is known not to be draining when it took it
(``Fleet.confirm_placed``). A version that landed on a node marked meanwhile is copied to the ID's
replicas as they now are before the write is acknowledged: a drain never declares empty a node
that holds an acknowledged write, however slowly its body came and whichever gateway took it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from application.bodies import CommitGate, gathered, single
from application.fanout import Fanout
from application.placement import Placed, Placement, WriteCounts
from application.reads import Current, VersionReads
from domain.errors import (
    GatewayError,
    InvalidRequest,
    PreconditionFailed,
    QuorumUnavailable,
)
from domain.node import Node
from domain.object_id import ObjectId
from domain.objects import StoredVersion, VersionKind
from domain.sizes import SMALL_OBJECT_BYTES
from domain.versions import Version

__all__ = ["Placed", "VersionWrites", "WriteCounts", "Written"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Written:
    stored: StoredVersion  # as the first replica that took it holds it
    node: Node  # that replica (or the ID's first replica)
    placed: list[Placed]  # every node that holds it where it may stay
    created: bool  # nothing live was stored under the ID before it
    replicas: list[Node] = field(default_factory=list)  # the ID's replicas as it was acknowledged
    before: Current | None = None  # what the ID held as the write began (None: unknown)
    quorum: int = 1  # copies an acknowledgement needs (W, or fewer when fewer nodes exist)

    @property
    def copies(self) -> int:
        return len(self.placed)


class VersionWrites:
    def __init__(
        self,
        reads: VersionReads,
        *,
        max_write_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reads = reads
        self._fleet = reads.fleet
        self._storage = reads.storage
        self._access = reads.access
        self._policy = reads.policy
        self._max_write_seconds = max_write_seconds
        self._monotonic = monotonic
        self.placement = Placement(
            reads.fleet, reads.storage, reads.access, reads.policy, monotonic=monotonic
        )
        self.counts = self.placement.counts
        self._stragglers: set[asyncio.Future[Placed | _Unplaced]] = set()

    async def write(
        self,
        object_id: ObjectId,
        body: AsyncIterator[bytes],
        length: int | None,
        content_type: str,
        *,
        kind: VersionKind = VersionKind.DATA,
        ask_before: bool = True,
    ) -> Written:
        """Stream ``body`` to the ID's replicas as a new version; acknowledged at W.

        ``ask_before``: ask, beside the upload, what the ID held before (to tell whether the
        write created it, and to remove the older versions once this one is committed); a
        delete need not (reads remove what it made useless)."""
        started = self._monotonic()
        # Stamped when the request came: a write that ended before another began is older.
        version = self._reads.clock.next()
        if length is not None and length <= SMALL_OBJECT_BYTES:
            # Read whole first: its nodes are then chosen when it is all here, not before.
            body = single(await gathered(body, length))
        membership = await self._fleet.membership()
        replicas, targets = self.placement.targets(object_id, membership)
        before = asyncio.ensure_future(
            self._reads.current(object_id, tolerant=True, repair=False, older_than=version)
            if ask_before
            else _nothing()
        )
        try:
            gate = CommitGate(
                self._access, targets, started, self._max_write_seconds, self._monotonic
            )
            try:
                results = await self._send(
                    object_id,
                    version,
                    kind,
                    gate.body(body),
                    length,
                    content_type,
                    replicas,
                    targets,
                )
            finally:
                gate.release()
            placed = [result for result in results if isinstance(result, tuple)]
            committed = placed + [
                (node, result.stored)
                for node, result in zip(targets, results, strict=True)
                if isinstance(result, _Unplaced)
            ]
            replicas, on_replicas = await self.placement.settle(
                object_id, replicas, committed, placed
            )
            placed = on_replicas + [p for p in placed if p not in on_replicas]
            if len(on_replicas) < self.placement.need(replicas):
                raise self._refusal(results, replicas, len(on_replicas))
            try:
                existing = await before
            except GatewayError:
                existing = None  # it could not tell: the write itself is acknowledged
        finally:
            if not before.done():
                before.cancel()
                with contextlib.suppress(BaseException):
                    await before
        still_going = sum(1 for result in results if result is None)
        if len(placed) + still_going < self._policy.replicas:
            self.counts.degraded_writes += 1
        self.counts.handoff_copies += len(placed) - len(on_replicas)
        if kind is not VersionKind.PENDING:
            self._reads.upkeep.after_write(
                object_id, [node for node, _ in placed], existing, version
            )
        prior = None if existing is None else existing.newest
        node, stored = on_replicas[0]
        return Written(
            stored,
            node,
            placed,
            replicas=replicas,
            created=prior is None or prior.deleted,
            before=existing,
            quorum=self.placement.need(replicas),
        )

    async def _send(  # noqa: PLR0917 - one version, and where it goes
        self,
        object_id: ObjectId,
        version: Version,
        kind: VersionKind,
        body: AsyncIterator[bytes],
        length: int | None,
        content_type: str,
        replicas: list[Node],
        targets: list[Node],
    ) -> list[Placed | _Unplaced | BaseException | None]:
        """One PUT per target, all fed from ``body``: what each holds where it may stay, holds
        on a node marked meanwhile (``_Unplaced``), or raised (None: still going when W replicas
        held the write, which is then acknowledged)."""
        fanout = Fanout(body, len(targets))
        need = self.placement.need(replicas)
        going = [node in replicas for node in targets]  # replicas still taking it

        async def one(index: int, node: Node) -> Placed | _Unplaced:
            try:
                stored = await self._access.observe(
                    node,
                    lambda: self._storage.put(
                        node,
                        object_id,
                        version,
                        kind,
                        fanout.branch(index),
                        length,
                        content_type,
                    ),
                )
            except BaseException:
                going[index] = False
                if sum(going) < need:
                    # No quorum any more: the others stop before their last chunk, so that
                    # nothing is left on them that no one acknowledged.
                    fanout.fail(_QuorumLost())
                raise
            finally:
                fanout.drop(index)
            if await self._fleet.confirm_placed(node, self._monotonic()):
                return node, stored
            return _Unplaced(stored)

        tasks = [asyncio.ensure_future(one(index, node)) for index, node in enumerate(targets)]
        results: list[Placed | _Unplaced | BaseException | None] = [None] * len(tasks)
        pending = set(tasks)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    results[tasks.index(task)] = _outcome_of(task)
                held = sum(
                    1
                    for node, result in zip(targets, results, strict=True)
                    if node in replicas and isinstance(result, tuple)
                )
                if held >= need:
                    # Acknowledged: a slow target (a node about to time out) finishes on its own,
                    # and the client does not wait for it.
                    break
        except BaseException:
            for task in pending:
                task.cancel()
            raise
        for task in pending:
            self._stragglers.add(task)
            task.add_done_callback(self._straggler_done)
        return results

    def _straggler_done(self, task: asyncio.Future[Placed | _Unplaced]) -> None:
        self._stragglers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.counts.late_failures += 1

    def _refusal(
        self,
        results: list[Placed | _Unplaced | BaseException | None],
        replicas: list[Node],
        on_replicas: int,
    ) -> BaseException:
        """Why a write was not acknowledged: the client's fault first, then the nodes'."""
        for result in results:
            if isinstance(result, (InvalidRequest, PreconditionFailed)):
                return result  # the client's body, not the nodes
        for result in results:
            if isinstance(result, BaseException) and not isinstance(
                result, (GatewayError, _QuorumLost)
            ):
                return result
        failures = [result for result in results if isinstance(result, GatewayError)]
        if self._policy.single and failures:
            return failures[0]  # the owner's own reason
        self.counts.quorum_refusals += 1
        need = self.placement.need(replicas)
        return QuorumUnavailable(
            f"{on_replicas} of this ID's replicas took the write, and {need} must: "
            + "; ".join(str(failure) for failure in failures)
        )

    async def aclose(self) -> None:
        """At shutdown: stop the copies still going after their writes were acknowledged."""
        for task in list(self._stragglers):
            task.cancel()
        await asyncio.gather(*self._stragglers, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class _Unplaced:
    """Committed on a node that was marked to be drained: it may not stay there alone."""

    stored: StoredVersion


class _QuorumLost(Exception):
    """Too few replicas still take a write: it stops everywhere."""


def _outcome_of(task: asyncio.Future[Placed | _Unplaced]) -> Placed | _Unplaced | BaseException:
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception() or task.result()


async def _nothing() -> None:
    return None
