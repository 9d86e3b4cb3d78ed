"""Races that no arrival order, second gateway or slow upload may win: each scenario runs one or
two gateways (each its own composition root, as separate processes would be) over one in-memory
fleet, and times the race with the fake nodes' hooks (a commit, a delete or a read held until the
other side has done its part). An acknowledged write must read back, through every gateway, with
every node that may be asked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
from dependency_injector import providers

from domain.conditions import EntityTags, Preconditions
from domain.errors import GatewayError, NodeUnreachable, ObjectNotFound
from domain.hash_ring import HashRing
from domain.listing import ListingQuery
from domain.node import DrainState, NodeMarks, NodeState
from domain.object_id import ObjectId
from domain.versions import Version
from entrypoints.container import Container
from entrypoints.settings import Settings
from tests.fakes import FakeNodeDiscovery, InMemoryObjectStorage, make_node

RING = 64
# Seconds: every gateway reads the drain marks this often (a drain waits on it).
DRAIN_CHECK = 0.05


async def body_of(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def held_body(first: bytes, last: bytes, release: asyncio.Event) -> AsyncIterator[bytes]:
    """A client that sends ``first``, then nothing until ``release``, then ``last``."""
    yield first
    await release.wait()
    yield last


class Fleet:
    """The nodes and their storage, shared by every gateway of a test."""

    def __init__(self, node_count: int = 4) -> None:
        self.discovery = FakeNodeDiscovery(
            nodes=[make_node(f"node-{i}") for i in range(1, node_count + 1)]
        )
        self.storage = InMemoryObjectStorage()

    @property
    def names(self) -> list[str]:
        return [node.name for node in self.discovery.nodes]

    def walk(self, raw_id: str, names: list[str] | None = None) -> list[str]:
        return HashRing(names or self.names, RING).preference_list(ObjectId(raw_id))

    def id_owned_by(self, node: str, names: list[str] | None = None, skip: int = 0) -> str:
        found = [f"id{i}" for i in range(2000) if self.walk(f"id{i}", names)[0] == node]
        return found[skip]

    def remove(self, name: str) -> None:
        self.discovery.nodes = [node for node in self.discovery.nodes if node.name != name]

    def set_down(self, name: str) -> None:
        self.discovery.nodes = [
            make_node(node.name, NodeState.DOWN) if node.name == name else node
            for node in self.discovery.nodes
        ]
        self.storage.unreachable_nodes.add(name)


class Gateway:
    """One gateway over ``fleet``: the real container, the fleet's fakes in place of Docker and
    the nodes."""

    def __init__(self, fleet: Fleet, **settings: Any) -> None:
        self.fleet = fleet
        self.container = Container()
        chosen = {
            "virtual_nodes": RING,
            "drain_check_seconds": DRAIN_CHECK,
            "breaker_failure_threshold": 1000,
            **settings,
        }
        self.container.settings.override(providers.Object(Settings(**chosen)))
        self.container.node_discovery.override(providers.Object(fleet.discovery))
        self.container.object_storage.override(providers.Object(fleet.storage))
        self.container.tracer.override(providers.Object(None))

    async def refresh(self) -> None:
        await self.container.fleet().refresh()

    async def put(
        self,
        raw_id: str,
        body: AsyncIterator[bytes] | bytes,
        *,
        length: int | None = None,
        preconditions: Preconditions | None = None,
    ) -> int:
        if isinstance(body, bytes):
            length = len(body)
            body = body_of(body)
        outcome = await self.container.put_object()(
            raw_id, body, length, "application/octet-stream", preconditions
        )
        return 201 if outcome.created else 200

    async def get(self, raw_id: str) -> bytes | None:
        """The object's bytes; None for 404."""
        try:
            retrieved = await self.container.get_object()(raw_id)
        except ObjectNotFound:
            return None
        try:
            return b"".join([chunk async for chunk in retrieved.stored.chunks])
        finally:
            await retrieved.stored.close()

    async def delete(self, raw_id: str) -> None:
        await self.container.delete_object()(raw_id)

    async def rebalance(self) -> list[dict[str, Any]]:
        jobs = self.container.admin_jobs()
        return [json.loads(line) async for line in jobs.rebalance(dry_run=False, concurrency=4)]

    async def drain(self, node: str) -> list[dict[str, Any]]:
        jobs = self.container.admin_jobs()
        return [json.loads(line) async for line in jobs.drain(node)]

    async def settle(self) -> None:
        """Let what runs in the background (read repairs, copies past their quorum) finish."""
        for _ in range(40):
            await asyncio.sleep(0.005)


