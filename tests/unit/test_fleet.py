import asyncio

import pytest

from application.fleet import Fleet
from domain.errors import DiscoveryUnavailable, NodeUnavailable, NoNodesAvailable
from domain.node import NodeState
from domain.object_id import ObjectId
from tests.fakes import FakeNodeDiscovery, make_node


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def three_nodes() -> list:
    return [make_node(f"node-{i}") for i in (1, 2, 3)]


def test_discovery_is_asked_once_while_the_view_is_fresh() -> None:
    discovery = FakeNodeDiscovery(nodes=three_nodes())
    clock = FakeClock()
    fleet = Fleet(discovery, ttl_seconds=2.0, virtual_nodes=64, clock=clock)

    async def scenario() -> None:
        for _ in range(50):
            await fleet.owner_of(ObjectId("abc"))
        assert discovery.calls == 1
        clock.now += 2.5
        await fleet.owner_of(ObjectId("abc"))
        assert discovery.calls == 2

    asyncio.run(scenario())


def test_concurrent_requests_on_a_stale_view_trigger_one_discovery() -> None:
    discovery = FakeNodeDiscovery(nodes=three_nodes())
    fleet = Fleet(discovery, ttl_seconds=60.0, virtual_nodes=64)

    async def scenario() -> None:
        await asyncio.gather(*(fleet.owner_of(ObjectId(f"id{i}")) for i in range(20)))

    asyncio.run(scenario())
    assert discovery.calls == 1


def test_an_unreachable_discovery_before_any_success_is_reported() -> None:
    discovery = FakeNodeDiscovery(failure=DiscoveryUnavailable("docker is gone"))
    fleet = Fleet(discovery, ttl_seconds=2.0, virtual_nodes=64)
    with pytest.raises(DiscoveryUnavailable, match="docker is gone"):
        asyncio.run(fleet.owner_of(ObjectId("abc")))


def test_the_last_known_membership_keeps_serving_when_discovery_fails() -> None:
    discovery = FakeNodeDiscovery(nodes=three_nodes())
    clock = FakeClock()
    fleet = Fleet(discovery, ttl_seconds=2.0, virtual_nodes=64, clock=clock)

    async def scenario() -> None:
        owner = await fleet.owner_of(ObjectId("abc"))
        discovery.failure = DiscoveryUnavailable("docker is gone")
        clock.now += 10
        assert await fleet.owner_of(ObjectId("abc")) == owner
        assert fleet.last_error is not None
        # A failed check counts as a check: the daemon is not asked again within the TTL.
        calls = discovery.calls
        await fleet.owner_of(ObjectId("abc"))
        assert discovery.calls == calls
        discovery.failure = None
        clock.now += 10
        await fleet.owner_of(ObjectId("abc"))
        assert fleet.last_error is None

    asyncio.run(scenario())


def test_a_stopped_owner_stays_on_the_ring_and_its_ids_are_unavailable() -> None:
    nodes = three_nodes()
    discovery = FakeNodeDiscovery(nodes=nodes)
    clock = FakeClock()
    fleet = Fleet(discovery, ttl_seconds=2.0, virtual_nodes=64, clock=clock)

    async def scenario() -> None:
        owner = await fleet.owner_of(ObjectId("abc"))
        ring_before = (await fleet.membership()).ring
        discovery.nodes = [
            make_node(n.name, NodeState.DOWN) if n.name == owner.name else n for n in nodes
        ]
        clock.now += 10
        with pytest.raises(NodeUnavailable, match=owner.name):
            await fleet.owner_of(ObjectId("abc"))
        # Same names, same ring: a node going down moves no ID.
        assert (await fleet.membership()).ring is ring_before

    asyncio.run(scenario())


def test_a_changed_address_is_used_without_rebuilding_the_ring() -> None:
    discovery = FakeNodeDiscovery(nodes=[make_node("node-1", host="10.0.0.1")])
    clock = FakeClock()
    fleet = Fleet(discovery, ttl_seconds=2.0, virtual_nodes=64, clock=clock)

    async def scenario() -> None:
        ring_before = (await fleet.membership()).ring
        discovery.nodes = [make_node("node-1", host="10.0.0.9")]
        clock.now += 10
        assert (await fleet.owner_of(ObjectId("abc"))).host == "10.0.0.9"
        assert (await fleet.membership()).ring is ring_before

    asyncio.run(scenario())


def test_an_empty_fleet_has_no_nodes_available() -> None:
    fleet = Fleet(FakeNodeDiscovery(nodes=[]), ttl_seconds=2.0, virtual_nodes=64)
    with pytest.raises(NoNodesAvailable):
        asyncio.run(fleet.owner_of(ObjectId("abc")))
