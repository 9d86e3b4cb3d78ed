"""Versions an overwrite made useless are removed node by node, many per request: what gathers
while a removal is out goes in the next one, nothing is asked twice, and a backlog beyond its
bound is dropped and counted (``repair`` finds those)."""

from __future__ import annotations

import asyncio

from application.tidying import Tidying
from domain.object_id import ObjectId
from domain.objects import StoredVersion, VersionKind
from tests.fakes import make_node
from tests.unit.gateways import Gateway, body_of, v


def test_overwrites_under_load_are_tidied_many_versions_per_request() -> None:
    gateway = Gateway(node_count=1)
    ids = [f"id{index}" for index in range(40)]

    async def scenario() -> None:
        await gateway.fleet.refresh()
        for object_id in ids:
            await gateway.put(object_id, body_of(b"one"), 3, None)
        gateway.storage.requests.clear()
        await asyncio.gather(
            *(gateway.put(object_id, body_of(b"two"), 3, None) for object_id in ids)
        )
        await gateway.settle()

    asyncio.run(scenario())
    removals = [r for r in gateway.storage.requests if r.startswith("DELETE")]
    assert all(r.startswith("DELETE many") for r in removals), removals
    assert sum(int(r.rsplit(" ", 1)[1]) for r in removals) == len(ids)
    assert len(removals) < len(ids) / 4, removals  # gathered, not one request each
    for object_id in ids:
        assert [s.kind for s in gateway.storage.versions_of("node-0", object_id)] == [
            VersionKind.DATA
        ]
    assert gateway.tidying.counts.done == len(ids)
    assert gateway.tidying.waiting == 0


def test_a_version_waiting_is_not_asked_twice_and_a_full_backlog_drops_and_counts() -> None:
    gateway = Gateway(node_count=1)
    tidying = Tidying(gateway.storage, gateway.access, backlog=3)
    node = make_node("node-0")
    stored = [StoredVersion(v(index), VersionKind.DATA, 1, "e") for index in range(1, 6)]

    async def scenario() -> None:
        tidying.submit(ObjectId("a"), node, stored[:2])
        tidying.submit(ObjectId("a"), node, stored[:2])  # the same two again: nothing new
        tidying.submit(ObjectId("a"), node, stored[2:])  # room for one of these three
        assert tidying.waiting == 3
        await tidying.idle()

    asyncio.run(scenario())
    assert tidying.counts.scheduled == 3
    assert tidying.counts.dropped == 2
    assert tidying.counts.done == 3
    assert [r for r in gateway.storage.requests if r.startswith("DELETE")] == [
        "DELETE many node-0 3"
    ]


def test_a_node_that_cannot_be_asked_fails_its_batch_and_the_next_removals_go_out() -> None:
    gateway = Gateway(node_count=1)
    node = make_node("node-0")
    first = StoredVersion(v(1), VersionKind.DATA, 1, "e")
    second = StoredVersion(v(2), VersionKind.DATA, 1, "e")

    async def scenario() -> None:
        gateway.storage.unreachable_nodes.add("node-0")
        gateway.tidying.submit(ObjectId("a"), node, [first])
        await gateway.tidying.idle()
        gateway.storage.unreachable_nodes.discard("node-0")
        gateway.tidying.submit(ObjectId("a"), node, [second])
        await gateway.tidying.idle()

    asyncio.run(scenario())
    assert gateway.tidying.counts.failed == 1
    assert gateway.tidying.counts.done == 1