def said_safe_to_remove(events: list[dict[str, Any]]) -> bool:
    return {"event": "drained", "node": events[-1].get("node"), "empty": True} in events


def everything_in_place(events: list[dict[str, Any]]) -> bool:
    return any(event.get("everything_in_place") for event in events)


async def both(first: Awaitable[Any], second: Awaitable[Any]) -> tuple[Any, Any]:
    return await asyncio.gather(first, second)


# -- 1: a drain and a slow upload through another gateway -----------------------------------------


def test_an_upload_slower_than_a_drain_through_another_gateway_survives_the_nodes_removal() -> None:
    fleet = Fleet()
    writer, drainer = Gateway(fleet), Gateway(fleet)
    draining = "node-2"
    object_id = fleet.id_owned_by(draining)

    async def scenario() -> None:
        await both(writer.refresh(), drainer.refresh())
        release = asyncio.Event()
        upload = asyncio.ensure_future(
            writer.put(object_id, held_body(b"slow ", b"upload", release), length=11)
        )
        await asyncio.sleep(0.05)  # the upload is under way, its node chosen
        events = await drainer.drain(draining)
        release.set()
        try:
            await upload
        except GatewayError:
            return  # not acknowledged: nothing was promised
        if said_safe_to_remove(events):
            fleet.remove(draining)
            await both(writer.refresh(), drainer.refresh())
        assert await writer.get(object_id) == b"slow upload"
        assert await drainer.get(object_id) == b"slow upload"

    asyncio.run(scenario())


# -- 2: a straggler of an older write on a replica ------------------------------------------------


def test_a_late_copy_of_an_older_write_never_undoes_a_newer_acknowledged_one_on_a_replica() -> None:
    fleet = Fleet(node_count=3)
    gateway = Gateway(fleet, replicas=3)
    object_id = "race2"
    first, second, third = fleet.walk(object_id)
    held: dict[tuple[str, int], asyncio.Event] = {
        (third, 1): asyncio.Event(),  # the first write's copy to the third replica is slow
        (second, 2): asyncio.Event(),  # the second write's copy to the second replica too
    }
    commits: dict[str, int] = {}

    async def before_commit(node: str, _: str) -> None:
        commits[node] = commits.get(node, 0) + 1
        hold = held.get((node, commits[node]))
        if hold is not None:
            await hold.wait()

    fleet.storage.before_commit = before_commit

    async def scenario() -> None:
        await gateway.refresh()
        await gateway.put(object_id, b"one")  # acknowledged by the first and second replicas
        await gateway.put(object_id, b"two")  # acknowledged by the first and third
        held[(third, 1)].set()  # the first write's straggler lands on the third
        await gateway.settle()
        fleet.set_down(first)
        await gateway.refresh()
        assert await gateway.get(object_id) == b"two"
        held[(second, 2)].set()

    asyncio.run(scenario())


# -- 3: the superseded-write rule across gateways -------------------------------------------------


def test_a_slow_write_and_a_newer_one_through_another_gateway_settle_the_same_everywhere() -> None:
    fleet = Fleet(node_count=3)
    slow_gateway, fast_gateway = Gateway(fleet, replicas=3), Gateway(fleet, replicas=3)
    object_id = "race3"
    replicas = fleet.walk(object_id)

    async def scenario() -> None:
        await both(slow_gateway.refresh(), fast_gateway.refresh())
        release = asyncio.Event()
        fleet.storage.unreachable_nodes.add(replicas[2])  # the slow write reaches two of three
        slow = asyncio.ensure_future(
            slow_gateway.put(object_id, held_body(b"sl", b"ow", release), length=4)
        )
        await asyncio.sleep(0.05)
        fleet.storage.unreachable_nodes.discard(replicas[2])
        await fast_gateway.put(object_id, b"fast")  # started later: the newer write
        release.set()
        await slow
        await fast_gateway.settle()
        seen = set()
        for down in reversed(replicas):  # first without the one replica the slow write missed
            fleet.storage.unreachable_nodes = {down}
            for gateway in (slow_gateway, fast_gateway):
                seen.add(await gateway.get(object_id))
        assert seen == {b"fast"}

    asyncio.run(scenario())


