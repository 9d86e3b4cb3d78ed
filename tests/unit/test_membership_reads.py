"""Fallback reads, HEAD and DELETE across membership changes, against in-memory fakes."""

import asyncio

import pytest

from domain.errors import NodeUnavailable, ObjectNotFound
from domain.hash_ring import HashRing
from domain.node import NodeState
from domain.object_id import ObjectId
from tests.fakes import make_node
from tests.unit.test_objects import Gateway


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
    asked: list[str] = []
    original = gateway.storage.get

    async def counting_get(node, object_id, byte_range=None):  # type: ignore[no-untyped-def]
        asked.append(node.name)
        return await original(node, object_id, byte_range)

    gateway.storage.get = counting_get  # type: ignore[method-assign]
    with pytest.raises(ObjectNotFound):
        asyncio.run(gateway.get("abc"))
    assert asked == preference(gateway, "abc")[:3]


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


def test_delete_removes_every_copy_reads_could_find() -> None:
    gateway = Gateway(node_count=5)
    owner, second, third, fourth, _ = preference(gateway, "abc")
    for node in (owner, second, third, fourth):
        gateway.storage.store(node, "abc", b"copy")

    async def scenario() -> None:
        asked = await gateway.delete("abc")
        assert [node.name for node in asked] == [owner, second, third]
        with pytest.raises(ObjectNotFound):
            await gateway.get("abc")

    asyncio.run(scenario())
    # The fourth is beyond what reads look at, so it can never be served; a rebalance clears it.
    assert gateway.storage.node_of("abc") == [fourth]


def test_delete_of_an_unknown_id_succeeds() -> None:
    gateway = Gateway()
    asked = asyncio.run(gateway.delete("neverstored"))
    assert len(asked) == 3


def test_delete_with_a_node_down_that_may_hold_a_copy_is_refused_and_deletes_nothing() -> None:
    gateway = Gateway(node_count=4)
    owner, second, *_ = preference(gateway, "abc")
    gateway.storage.store(owner, "abc", b"v")
    gateway.discovery.nodes = [
        make_node(n.name, NodeState.DOWN) if n.name == second else n
        for n in gateway.discovery.nodes
    ]
    with pytest.raises(NodeUnavailable, match=second):
        asyncio.run(gateway.delete("abc"))
    assert gateway.storage.node_of("abc") == [owner]
    assert not [event for event in gateway.storage.events if event.startswith("delete")]
