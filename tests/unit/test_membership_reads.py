"""Fallback reads, HEAD and DELETE across membership changes, against in-memory fakes."""

import asyncio

import pytest

from domain.conditions import EntityTags, Preconditions
from domain.errors import NodeUnavailable, ObjectNotFound, PreconditionFailed
from domain.hash_ring import HashRing
from domain.node import DrainState, NodeState
from domain.object_id import ObjectId
from domain.versions import Version
from tests.fakes import make_node
from tests.unit.gateways import Gateway, body_of

ANY = EntityTags(any=True)


def preference(gateway: Gateway, raw_id: str) -> list[str]:
    names = [node.name for node in gateway.discovery.nodes]
    return HashRing(names, 64).preference_list(ObjectId(raw_id))


def test_an_object_on_the_owners_successor_is_read_from_there() -> None:
    gateway = Gateway(node_count=4)
    owner, successor, *_ = preference(gateway, "abc")
    gateway.storage.store(successor, "abc", b"not rebalanced yet")

    async def scenario() -> None:
        retrieved = await gateway.get("abc")
        assert retrieved.node.name == successor
        assert retrieved.from_fallback
        assert b"".join([c async for c in retrieved.stored.chunks]) == b"not rebalanced yet"
        await retrieved.stored.close()
        headers = await gateway.head("abc")
        assert headers.node.name == successor
        assert headers.info.size == len(b"not rebalanced yet")

    asyncio.run(scenario())
    assert owner != successor


def test_the_owners_copy_wins_over_an_older_one_further_along() -> None:
    gateway = Gateway(node_count=4)
    owner, successor, *_ = preference(gateway, "abc")
    gateway.storage.store(successor, "abc", b"old")
    gateway.storage.store(owner, "abc", b"new")
    assert asyncio.run(gateway.read("abc")) == b"new"


def test_reads_look_no_further_than_the_configured_fallback_nodes() -> None:
    gateway = Gateway(node_count=5)
    *_, fourth, fifth = preference(gateway, "abc")
    gateway.storage.store(fourth, "abc", b"too far")
    with pytest.raises(ObjectNotFound):
        asyncio.run(gateway.get("abc"))
    assert fifth


def test_a_missing_object_asks_the_owner_and_two_successors_then_is_404() -> None:
    gateway = Gateway(node_count=5)
    with pytest.raises(ObjectNotFound):
        asyncio.run(gateway.get("abc"))
    asked = [request.split()[1] for request in gateway.storage.requests]
    assert sorted(asked) == sorted(preference(gateway, "abc")[:3])
    assert asked[0] == preference(gateway, "abc")[0]
    assert all(request.startswith("LIST") for request in gateway.storage.requests)


def test_of_copies_on_two_successors_the_newest_is_served_not_the_first_found() -> None:
    gateway = Gateway(node_count=5)
    _, second, third, *_ = preference(gateway, "abc")
    gateway.storage.store(second, "abc", b"older", version=Version(10, "a" * 16, 1))
    gateway.storage.store(third, "abc", b"newer", version=Version(20, "a" * 16, 1))
    assert asyncio.run(gateway.read("abc")) == b"newer"
    assert asyncio.run(gateway.head("abc")).info.size == len(b"newer")


def test_a_down_owner_is_503_even_when_a_successor_has_a_copy() -> None:
    gateway = Gateway(node_count=4)
    owner, successor, *_ = preference(gateway, "abc")
    gateway.storage.store(successor, "abc", b"maybe stale")
    gateway.discovery.nodes = [
        make_node(n.name, NodeState.DOWN) if n.name == owner else n for n in gateway.discovery.nodes
    ]
    with pytest.raises(NodeUnavailable, match=owner):
        asyncio.run(gateway.get("abc"))


def test_a_successor_that_cannot_be_asked_makes_a_miss_503_not_404() -> None:
    gateway = Gateway(node_count=4)
    _, successor, *_ = preference(gateway, "abc")
    gateway.storage.unreachable_nodes = {successor}
    with pytest.raises(NodeUnavailable, match=successor):
        asyncio.run(gateway.get("abc"))
    with pytest.raises(NodeUnavailable, match=successor):
        asyncio.run(gateway.head("abc"))


