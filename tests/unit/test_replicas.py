"""N copies per ID (GATEWAY_REPLICAS above 1), against in-memory fakes of the nodes: writes reach
the replicas at once and are acknowledged at W, reads compare R and repair the stale, a node that
is down costs no request while the quorums hold."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from domain.conditions import EntityTags, Preconditions
from domain.errors import (
    IncompleteBody,
    ObjectNotFound,
    PreconditionFailed,
    QuorumUnavailable,
)
from domain.node import NodeState
from domain.objects import ByteRange
from domain.versions import Version
from tests.fakes import make_node
from tests.unit.gateways import Gateway, body_of

OLD = Version(10, "a" * 16, 1)
NEW = Version(20, "a" * 16, 1)


class ReplicatedGateway(Gateway):
    def __init__(
        self,
        node_count: int = 4,
        *,
        write_quorum: int | None = None,
        read_quorum: int | None = None,
    ) -> None:
        super().__init__(
            node_count, replicas=3, write_quorum=write_quorum, read_quorum=read_quorum,
            max_per_node=16,
        )  # fmt: skip

    def take_down(self, *names: str) -> None:  # type: ignore[override]
        self.discovery.nodes = [
            make_node(node.name, NodeState.DOWN) if node.name in names else node
            for node in self.discovery.nodes
        ]
        self.storage.unreachable_nodes |= set(names)
        if self.fleet.current is not None:
            asyncio.run(self.fleet.refresh())


def test_a_write_reaches_the_first_n_nodes_of_the_ids_walk_and_reads_back() -> None:
    gateway = ReplicatedGateway()

    async def scenario() -> None:
        outcome = await gateway.put("abc", body_of(b"hello ", b"world"), 11, "text/plain")
        assert outcome.created
        assert outcome.copies == 3
        assert outcome.node.name == gateway.walk("abc")[0]
        assert await gateway.read("abc") == b"hello world"
        again = await gateway.put("abc", body_of(b"again"), 5, "text/plain")
        assert not again.created

    asyncio.run(scenario())
    assert sorted(gateway.holders("abc")) == sorted(gateway.walk("abc")[:3])


def test_a_replica_that_is_down_gets_a_handoff_copy_on_the_next_node_of_the_walk() -> None:
    gateway = ReplicatedGateway(node_count=4)
    first, second, third, fourth = gateway.walk("abc")
    gateway.take_down(second)

    outcome = asyncio.run(gateway.put("abc", body_of(b"x"), 1, None))

    assert outcome.copies == 3
    assert sorted(gateway.holders("abc")) == sorted([first, third, fourth])
    assert gateway.writes.counts.handoff_copies == 1
    assert gateway.writes.counts.degraded_writes == 0


def test_with_no_node_to_hand_off_to_a_write_is_acknowledged_degraded_at_w() -> None:
    gateway = ReplicatedGateway(node_count=3)
    first, second, third = gateway.walk("abc")
    gateway.take_down(third)

    outcome = asyncio.run(gateway.put("abc", body_of(b"x"), 1, None))

    assert outcome.copies == 2
    assert sorted(gateway.holders("abc")) == sorted([first, second])
    assert gateway.writes.counts.degraded_writes == 1


def test_a_replica_failing_mid_body_is_dropped_while_w_remain() -> None:
    gateway = ReplicatedGateway(node_count=3)
    first, second, third = gateway.walk("abc")
    gateway.storage.fail_after_chunks[second] = 1

    # Of unknown length, the body streams chunk by chunk (a small one of known length goes whole).
    outcome = asyncio.run(gateway.put("abc", body_of(b"a", b"b", b"c"), None, None))

    assert outcome.copies == 2
    assert gateway.holders("abc") == {first: b"abc", third: b"abc"}


def test_fewer_replicas_than_w_refuse_the_write_before_a_byte_is_sent() -> None:
    gateway = ReplicatedGateway(node_count=4)
    first, second, *_ = gateway.walk("abc")
    gateway.take_down(first, second)

    with pytest.raises(QuorumUnavailable, match="1 of this ID's 3 replicas"):
        asyncio.run(gateway.put("abc", body_of(b"x"), 1, None))

    assert gateway.holders("abc") == {}
    assert not [request for request in gateway.storage.requests if request.startswith("PUT")]
    assert gateway.writes.counts.quorum_refusals == 1


def test_a_write_that_loses_its_quorum_mid_body_leaves_nothing_on_any_node() -> None:
    gateway = ReplicatedGateway(node_count=3, write_quorum=3)
    _, second, _ = gateway.walk("abc")
    gateway.storage.fail_after_chunks[second] = 1

    with pytest.raises(QuorumUnavailable, match="took the write, and 3 must"):
        asyncio.run(gateway.put("abc", body_of(b"a", b"b", b"c"), None, None))

    assert gateway.holders("abc") == {}


def test_a_body_cut_short_by_the_client_leaves_nothing_on_any_replica() -> None:
    gateway = ReplicatedGateway()

    with pytest.raises(IncompleteBody):
        asyncio.run(gateway.put("abc", body_of(b"ab"), 5, None))

    assert gateway.holders("abc") == {}


def test_a_read_serves_the_newest_of_its_quorum_and_repairs_the_stale_replica() -> None:
    gateway = ReplicatedGateway(node_count=3)
    first, second, third = gateway.walk("abc")
    gateway.storage.store(first, "abc", b"old", version=OLD)
    gateway.storage.store(second, "abc", b"new", version=NEW)
    gateway.storage.store(third, "abc", b"new", version=NEW)

    async def scenario() -> None:
        assert await gateway.read("abc") == b"new"
        await gateway.settle()

    asyncio.run(scenario())
    assert gateway.holders("abc") == {first: b"new", second: b"new", third: b"new"}
    assert gateway.storage.objects[(first, "abc")].version == NEW
    assert gateway.repairs.counts.done == 1


def test_a_read_lists_r_replicas_at_once_then_opens_the_newest_version_on_one() -> None:
    gateway = ReplicatedGateway(node_count=3)
    asyncio.run(gateway.mark_settled())
    asyncio.run(gateway.put("abc", body_of(b"x"), 1, None))
    first, second, _ = gateway.walk("abc")
    gateway.storage.requests.clear()

    assert asyncio.run(gateway.read("abc")) == b"x"

    assert sorted(gateway.storage.requests) == sorted(
        [f"LIST {first} abc", f"LIST {second} abc", f"GET {first} abc"]
    )


def test_a_range_beyond_the_first_replicas_copy_is_judged_on_the_newest_copy() -> None:
    """The first replica may hold a tombstone or an older, shorter copy: its 416 says nothing
    about the ID. A deleted ID is a 404 and a newer, longer copy serves the range."""
    gateway = ReplicatedGateway(node_count=3)
    first, second, third = gateway.walk("gone")
    tombstone = Version(30, "a" * 16, 1)
    for node in (first, second):
        gateway.storage.store(node, "gone", b"", version=tombstone, deleted=True)
    gateway.storage.store(third, "gone", b"x" * 5000, version=OLD)
    first, second, third = gateway.walk("grown")
    gateway.storage.store(first, "grown", b"short", version=OLD)
    gateway.storage.store(second, "grown", bytes(range(256)) * 20, version=NEW)
    gateway.storage.store(third, "grown", bytes(range(256)) * 20, version=NEW)

    async def ranged(raw_id: str) -> bytes:
        retrieved = await gateway.get(raw_id, ByteRange(1000, 1009))
        try:
            return b"".join([chunk async for chunk in retrieved.stored.chunks])
        finally:
            await retrieved.stored.close()

    with pytest.raises(ObjectNotFound):
        asyncio.run(ranged("gone"))
    assert asyncio.run(ranged("grown")) == (bytes(range(256)) * 20)[1000:1010]


def test_a_replica_that_cannot_be_asked_is_replaced_by_the_next_and_the_read_succeeds() -> None:
    gateway = ReplicatedGateway(node_count=3)
    asyncio.run(gateway.put("abc", body_of(b"x"), 1, None))
    first, _, _ = gateway.walk("abc")
    gateway.storage.unreachable_nodes = {first}

    assert asyncio.run(gateway.read("abc")) == b"x"
    assert asyncio.run(gateway.head("abc")).info.size == 1


def test_fewer_replicas_answering_than_r_is_503_not_a_404() -> None:
    gateway = ReplicatedGateway(node_count=3)
    first, second, _ = gateway.walk("abc")
    gateway.storage.unreachable_nodes = {first, second}

    with pytest.raises(QuorumUnavailable):
        asyncio.run(gateway.get("abc"))
    with pytest.raises(QuorumUnavailable):
        asyncio.run(gateway.head("abc"))


def test_with_r_one_a_single_replica_left_still_serves_reads() -> None:
    gateway = ReplicatedGateway(node_count=3, write_quorum=3, read_quorum=1)
    asyncio.run(gateway.put("abc", body_of(b"x"), 1, None))
    first, second, _ = gateway.walk("abc")
    gateway.take_down(first, second)

    assert asyncio.run(gateway.read("abc")) == b"x"
    with pytest.raises(QuorumUnavailable):
        asyncio.run(gateway.put("abc", body_of(b"y"), 1, None))


def test_an_empty_replica_such_as_a_replaced_node_is_refilled_by_a_read() -> None:
    gateway = ReplicatedGateway(node_count=3)
    asyncio.run(gateway.put("abc", body_of(b"x"), 1, None))
    first, second, third = gateway.walk("abc")
    del gateway.storage.records[(first, "abc")]

    async def scenario() -> None:
        assert await gateway.read("abc") == b"x"
        await gateway.settle()

    asyncio.run(scenario())
    assert sorted(gateway.holders("abc")) == sorted([first, second, third])


def test_a_delete_writes_tombstones_to_every_replica_and_no_older_copy_comes_back() -> None:
    gateway = ReplicatedGateway(node_count=3)
    first, second, third = gateway.walk("abc")
    gateway.storage.store(third, "abc", b"old", version=OLD)

    async def scenario() -> None:
        deleted = await gateway.delete("abc")
        assert deleted.copies == 3
        with pytest.raises(ObjectNotFound):
            await gateway.get("abc")
        with pytest.raises(ObjectNotFound):
            await gateway.head("abc")

    asyncio.run(scenario())
    assert all(gateway.storage.objects[(node, "abc")].deleted for node in (first, second, third))


def test_a_conditional_write_is_judged_on_the_newest_replica() -> None:
    gateway = ReplicatedGateway(node_count=3)
    _, second, _ = gateway.walk("abc")
    gateway.storage.store(second, "abc", b"only here", version=NEW)
    absent = Preconditions(if_none_match=EntityTags(any=True))

    with pytest.raises(PreconditionFailed):
        asyncio.run(gateway.put("abc", body_of(b"x"), 1, None, absent))
    assert asyncio.run(gateway.put("new", body_of(b"x"), 1, None, absent)).created


def test_of_two_overlapping_writes_the_later_started_stays_current_whichever_ends_last() -> None:
    """Versions are drawn when a write starts; the slower of two overlapping writes lands beside
    the newer one, never over it: every replica then serves the newer."""
    gateway = ReplicatedGateway(node_count=3)
    release_slow = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"slow "
        await release_slow.wait()
        yield b"body"

    async def scenario() -> None:
        slow = asyncio.ensure_future(gateway.put("abc", slow_body(), None, None))
        await asyncio.sleep(0.01)
        fast = await gateway.put("abc", body_of(b"fast"), 4, None)
        assert fast.copies == 3
        release_slow.set()
        landed = await slow
        assert landed.copies == 3
        assert landed.info.version is not None
        assert fast.info.version is not None
        assert landed.info.version < fast.info.version
        assert await gateway.read("abc") == b"fast"
        await gateway.settle()

    asyncio.run(scenario())
    assert set(gateway.holders("abc").values()) == {b"fast"}


def test_a_fleet_smaller_than_n_keeps_a_copy_on_every_node() -> None:
    gateway = ReplicatedGateway(node_count=2)

    outcome = asyncio.run(gateway.put("abc", body_of(b"x"), 1, None))

    assert outcome.copies == 2
    assert asyncio.run(gateway.read("abc")) == b"x"


def test_a_copy_left_where_the_id_sat_before_a_node_joined_is_still_found() -> None:
    gateway = ReplicatedGateway(node_count=5)
    *_, fifth = gateway.walk("abc")
    walk_without_fifth = [name for name in gateway.walk("abc") if name != fifth]
    for name in walk_without_fifth[:3]:
        gateway.storage.store(name, "abc", b"before", version=OLD)
    # Ask only through replicas that do not hold it yet: the walk of five nodes starts elsewhere.
    gateway.discovery.nodes.append(make_node("node-9"))

    assert asyncio.run(gateway.read("abc")) == b"before"


def test_a_write_is_acknowledged_at_w_without_waiting_for_a_slow_replica() -> None:
    gateway = ReplicatedGateway(node_count=3)
    _, _, third = gateway.walk("abc")
    slow_node_may_finish = asyncio.Event()

    async def hold_the_third(node: str, object_id: str) -> None:
        if node == third:
            await slow_node_may_finish.wait()

    gateway.storage.before_commit = hold_the_third

    async def scenario() -> None:
        outcome = await asyncio.wait_for(gateway.put("abc", body_of(b"x"), 1, None), 5)
        assert outcome.copies == 2
        assert sorted(gateway.holders("abc")) == sorted(set(gateway.walk("abc")) - {third})
        slow_node_may_finish.set()
        for _ in range(20):
            await asyncio.sleep(0)
        await gateway.writes.aclose()

    asyncio.run(scenario())
    assert sorted(gateway.holders("abc")) == sorted(gateway.walk("abc"))
    assert gateway.writes.counts.degraded_writes == 0