# -- 4: a read repair racing a same-bytes rewrite through another gateway -------------------------


def test_a_read_repair_never_writes_an_older_version_over_a_same_bytes_newer_one() -> None:
    fleet = Fleet(node_count=3)
    reader, writer = Gateway(fleet, replicas=3), Gateway(fleet, replicas=3)
    object_id = "race4"
    first, second, third = fleet.walk(object_id)
    old, newer = Version(10**18, "a" * 16, 1), Version(15 * 10**17, "a" * 16, 1)
    # The third replica missed the newer write of "Y"; it still holds "X".
    fleet.storage.store(first, object_id, b"Y", version=newer)
    fleet.storage.store(second, object_id, b"Y", version=newer)
    fleet.storage.store(third, object_id, b"X", version=old)
    rewritten = asyncio.Event()

    async def before_commit(node: str, _: str) -> None:
        # The read repair of the third replica is about to commit: meanwhile another gateway
        # writes "X" again, as a new version, acknowledged by the second and third replicas.
        if node == third and not rewritten.is_set():
            rewritten.set()
            fleet.storage.unreachable_nodes = {first}
            await writer.put(object_id, b"X")
            fleet.storage.unreachable_nodes = set()

    async def scenario() -> None:
        await both(reader.refresh(), writer.refresh())
        fleet.storage.before_commit = before_commit
        fleet.storage.unreachable_nodes = {second}  # the read asks the first and the third
        assert await reader.get(object_id) == b"Y"  # and repairs the third
        await reader.settle()
        assert rewritten.is_set()
        fleet.storage.before_commit = None
        # The second replica lost: the third still holds the acknowledged "X".
        fleet.storage.unreachable_nodes = {second}
        assert await writer.get(object_id) == b"X"

    asyncio.run(scenario())


# -- 5: a purge racing a write through another gateway --------------------------------------------


def test_a_tombstone_purge_never_deletes_a_write_that_lands_meanwhile() -> None:
    fleet = Fleet(node_count=3)
    repairer, writer = Gateway(fleet), Gateway(fleet)
    object_id = "race5"
    owner = fleet.walk(object_id)[0]
    long_ago = Version(10**18, "a" * 16, 1)  # 2001: far past the grace period
    fleet.storage.store(owner, object_id, str(long_ago).encode(), version=long_ago, deleted=True)
    written = asyncio.Event()

    async def before_delete(node: str, raw_id: str) -> None:
        if node == owner and raw_id == object_id and not written.is_set():
            written.set()
            await writer.put(object_id, b"written meanwhile")

    fleet.storage.before_delete = before_delete

    async def scenario() -> None:
        await both(repairer.refresh(), writer.refresh())
        await repairer.rebalance()
        assert written.is_set()
        assert await writer.get(object_id) == b"written meanwhile"

    asyncio.run(scenario())


# -- 6: a drain mark that cannot be read ----------------------------------------------------------


def test_a_gateway_that_cannot_read_a_nodes_drain_mark_never_treats_it_as_writable() -> None:
    fleet = Fleet(node_count=3)
    drained = "node-2"
    fleet.storage.drain_marks[drained] = DrainState.DRAINED  # emptied, said safe to remove
    fleet.storage.marks_unreadable.add(drained)  # and this gateway's read of it times out
    gateway = Gateway(fleet)
    object_id = fleet.id_owned_by(drained)

    async def scenario() -> None:
        await gateway.refresh()
        try:
            await gateway.put(object_id, b"kept")
        except GatewayError:
            return  # refused: nothing was promised
        fleet.remove(drained)
        await gateway.refresh()
        assert await gateway.get(object_id) == b"kept"

    asyncio.run(scenario())


# -- 7: a copy damaged on the way -----------------------------------------------------------------


def test_a_copy_damaged_on_the_way_is_never_committed_and_never_replaces_the_good_one() -> None:
    fleet = Fleet(node_count=3)
    gateway = Gateway(fleet)
    object_id = "race7"
    owner, elsewhere = fleet.walk(object_id)[0], fleet.walk(object_id)[1]
    fleet.storage.store(
        elsewhere, object_id, b"precious bytes", version=Version(10**18, "a" * 16, 1)
    )

    async def scenario() -> None:
        await gateway.refresh()
        fleet.storage.corrupt_reads.add(elsewhere)
        await gateway.rebalance()  # the move reads damaged bytes
        fleet.storage.corrupt_reads.clear()
        await gateway.rebalance()
        assert await gateway.get(object_id) == b"precious bytes"

    asyncio.run(scenario())
    assert owner  # the owner took the move


