"""Review of the layout by versions (review-22): each test here reproduces a defect found by reading
the new data path, and fails because of it. They use the same fakes and harnesses as
``test_races.py`` (one gateway: ``tests.unit.gateways``; several: the real container over one
in-memory fleet)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from application.leases import JobLease
from domain.conditions import EntityTags, Preconditions
from domain.errors import GatewayError, JobInProgress, NodeUnreachable
from domain.node import DrainState, NodeState
from domain.objects import VersionKind
from tests.fakes import make_node
from tests.unit import test_races as races
from tests.unit.gateways import Gateway, body_of


def _ids_owned_by(gateway: Gateway, node: str, names: list[str] | None = None) -> list[str]:
    return [f"id{i}" for i in range(3000) if gateway.walk(f"id{i}", names)[0] == node]


async def _held_body(first: bytes, last: bytes, release: asyncio.Event) -> AsyncIterator[bytes]:
    yield first
    await release.wait()
    yield last


# -- 1: a write acknowledged while a node was draining is hidden once the node is undrained -------


def test_a_write_acknowledged_during_a_drain_is_still_read_after_the_node_is_undrained() -> None:
    """Reads look past an ID's replicas only when a replica holds *nothing* (or a node drains).
    While D drains, v2 goes to the next node; once D is undrained it is the owner again, holds
    v1, and the read stops there: the acknowledged v2 is served stale until a rebalance."""
    gateway = Gateway(node_count=3)
    drained = "node-1"
    object_id = _ids_owned_by(gateway, drained)[0]

    async def scenario() -> None:
        await gateway.put(object_id, body_of(b"one"), 3, "text/plain")
        gateway.storage.drain_marks[drained] = DrainState.DRAINING  # a drain begins
        await gateway.fleet.refresh_drain_marks()
        await gateway.put(object_id, body_of(b"two"), 3, "text/plain")  # acknowledged
        assert await gateway.read(object_id) == b"two"
        gateway.storage.drain_marks.pop(drained)  # the operator undrains it
        await gateway.fleet.refresh_drain_marks()
        assert await gateway.read(object_id) == b"two", "the acknowledged write is hidden"

    asyncio.run(scenario())


# -- 2: an upload that began before a node joined lands on the former owner -----------------------


def test_an_upload_begun_before_a_node_joined_is_read_back_after_it_is_acknowledged() -> None:
    """The write's node is fixed when it starts (the owner then); a read after the join asks the
    new owner, finds nothing, reads the former owner and read-repairs v1 onto the new owner. The
    upload then commits v2 on the former owner and is acknowledged (nothing is draining, so
    ``confirm_placed`` agrees) - and every read now stops at the new owner's v1."""
    gateway = Gateway(node_count=3)
    newcomer = "node-3"
    names_after = [*gateway.names, newcomer]
    object_id = next(
        raw
        for raw in (f"id{i}" for i in range(3000))
        if gateway.walk(raw, names_after)[0] == newcomer
    )

    async def scenario() -> None:
        await gateway.put(object_id, body_of(b"one"), 3, "text/plain")
        release = asyncio.Event()
        # A large body (over the small-object size) streams: its node is chosen now.
        size = 300 * 1024
        upload = asyncio.ensure_future(
            gateway.put(
                object_id,
                _held_body(b"t" * (size - 1), b"2", release),
                size,
                "text/plain",
            )
        )
        await asyncio.sleep(0.05)
        gateway.discovery.nodes.append(make_node(newcomer))  # a node joins
        await gateway.fleet.refresh()
        assert await gateway.read(object_id) == b"one"  # and a read repairs it
        await gateway.settle()
        release.set()
        await upload  # acknowledged
        data = await gateway.read(object_id)
        assert data == b"t" * (size - 1) + b"2", f"read {data[:8]!r}... after the ack of v2"

    asyncio.run(scenario())


# -- 3: a conditional write counts handoff copies towards its write quorum ------------------------