def test_a_delete_is_a_tombstone_on_the_owner_and_no_older_copy_comes_back() -> None:
    gateway = Gateway(node_count=5)
    owner, second, third, *_ = preference(gateway, "abc")
    for node in (owner, second, third):
        gateway.storage.store(node, "abc", b"copy", version=Version(10, "a" * 16, 1))

    async def scenario() -> None:
        assert (await gateway.delete("abc")).node.name == owner
        with pytest.raises(ObjectNotFound):
            await gateway.get("abc")
        with pytest.raises(ObjectNotFound):
            await gateway.head("abc")

    asyncio.run(scenario())
    tombstone = gateway.storage.objects[(owner, "abc")]
    assert tombstone.deleted
    # The older copies stay until a rebalance removes them; they can never be served.
    assert sorted(gateway.storage.node_of("abc")) == sorted([owner, second, third])


def test_a_delete_whose_other_copies_cannot_be_reached_still_hides_them_all() -> None:
    gateway = Gateway(node_count=4)
    _, second, *_ = preference(gateway, "abc")
    gateway.storage.store(second, "abc", b"old copy", version=Version(10, "a" * 16, 1))
    gateway.storage.unreachable_nodes = {second}

    async def scenario() -> None:
        await gateway.delete("abc")
        gateway.storage.unreachable_nodes = set()
        with pytest.raises(ObjectNotFound):
            await gateway.get("abc")

    asyncio.run(scenario())


def test_a_delete_that_cannot_be_recorded_changes_nothing_visible() -> None:
    gateway = Gateway(node_count=4)
    owner, *_ = preference(gateway, "abc")
    gateway.storage.store(owner, "abc", b"kept", version=Version(10, "a" * 16, 1))
    gateway.storage.unreachable_nodes = {owner}
    with pytest.raises(NodeUnavailable):
        asyncio.run(gateway.delete("abc"))
    gateway.storage.unreachable_nodes = set()
    assert asyncio.run(gateway.read("abc")) == b"kept"


def test_a_delete_of_an_unknown_id_succeeds() -> None:
    gateway = Gateway()
    owner = asyncio.run(gateway.delete("neverstored"))
    assert owner.node.name == preference(gateway, "neverstored")[0]


def test_writes_during_a_drain_go_to_the_next_node_and_reads_find_the_newest_copy() -> None:
    gateway = Gateway(node_count=4)
    owner, successor, *_ = preference(gateway, "abc")

    async def scenario() -> None:
        await gateway.put("abc", body_of(b"before the drain"), None, None)
        assert gateway.storage.node_of("abc") == [owner]
        gateway.storage.drain_marks[owner] = DrainState.DRAINING
        await gateway.fleet.refresh_drain_marks()
        # Still served from the draining node while nothing newer exists elsewhere.
        assert await gateway.read("abc") == b"before the drain"
        outcome = await gateway.put("abc", body_of(b"during the drain"), None, None)
        assert outcome.node.name == successor
        assert not outcome.created
        assert await gateway.read("abc") == b"during the drain"

    asyncio.run(scenario())


def test_a_stale_copy_on_the_next_node_loses_to_the_draining_nodes_newer_one() -> None:
    gateway = Gateway(node_count=4)
    owner, successor, *_ = preference(gateway, "abc")
    gateway.storage.store(successor, "abc", b"stale", version=Version(10, "a" * 16, 1))
    gateway.storage.store(owner, "abc", b"newest", version=Version(20, "a" * 16, 1))
    gateway.storage.drain_marks[owner] = DrainState.DRAINING

    async def scenario() -> None:
        await gateway.fleet.refresh()
        assert await gateway.read("abc") == b"newest"

    asyncio.run(scenario())


def test_conditions_on_an_object_on_a_fallback_see_what_a_read_sees() -> None:
    gateway = Gateway(node_count=4)
    _, successor, *_ = preference(gateway, "abc")
    gateway.storage.store(successor, "abc", b"not rebalanced", version=Version(10, "a" * 16, 1))
    etag = gateway.storage.objects[(successor, "abc")].info.etag

    async def scenario() -> None:
        with pytest.raises(PreconditionFailed):
            await gateway.put("abc", body_of(b"x"), None, None, Preconditions(if_none_match=ANY))
        with pytest.raises(PreconditionFailed):
            await gateway.put(
                "abc", body_of(b"x"), None, None, Preconditions(if_match=EntityTags({"other"}))
            )
        assert await gateway.read("abc") == b"not rebalanced"
        replaced = await gateway.put(
            "abc", body_of(b"new"), None, None, Preconditions(if_match=EntityTags({etag}))
        )
        assert not replaced.created
        assert await gateway.read("abc") == b"new"
        plain = await gateway.put("abc", body_of(b"newer"), None, None)
        assert not plain.created

    asyncio.run(scenario())