# -- 8: a read racing a move ----------------------------------------------------------------------


def test_a_read_that_loses_a_race_with_a_move_looks_again_instead_of_answering_404() -> None:
    fleet = Fleet(node_count=3)
    gateway, mover = Gateway(fleet), Gateway(fleet)
    object_id = "race8"
    owner, fallback = fleet.walk(object_id)[0], fleet.walk(object_id)[1]
    fleet.storage.store(fallback, object_id, b"moving", version=Version(10**18, "a" * 16, 1))
    moved = asyncio.Event()

    async def before_get(node: str, raw_id: str) -> None:
        if node == fallback and raw_id == object_id and not moved.is_set():
            moved.set()
            await mover.rebalance()

    fleet.storage.before_get = before_get

    async def scenario() -> None:
        await both(gateway.refresh(), mover.refresh())
        assert await gateway.get(object_id) == b"moving"
        assert moved.is_set()
        assert fleet.storage.node_of(object_id) == [owner] or owner in fleet.storage.node_of(
            object_id
        )

    asyncio.run(scenario())


# -- 9: a conditional upload at a client's pace ---------------------------------------------------


def test_a_slow_conditional_upload_holds_up_no_delete_of_its_id() -> None:
    fleet = Fleet(node_count=3)
    gateway = Gateway(fleet)
    object_id = "race9"

    async def scenario() -> None:
        await gateway.refresh()
        release = asyncio.Event()
        create_only = Preconditions(if_none_match=EntityTags(any=True))
        upload = asyncio.ensure_future(
            gateway.put(
                object_id, held_body(b"sl", b"ow", release), length=4, preconditions=create_only
            )
        )
        await asyncio.sleep(0.05)
        async with asyncio.timeout(2):
            await gateway.delete(object_id)
        release.set()
        await upload

    asyncio.run(scenario())


# -- 10: a rebalance through one gateway and a drain through another ------------------------------


def test_a_rebalance_begun_before_a_drain_through_another_gateway_moves_nothing_onto_it() -> None:
    fleet = Fleet(node_count=4)
    mover, drainer = Gateway(fleet), Gateway(fleet)
    draining = "node-3"
    object_id = fleet.id_owned_by(draining)
    elsewhere = fleet.walk(object_id)[1]
    fleet.storage.store(elsewhere, object_id, b"misplaced", version=Version(10**18, "a" * 16, 1))
    drained = asyncio.Event()
    drain_events: list[dict[str, Any]] = []

    async def before_commit(node: str, raw_id: str) -> None:
        # The rebalance's copy onto the node waits until the drain through the other gateway is
        # over.
        if node == draining and raw_id == object_id and not drained.is_set():
            drain_events.extend(await drainer.drain(draining))
            drained.set()

    fleet.storage.before_commit = before_commit

    async def scenario() -> None:
        await both(mover.refresh(), drainer.refresh())
        await mover.rebalance()
        if drain_events and said_safe_to_remove(drain_events):
            fleet.remove(draining)
            await both(mover.refresh(), drainer.refresh())
        assert await mover.get(object_id) == b"misplaced"
        assert await drainer.get(object_id) == b"misplaced"

    asyncio.run(scenario())


# -- seen once, not confirmed: each gets a test ---------------------------------------------------


def test_a_listing_page_after_thousands_of_deletes_does_bounded_work_and_says_where_to_go_on() -> (
    None
):
    fleet = Fleet(node_count=3)
    gateway = Gateway(fleet)
    listing = gateway.container.list_objects()

    async def scenario() -> None:
        await gateway.refresh()
        for index in range(3000):
            await gateway.delete(f"never{index}")
        await gateway.put("zzzlast", b"x")
        before = len(fleet.storage.requests)
        page = await listing.page(ListingQuery(limit=1))
        asked = len(fleet.storage.requests) - before
        assert asked <= 50, f"{asked} node requests for one page"
        pages = 1
        while not page.objects and page.next is not None and pages < 100:
            page = await listing.page(ListingQuery(limit=1, after=page.next))
            pages += 1
        assert [entry.object_id for entry in page.objects] == ["zzzlast"]

    asyncio.run(scenario())