def test_a_conditional_write_is_acknowledged_only_with_w_replicas_holding_it_as_data() -> None:
    """``ConditionalWrites.put`` compares the promoted copies - handoffs included - with W. N=3,
    W=2, R=2: a replica down, the pending version goes to two replicas and a handoff; the
    promotion fails on one replica, succeeds on the other and on the handoff: acknowledged with
    one replica holding it. A read of the two other replicas then serves the older version."""
    gateway = Gateway(node_count=4, replicas=3, breaker_threshold=1000)
    object_id = "cond3"
    first, second, third, spare = gateway.walk(object_id)

    async def scenario() -> None:
        await gateway.put(object_id, body_of(b"one"), 3, "text/plain")
        await gateway.settle()
        await gateway.take_down(third)
        original = gateway.storage.promote

        async def promote(node: Any, oid: Any, pending: Any) -> Any:
            if node.name == second:
                raise NodeUnreachable(node.name, "timed out (fake)")
            return await original(node, oid, pending)

        gateway.storage.promote = promote  # type: ignore[method-assign,assignment]
        etag = hashlib.md5(b"one").hexdigest()
        try:
            await gateway.put(
                object_id,
                body_of(b"two"),
                3,
                "text/plain",
                Preconditions(if_match=EntityTags(frozenset({etag}))),
            )
        except GatewayError:
            return  # refused: nothing was promised
        gateway.storage.promote = original  # type: ignore[method-assign]
        await gateway.settle()
        # The third replica is back, the first rests: R=2 asks the second and the third.
        gateway.discovery.nodes = [
            make_node(n.name, NodeState.DOWN) if n.name == first else make_node(n.name)
            for n in gateway.discovery.nodes
        ]
        gateway.storage.unreachable_nodes = {first}
        await gateway.fleet.refresh()
        assert gateway.holders(object_id).get(spare) == b"two"  # the handoff counted
        assert await gateway.read(object_id) == b"two", "stale read after the 200"

    asyncio.run(scenario())


# -- 4: a read of an acknowledged conditional write opens a node that holds it only pending -------


def test_a_read_never_opens_the_pending_record_of_a_version_as_its_data() -> None:
    """``Current.holders()`` matches the newest version by its version alone, not its kind: a
    replica whose promotion failed (it still holds the pending record, until its removal runs)
    is listed first, the read opens ``<version>.data`` there, gets 404, looks again, and after
    three attempts answers 503 for an acknowledged object (read repair takes the same node as
    its source, and fails too)."""
    gateway = Gateway(node_count=3, replicas=3, breaker_threshold=1000)
    object_id = "cond4"
    first, _second, _third = gateway.walk(object_id)
    release_removals = asyncio.Event()

    async def scenario() -> None:
        await gateway.put(object_id, body_of(b"one"), 3, "text/plain")
        await gateway.settle()
        original = gateway.storage.promote

        async def promote(node: Any, oid: Any, pending: Any) -> Any:
            if node.name == first:
                raise NodeUnreachable(node.name, "timed out (fake)")
            return await original(node, oid, pending)

        async def before_delete(node: str, _: str) -> None:
            if node == first:
                await release_removals.wait()  # the first replica is slow to delete

        gateway.storage.promote = promote  # type: ignore[method-assign,assignment]
        gateway.storage.before_delete = before_delete
        etag = hashlib.md5(b"one").hexdigest()
        await gateway.put(
            object_id,
            body_of(b"two"),
            3,
            "text/plain",
            Preconditions(if_match=EntityTags(frozenset({etag}))),
        )  # acknowledged: promoted on the second and third replicas
        gateway.storage.promote = original  # type: ignore[method-assign]
        kinds = [s.kind for s in gateway.storage.versions_of(first, object_id)]
        assert VersionKind.PENDING in kinds
        try:
            try:
                data: bytes | str = await gateway.read(object_id)
            except GatewayError as exc:
                data = f"{type(exc).__name__}: {exc.detail}"
            assert data == b"two", "a GET of the acknowledged object fails"
        finally:
            release_removals.set()
            await gateway.settle()

    asyncio.run(scenario())


