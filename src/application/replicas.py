"""N copies of every object: writes to N nodes at once, acknowledged at W; reads from R, served
from the newest; stale replicas repaired on the way (``GATEWAY_REPLICAS`` above 1).

An ID's replicas are the first N distinct nodes of its walk on the write ring. A write streams the
client's body once, to all of them at the same time (``Fanout``: at the slowest one's pace, a chunk
in memory), and to the next nodes of the walk in place of replicas that are down or resting
(handoff copies, which the repair command moves home), so that N copies exist whenever N nodes are
up. Only copies on replicas count towards W: every acknowledged write is then on W replicas, and a
read of R replicas, R + W > N, meets it. A read asks R replicas (the next ones when one fails),
and when one of them has nothing (a replica that joined since, or was replaced by an empty one),
also the nodes the ID sat on before; it serves the newest copy (a tombstone is a 404), and writes
it over the replicas that answered with an older one or none (read repair).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from application.fanout import Fanout
from application.objects import Found, ObjectLookup, PutOutcome, newest
from application.read_repair import ReadRepair
from domain.conditions import Preconditions, Verdict
from domain.errors import (
    GatewayError,
    InvalidRequest,
    NodeUnavailable,
    NoNodesAvailable,
    ObjectNotFound,
    PreconditionFailed,
    QuorumUnavailable,
    RangeNotSatisfiable,
)
from domain.node import Node
from domain.object_id import ObjectId
from domain.objects import (
    TOMBSTONE_CONTENT_TYPE,
    ByteRange,
    ObjectInfo,
    StoredObject,
    WriteCondition,
    tombstone_body,
)
from domain.replication import ReplicationPolicy
from domain.versions import Version

__all__ = ["ReplicaCounts", "Replicas", "ReplicatedRead"]


@dataclass
class ReplicaCounts:
    # Acknowledged with fewer than N copies (some replica down, and no node to hand off to).
    degraded_writes: int = 0
    # Copies written to a node in place of a replica that could not take them.
    handoff_copies: int = 0
    # Requests refused because fewer replicas than the quorum could take part.
    quorum_refusals: int = 0
    # Writes dropped before they committed: a concurrent, later write to the ID committed first.
    superseded_writes: int = 0
    # Copies that failed after their write was acknowledged without waiting for them.
    late_failures: int = 0


@dataclass
class ReplicatedRead:
    found: Found | None  # the newest copy (a tombstone too); None: none anywhere asked
    stored: StoredObject | None  # that copy opened for reading, when the body was asked for
    primary: Node  # the ID's first replica: it answers for the ID in logs
    replicas: list[Node]
    answered: int  # replicas that answered


class Replicas:
    def __init__(
        self, lookup: ObjectLookup, policy: ReplicationPolicy, repairs: ReadRepair
    ) -> None:
        self._lookup = lookup
        self._policy = policy
        self._repairs = repairs
        self.counts = ReplicaCounts()
        self._commits = _RecentCommits()
        self._stragglers: set[asyncio.Future[ObjectInfo]] = set()

    # -- reads ------------------------------------------------------------------------------

    async def read(
        self,
        object_id: ObjectId,
        *,
        body: bool,
        byte_range: ByteRange | None = None,
        tolerant: bool = False,
        repair: bool = True,
    ) -> ReplicatedRead:
        """The newest copy among R replicas (and the nodes the ID sat on before, when one of them
        has nothing). ``tolerant``: fewer than R answering is no failure (what a write asks to
        tell 201 from 200).

        With ``body``, the first replica is asked for the object itself while HEADs ask the
        others: when it holds the newest copy (nearly always), one round trip serves the read."""
        lookup = self._lookup
        membership = await lookup.fleet.membership()
        replicas = membership.write_walk(object_id, self._policy.replicas)
        if not replicas:
            raise NoNodesAvailable("no storage node can take this ID")
        need = min(self._policy.read_quorum, len(replicas))
        opened: dict[str, StoredObject] = {}
        try:
            answers = await self._ask(
                object_id,
                replicas,
                need,
                tolerant=tolerant,
                opener=(lambda node: self._lookup.open(node, object_id, byte_range))
                if body
                else None,
                opened=opened,
            )
            asked = {node.name for node, _ in answers}
            copies = [Found(info, node) for node, info in answers if info is not None]
            if len(copies) < len(answers) or membership.draining:
                # A replica with nothing may be one that joined since the ID was written: the
                # nodes it sat on before are asked too (those that cannot be asked are passed
                # over), as are the replicas beyond R.
                others = [
                    node
                    for node in membership.preference_of(
                        object_id, self._policy.replicas + lookup.fallback_nodes
                    )
                    if node.name not in asked
                ]
                copies += await lookup.copies(object_id, others, tolerant=True)
            best = newest(copies)
            if repair and best is not None:
                stale = [
                    node
                    for node, info in answers
                    if node in replicas and (info is None or info.rank < best.info.rank)
                ]
                self._repairs.schedule(object_id, best.node, best.info, stale)
            stored = None
            if body and best is not None and not best.info.deleted:
                stored = opened.pop(best.node.name, None)
                if stored is None or stored.info.rank != best.info.rank:
                    stored = await self._lookup.open(best.node, object_id, byte_range)
        finally:
            for unused in opened.values():
                await unused.close()
        return ReplicatedRead(best, stored, replicas[0], replicas, len(answers))

    async def _ask(
        self,
        object_id: ObjectId,
        replicas: list[Node],
        need: int,
        *,
        tolerant: bool,
        opener: Callable[[Node], Awaitable[StoredObject]] | None = None,
        opened: dict[str, StoredObject] | None = None,
    ) -> list[tuple[Node, ObjectInfo | None]]:
        """Ask ``need`` replicas at once (the first with ``opener``, if given, the others with a
        HEAD); one that fails is replaced by the next."""
        lookup = self._lookup
        waiting = [node for node in replicas if lookup.access.available(node)]
        if len(waiting) < need and not tolerant:
            self.counts.quorum_refusals += 1
            raise QuorumUnavailable(
                f"{len(waiting)} of this ID's {len(replicas)} replicas can be asked, and "
                f"{need} must answer"
            )
        answers: list[tuple[Node, ObjectInfo | None]] = []
        failures: list[str] = []
        running: dict[asyncio.Future[ObjectInfo | None], Node] = {}

        async def open_one(node: Node) -> ObjectInfo | None:
            assert opener is not None
            assert opened is not None
            try:
                stored = await opener(node)
            except ObjectNotFound:
                return None
            except RangeNotSatisfiable:
                # Beyond this replica's copy, which may be older (or shorter) than the newest:
                # it counts by its version, and the newest copy judges the range.
                return await lookup.head_or_none(node, object_id)
            opened[node.name] = stored
            return stored.info

        def ask_next() -> None:
            node = waiting.pop(0)
            question = (
                open_one(node)
                if opener is not None and not running and not answers
                else lookup.head_or_none(node, object_id)
            )
            running[asyncio.ensure_future(question)] = node

        while waiting and len(running) < need:
            ask_next()
        try:
            while running:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    node = running.pop(task)
                    try:
                        answers.append((node, task.result()))
                    except NodeUnavailable as exc:
                        failures.append(exc.detail)
                        if waiting and len(answers) + len(running) < need:
                            ask_next()
        finally:
            for task in running:
                task.cancel()
        if len(answers) < need and not tolerant:
            self.counts.quorum_refusals += 1
            raise QuorumUnavailable(
                f"{len(answers)} of this ID's replicas answered, and {need} must: "
                + "; ".join(failures)
            )
        order = {node.name: index for index, node in enumerate(replicas)}
        return sorted(answers, key=lambda answer: order[answer[0].name])

    # -- writes -----------------------------------------------------------------------------

    async def put(
        self,
        object_id: ObjectId,
        body: AsyncIterator[bytes],
        length: int | None,
        content_type: str,
        preconditions: Preconditions | None = None,
    ) -> PutOutcome:
        lookup = self._lookup
        with self._commits.writing(object_id.value):
            if preconditions is not None and not preconditions.empty:
                async with lookup.locks.held(object_id.value):
                    current = await self.read(object_id, body=False, repair=False)
                    found = current.found
                    present = None if found is None or found.info.deleted else found.info
                    if preconditions.evaluate(present, reading=False) is not Verdict.PROCEED:
                        raise PreconditionFailed(
                            "the object stored under this ID does not meet the conditions"
                        )
                    return await self._write(
                        object_id,
                        body,
                        length,
                        content_type,
                        version=lookup.clock.next(),
                        created=present is None,
                        conditional=True,
                    )
            return await self._write(
                object_id, body, length, content_type, version=lookup.clock.next()
            )

    async def delete(self, object_id: ObjectId) -> PutOutcome:
        lookup = self._lookup
        with self._commits.writing(object_id.value):
            async with lookup.locks.held(object_id.value):
                version = lookup.clock.next()
                data = tombstone_body(version)
                return await self._write(
                    object_id,
                    _single(data),
                    len(data),
                    TOMBSTONE_CONTENT_TYPE,
                    version=version,
                    deleted=True,
                    created=False,
                )

    async def _write(
        self,
        object_id: ObjectId,
        body: AsyncIterator[bytes],
        length: int | None,
        content_type: str,
        *,
        version: Version,
        deleted: bool = False,
        created: bool | None = None,
        conditional: bool = False,
    ) -> PutOutcome:
        """Stream ``body`` to the ID's replicas (and handoff nodes) at once; acknowledged when W
        replicas hold it. ``created`` is known already (the caller holds the ID's turn), or asked
        of the replicas beside the upload (the last chunk waits for the answer, and for the
        ID's turn)."""
        replicas, targets = await self._targets(object_id)
        upload = _Upload(object_id, length, content_type, version, deleted)
        existed = (
            None
            if created is not None
            else asyncio.ensure_future(
                self.read(object_id, body=False, tolerant=True, repair=False)
            )
        )
        gate = _Gate(
            self._lookup, targets, upload, self._commits, after=existed, take_turn=created is None
        )
        try:
            conditions: list[WriteCondition | None] = [None] * len(targets)
            if conditional:
                conditions = await self._conditions(object_id, targets)
            results = await self._send(gate.body(body), upload, replicas, targets, conditions)
            stored = [
                (node, result)
                for node, result in zip(targets, results, strict=True)
                if isinstance(result, ObjectInfo)
            ]
            acknowledged = sum(1 for node, _ in stored if node in replicas) >= self._need(replicas)
            if acknowledged and not gate.superseded:
                self._commits.committed(object_id.value, version)
        finally:
            gate.release()
            if existed is not None and not existed.done():
                existed.cancel()
                with contextlib.suppress(BaseException):
                    await existed
        if gate.superseded:
            self.counts.superseded_writes += 1
            # A later write to the ID was acknowledged while this one's body was coming: this
            # one is ordered before it, and so replaced at once (nothing of it was stored).
            superseded = ObjectInfo(size=gate.size, content_type=content_type, etag="")
            return PutOutcome(superseded, created=False, node=replicas[0], copies=0)
        if not acknowledged:
            raise self._refusal(results, replicas, stored)
        still_going = sum(1 for result in results if result is None)
        if len(stored) + still_going < self._policy.replicas:
            self.counts.degraded_writes += 1
        on_replicas = [(node, info) for node, info in stored if node in replicas]
        self.counts.handoff_copies += len(stored) - len(on_replicas)
        if existed is not None:
            try:
                found = (await existed).found
            except GatewayError:
                found = None  # it could not tell: the write itself is acknowledged
            created = found is None or found.info.deleted
        node, info = on_replicas[0]
        return PutOutcome(info=info, created=bool(created), node=node, copies=len(stored))

    def _need(self, replicas: list[Node]) -> int:
        return min(self._policy.write_quorum, len(replicas))

    async def _conditions(
        self, object_id: ObjectId, targets: list[Node]
    ) -> list[WriteCondition | None]:
        """Each target is told to write only if it still holds what it holds now: a conditional
        write is then atomic on nodes that honour conditional writes (MinIO does)."""
        states = await asyncio.gather(
            *(self._lookup.head_or_none(node, object_id) for node in targets),
            return_exceptions=True,
        )
        return [
            WriteCondition(only_if_absent=True)
            if state is None or isinstance(state, BaseException)
            else WriteCondition(only_if_etag=state.etag)
            for state in states
        ]

    async def _send(
        self,
        body: AsyncIterator[bytes],
        upload: _Upload,
        replicas: list[Node],
        targets: list[Node],
        conditions: list[WriteCondition | None],
    ) -> list[ObjectInfo | BaseException | None]:
        """One PUT per target, all fed from ``body``; what each answered or raised (None: still
        going when W replicas held the write, which is then acknowledged)."""
        lookup = self._lookup
        fanout = Fanout(body, len(targets))
        going = [node in replicas for node in targets]  # replicas still taking it

        async def one(index: int, node: Node) -> ObjectInfo:
            try:
                return await lookup.access.observe(
                    node,
                    lambda: lookup.storage.put(
                        node,
                        upload.object_id,
                        fanout.branch(index),
                        upload.length,
                        upload.content_type,
                        version=upload.version,
                        deleted=upload.deleted,
                        condition=conditions[index],
                    ),
                )
            except BaseException:
                going[index] = False
                if sum(going) < self._need(replicas):
                    # No quorum any more: the others stop before their last chunk, so that
                    # nothing is left on them that no one acknowledged.
                    fanout.fail(_QuorumLost())
                raise
            finally:
                fanout.drop(index)

        tasks = [asyncio.ensure_future(one(index, node)) for index, node in enumerate(targets)]
        results: list[ObjectInfo | BaseException | None] = [None] * len(tasks)
        need = self._need(replicas)
        pending = set(tasks)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    results[tasks.index(task)] = _outcome_of(task)
                held = sum(
                    1
                    for node, result in zip(targets, results, strict=True)
                    if node in replicas and isinstance(result, ObjectInfo)
                )
                if held >= need:
                    # Acknowledged: a slow target (a node about to time out) finishes on its own,
                    # and the client does not wait for it.
                    break
        except BaseException:
            for task in pending:
                task.cancel()
            raise
        self._stragglers.update(pending)
        for task in pending:
            task.add_done_callback(self._straggler_done)
        return results

    def _straggler_done(self, task: asyncio.Future[ObjectInfo]) -> None:
        self._stragglers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.counts.late_failures += 1

    async def aclose(self) -> None:
        """At shutdown: stop the copies still going after their writes were acknowledged."""
        for task in list(self._stragglers):
            task.cancel()
        await asyncio.gather(*self._stragglers, return_exceptions=True)

    def _refusal(
        self,
        results: list[ObjectInfo | BaseException | None],
        replicas: list[Node],
        stored: list[tuple[Node, ObjectInfo]],
    ) -> BaseException:
        """Why a write was not acknowledged: the client's fault first, then the nodes'."""
        for result in results:
            if isinstance(result, (InvalidRequest, PreconditionFailed)):
                return result  # the client's body or conditions, not the nodes
        for result in results:
            if isinstance(result, BaseException) and not isinstance(
                result, (GatewayError, _QuorumLost, _Superseded)
            ):
                return result
        self.counts.quorum_refusals += 1
        on_replicas = sum(1 for node, _ in stored if node in replicas)
        failures = [str(result) for result in results if isinstance(result, GatewayError)]
        return QuorumUnavailable(
            f"{on_replicas} of this ID's replicas took the write, and {self._need(replicas)} "
            "must: " + "; ".join(failures)
        )

    async def _targets(self, object_id: ObjectId) -> tuple[list[Node], list[Node]]:
        """The ID's replicas, and where this write goes: the replicas that can take it, then the
        next nodes of the walk in place of those that cannot. Refused at once (nothing sent)
        when fewer replicas than the write quorum can take it."""
        lookup, policy = self._lookup, self._policy
        membership = await lookup.fleet.membership()
        walk = membership.write_walk(object_id, len(membership.write_ring.node_names))
        replicas = walk[: policy.replicas]
        if not replicas:
            raise NoNodesAvailable("no storage node can take this ID")
        usable = [node for node in replicas if self._admitted(node)]
        need = min(policy.write_quorum, len(replicas))
        if len(usable) < need:
            self.counts.quorum_refusals += 1
            raise QuorumUnavailable(
                f"{len(usable)} of this ID's {len(replicas)} replicas can take a write, and "
                f"{need} must"
            )
        handoffs: list[Node] = []
        for node in walk[policy.replicas :]:
            if len(usable) + len(handoffs) >= len(replicas):
                break
            if self._admitted(node):
                handoffs.append(node)
        return replicas, usable + handoffs

    def _admitted(self, node: Node) -> bool:
        access = self._lookup.access
        if not access.available(node):
            return False
        try:
            access.admit(node)
        except NodeUnavailable:
            return False
        return True


@dataclass(frozen=True, slots=True)
class _Upload:
    object_id: ObjectId
    length: int | None
    content_type: str
    version: Version
    deleted: bool


def _outcome_of(task: asyncio.Future[ObjectInfo]) -> ObjectInfo | BaseException:
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception() or task.result()


class _QuorumLost(Exception):
    """Too few replicas still take a write: it stops everywhere."""


class _RecentCommits:
    """The newest version this gateway committed to each ID that has writes in flight.

    A write's version is drawn when it starts, and it commits when its body has ended, in its
    ID's turn. A write that started before another but whose body ended after it carries the
    older version: committed last, some replicas would hold it and others (those it missed) the
    newer one, and a read would then serve whichever its quorum met. Such a write is superseded
    instead (as in a last-writer-wins store): its body is dropped before it commits, and it is
    acknowledged as a write at once replaced by the later one (the two overlapped).
    """

    def __init__(self) -> None:
        self._ids: dict[str, list[Any]] = {}  # ID -> [writes in flight, newest committed]

    @contextlib.contextmanager
    def writing(self, object_id: str) -> Iterator[None]:
        entry = self._ids.setdefault(object_id, [0, None])
        entry[0] += 1
        try:
            yield
        finally:
            entry[0] -= 1
            if entry[0] == 0:
                del self._ids[object_id]

    def committed(self, object_id: str, version: Version) -> None:
        entry = self._ids.get(object_id)
        if entry is not None and (entry[1] is None or version > entry[1]):
            entry[1] = version

    def superseded(self, object_id: str, version: Version) -> bool:
        entry = self._ids.get(object_id)
        return entry is not None and entry[1] is not None and entry[1] > version


class _Gate:
    """A replicated write's body, whose last chunk waits for the answer beside it (whether the ID
    was taken), for the ID's turn among this gateway's writes, and for a place in each target's
    cap: the write then waits only for the nodes. A write superseded by then goes no further."""

    def __init__(
        self,
        lookup: ObjectLookup,
        targets: list[Node],
        upload: _Upload,
        commits: _RecentCommits,
        *,
        after: Awaitable[object] | None,
        take_turn: bool,
    ) -> None:
        self._lookup = lookup
        self._targets = targets
        self._object_id = upload.object_id
        self._version = upload.version
        self._commits = commits
        self._after = after
        self._take_turn = take_turn
        self._releases: list[Callable[[], None]] = []
        self.size = 0
        self.superseded = False

    async def body(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        held: bytes | None = None
        async for chunk in body:
            if held is not None:
                yield held
            held = chunk
            self.size += len(chunk)
        if self._after is not None:
            with contextlib.suppress(GatewayError):
                await self._after
        if self._take_turn:
            self._releases.append(await self._lookup.locks.acquire(self._object_id.value))
        if self._commits.superseded(self._object_id.value, self._version):
            self.superseded = True
            raise _Superseded
        for node in self._targets:
            with contextlib.suppress(NodeUnavailable):
                self._releases.append(self._lookup.access.hold(node))
        if held is not None:
            yield held

    def release(self) -> None:
        while self._releases:
            self._releases.pop()()


class _Superseded(Exception):
    """A later write to the ID committed while this one's body was coming."""


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data