def test_membership_views_are_never_applied_out_of_order() -> None:
    fleet = Fleet(node_count=3)
    gateway = Gateway(fleet)
    first_marks_read = asyncio.Event()
    slow = asyncio.Event()
    holding = [False]
    original = fleet.storage.marks

    async def slow_marks(node: Any) -> NodeMarks:
        if holding[0]:
            first_marks_read.set()
            await slow.wait()
        return await original(node)

    fleet.storage.marks = slow_marks  # type: ignore[method-assign]

    async def scenario() -> None:
        await gateway.refresh()
        holding[0] = True
        older = asyncio.ensure_future(gateway.container.fleet().refresh_drain_marks())
        await first_marks_read.wait()
        holding[0] = False
        fleet.discovery.nodes.append(make_node("node-4"))
        await gateway.refresh()  # sees node-4, while the older view is still being read
        slow.set()
        await older
        current = gateway.container.fleet().current
        assert current is not None
        assert "node-4" in current.nodes

    asyncio.run(scenario())


def test_an_unexpected_error_in_a_rebalance_step_is_reported_not_dropped() -> None:
    fleet = Fleet(node_count=3)
    gateway = Gateway(fleet)
    misplaced = [f"oops{i}" for i in range(12)]
    for raw_id in misplaced:
        fleet.storage.store(
            fleet.walk(raw_id)[1], raw_id, b"misplaced", version=Version(10**18, "a" * 16, 1)
        )
    broken_id = misplaced[0]

    async def broken(node: str, raw_id: str) -> None:
        if raw_id == broken_id:
            raise RuntimeError("a bug")

    fleet.storage.before_commit = broken

    async def scenario() -> list[dict[str, Any]]:
        await gateway.refresh()
        try:
            return await gateway.rebalance()
        except RuntimeError:
            return [{"event": "error"}]

    events = asyncio.run(scenario())
    assert not everything_in_place(events)


def test_a_conditional_write_whose_replica_cannot_be_asked_is_not_refused_for_it() -> None:
    fleet = Fleet(node_count=4)
    # Every replica must take the write: one spurious refusal would fail it.
    gateway = Gateway(fleet, replicas=3, write_quorum=3, read_quorum=1)
    object_id = "cond"

    async def scenario() -> None:
        await gateway.refresh()
        await gateway.put(object_id, b"one")
        etag = __import__("hashlib").md5(b"one").hexdigest()
        failing = fleet.walk(object_id)[2]
        original_versions = fleet.storage.versions

        async def versions(node: Any, oid: Any, **options: Any) -> Any:
            if node.name == failing:
                raise NodeUnreachable(node.name, "timed out (fake)")
            return await original_versions(node, oid, **options)

        fleet.storage.versions = versions  # type: ignore[method-assign]
        status = await gateway.put(
            object_id,
            b"two",
            preconditions=Preconditions(if_match=EntityTags(frozenset({etag}))),
        )
        assert status == 200
        fleet.storage.versions = original_versions  # type: ignore[method-assign]
        assert await gateway.get(object_id) == b"two"

    asyncio.run(scenario())


def test_a_write_cancelled_while_it_waits_for_another_leaves_nothing_that_holds_up_the_next() -> (
    None
):
    fleet = Fleet(node_count=3)
    gateway = Gateway(fleet, replicas=3)
    object_id = "cancelled"
    first, second, _ = fleet.walk(object_id)
    hold = asyncio.Event()
    commits: list[str] = []

    async def before_commit(node: str, _: str) -> None:
        commits.append(node)
        if node in (first, second) and not hold.is_set():
            await hold.wait()  # the first write waits for two replicas: no quorum yet

    fleet.storage.before_commit = before_commit

    async def scenario() -> None:
        await gateway.refresh()
        slow = asyncio.ensure_future(gateway.put(object_id, b"one"))
        await asyncio.sleep(0.05)
        waiting = asyncio.ensure_future(gateway.put(object_id, b"two"))
        await asyncio.sleep(0.05)
        waiting.cancel()  # its client went away
        with pytest.raises(asyncio.CancelledError):
            await waiting
        hold.set()
        await slow
        async with asyncio.timeout(2):
            await gateway.delete(object_id)
        assert await gateway.get(object_id) is None

    asyncio.run(scenario())