# -- 5: a conditional write promoted after the drain's last look ----------------------------------


def test_a_conditional_write_promoted_after_a_drain_finished_survives_the_nodes_removal() -> None:
    """A drain counts only committed versions (``Drain._objects_on``) and a pending-only ID is
    "in place" (``Settle.in_place``); the promotion (``ConditionalWrites._promote``) is never
    confirmed with ``Fleet.confirm_placed``. The pending version lands on D before the mark,
    the drain ends and says D is safe to remove, then the write is promoted on D alone and
    acknowledged."""
    fleet = races.Fleet(node_count=3)
    fleet.storage.clock = datetime.now(UTC)  # the nodes' clocks agree with the gateways'
    writer, drainer = races.Gateway(fleet), races.Gateway(fleet)
    draining = "node-2"
    object_id = fleet.id_owned_by(draining)
    hold_listings = asyncio.Event()
    pending_committed = asyncio.Event()

    async def before_commit(node: str, raw_id: str) -> None:
        if node == draining and raw_id == object_id and not pending_committed.is_set():
            pending_committed.set()
            # From here on the writer's next look at the ID (its rival check) waits.
            fleet.storage.head_released = hold_listings

    async def scenario() -> None:
        await races.both(writer.refresh(), drainer.refresh())
        fleet.storage.before_commit = before_commit
        create_only = Preconditions(if_none_match=EntityTags(any=True))
        upload = asyncio.ensure_future(
            writer.put(object_id, b"conditional", preconditions=create_only)
        )
        await pending_committed.wait()
        await asyncio.sleep(0.05)
        events = await drainer.drain(draining)
        await writer.refresh()  # the writer knows the node is drained: it changes nothing
        fleet.storage.head_released = None
        hold_listings.set()
        try:
            status = await upload
        except GatewayError:
            return  # refused: nothing was promised
        assert status == 201
        assert races.said_safe_to_remove(events)
        fleet.remove(draining)
        await races.both(writer.refresh(), drainer.refresh())
        assert await writer.get(object_id) == b"conditional", "acknowledged and lost"

    asyncio.run(scenario())


# -- 6: two create-only writes both succeed when a node's clock is behind ------------------------


def test_of_two_create_only_writes_at_most_one_succeeds_on_a_node_whose_clock_is_behind() -> None:
    """``abandoned()`` compares the gateway's wall clock with the node's Last-Modified of the
    pending record: on a node whose clock is more than 300 s behind (the fake's clock starts at
    2026-01-01, which is what every existing conditional race test runs with), every pending
    version looks abandoned, the rival check skips it, and both writes are promoted. (With the
    fake's clock set to now, this scenario gives at most one success.)"""
    gateway = Gateway(node_count=3)
    gateway.storage.clock = datetime.now(UTC) - timedelta(minutes=10)
    create_only = Preconditions(if_none_match=EntityTags(any=True))
    both_pending = asyncio.Event()
    commits = [0]

    async def before_commit(node: str, _: str) -> None:
        # Each write's pending version commits only once both have been sent: neither has
        # looked for rivals before the other's pending version is stored.
        commits[0] += 1
        if commits[0] == 2:
            both_pending.set()
        await both_pending.wait()

    gateway.storage.before_commit = before_commit

    async def scenario() -> tuple[object, ...]:
        first = gateway.put("cas6", body_of(b"first"), 5, "text/plain", create_only)
        second = gateway.put("cas6", body_of(b"second"), 6, "text/plain", create_only)
        return await asyncio.gather(first, second, return_exceptions=True)

    outcomes = asyncio.run(scenario())
    succeeded = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(succeeded) <= 1, f"both If-None-Match: * writes succeeded ({len(succeeded)} of 2)"


# -- 8: the job lease held by two gateways at once -


def test_the_job_lease_is_never_held_by_two_gateways_at_once() -> None:
    """``JobLease.held`` accepts a claim written to any one node and reads claims back only from
    the nodes it wrote to: two claimants whose nodes do not overlap (one node answers the first,
    the two others the second) both hold the lease. No majority of the fleet is required."""
    first, second = Gateway(node_count=3), Gateway(node_count=3)
    second.storage = first.storage
    second.fleet = first.fleet
    storage = first.storage

    async def no_wait(_: float) -> None:
        await asyncio.sleep(0)

    def lease(gateway: Gateway) -> JobLease:
        return JobLease(gateway.fleet, storage, gateway.clock, settle_seconds=0.2, sleep=no_wait)

    async def scenario() -> str:
        # One node of three is no majority: no lease.
        storage.unreachable_nodes = {"node-1", "node-2"}
        with contextlib.suppress(GatewayError):
            async with lease(first).held("rebalance"):
                return "a lease on one node of three"
        # Two claimants that each reach a majority (node-0 and node-1; node-1 and node-2) meet
        # on node-1: the second waits.
        storage.unreachable_nodes = {"node-2"}
        async with lease(first).held("rebalance"):
            storage.unreachable_nodes = {"node-0"}
            try:
                async with lease(second).held("drain"):
                    return "both held the lease"
            except JobInProgress:
                return "the second waited"
        return "unreachable"

    assert asyncio.run(scenario()) == "the second waited"


# -- 9: a failed conditional write's pending version refuses every conditional write for 5 min ---


def test_a_conditional_write_that_failed_leaves_nothing_that_refuses_the_next_one() -> None:
    """A conditional write whose pending version is stored and which then fails (the node did
    not answer its rival check) removes the pending record only in the background, once
    (``ConditionalWrites._clear`` -> ``Upkeep.remove_later``: a failed attempt is not retried,
    and a submission under a key already waiting is dropped). The record left counts as a
    rival for ``PENDING_ABANDONED_SECONDS``: every conditional write to the ID gets 412
    "another write came" although nothing was ever written."""
    gateway = Gateway(node_count=3, breaker_threshold=1000)
    gateway.storage.clock = datetime.now(UTC)
    object_id = "cond9"
    owner = gateway.owner(object_id)
    create_only = Preconditions(if_none_match=EntityTags(any=True))
    blip = {"versions": False, "delete": False}
    original_versions = gateway.storage.versions

    async def before_commit(node: str, _: str) -> None:
        blip["versions"] = blip["delete"] = True  # the node stops answering for a moment

    async def versions(node: Any, oid: Any, **options: Any) -> Any:
        if blip["versions"] and node.name == owner:
            blip["versions"] = False
            raise NodeUnreachable(node.name, "timed out (fake)")
        return await original_versions(node, oid, **options)

    async def before_delete(node: str, _: str) -> None:
        if blip["delete"] and node == owner:
            blip["delete"] = False
            raise NodeUnreachable(node, "timed out (fake)")

    gateway.storage.versions = versions  # type: ignore[method-assign,assignment]
    gateway.storage.before_delete = before_delete

    async def scenario() -> object:
        gateway.storage.before_commit = before_commit
        with contextlib.suppress(GatewayError):  # 503: not acknowledged
            await gateway.put(object_id, body_of(b"first"), 5, "text/plain", create_only)
        gateway.storage.before_commit = None
        await gateway.settle()
        # The node answers again; nothing is stored under the ID (no pending record either).
        left = gateway.storage.versions_of(owner, object_id)
        assert [s.kind for s in left] == []
        try:
            outcome = await gateway.put(object_id, body_of(b"second"), 6, "text/plain", create_only)
        except GatewayError as exc:
            return exc
        return outcome.created

    result = asyncio.run(scenario())
    assert result is True, f"a create-only write to an empty ID was refused: {result!r}"
