import asyncio

import pytest

from application.fleet import Fleet
from application.fleet_watcher import FleetWatcher
from domain.circuit_breaker import NodeBreakers
from domain.errors import DiscoveryUnavailable, NodeUnavailable, NoNodesAvailable
from domain.node import Node, NodeState
from domain.object_id import ObjectId
from tests.fakes import FakeNodeDiscovery, InMemoryObjectStorage, make_node


def three_nodes() -> list[Node]:
    return [make_node(f"node-{i}") for i in (1, 2, 3)]


def test_requests_never_ask_discovery_once_the_membership_is_known() -> None:
    discovery = FakeNodeDiscovery(nodes=three_nodes())
    fleet = Fleet(discovery, InMemoryObjectStorage(), virtual_nodes=64)

    async def scenario() -> None:
        for _ in range(100):
            await fleet.owner_of(ObjectId("abc"))

    asyncio.run(scenario())
    assert discovery.calls == 1


def test_concurrent_first_requests_trigger_one_discovery() -> None:
    discovery = FakeNodeDiscovery(nodes=three_nodes())
    fleet = Fleet(discovery, InMemoryObjectStorage(), virtual_nodes=64)

    async def scenario() -> None:
        await asyncio.gather(*(fleet.owner_of(ObjectId(f"id{i}")) for i in range(20)))

    asyncio.run(scenario())
    assert discovery.calls == 1


def test_an_unreachable_discovery_before_any_success_is_reported() -> None:
    fleet = Fleet(
        FakeNodeDiscovery(failure=DiscoveryUnavailable("docker is gone")), InMemoryObjectStorage()
    )
    with pytest.raises(DiscoveryUnavailable, match="docker is gone"):
        asyncio.run(fleet.owner_of(ObjectId("abc")))
    assert fleet.status().errors == 1


def test_the_last_known_membership_keeps_serving_when_discovery_fails() -> None:
    discovery = FakeNodeDiscovery(nodes=three_nodes())
    fleet = Fleet(discovery, InMemoryObjectStorage(), virtual_nodes=64)

    async def scenario() -> None:
        owner = await fleet.owner_of(ObjectId("abc"))
        discovery.failure = DiscoveryUnavailable("docker is gone")
        with pytest.raises(DiscoveryUnavailable):
            await fleet.refresh()
        assert await fleet.owner_of(ObjectId("abc")) == owner
        assert fleet.status().last_error == "docker is gone"
        discovery.failure = None
        await fleet.refresh()
        assert fleet.status().last_error is None

    asyncio.run(scenario())


def test_a_stopped_owner_stays_on_the_ring_and_its_ids_are_unavailable() -> None:
    nodes = three_nodes()
    discovery = FakeNodeDiscovery(nodes=nodes)
    fleet = Fleet(discovery, InMemoryObjectStorage(), virtual_nodes=64)

    async def scenario() -> None:
        owner = await fleet.owner_of(ObjectId("abc"))
        ring_before = (await fleet.membership()).ring
        discovery.nodes = [
            make_node(n.name, NodeState.DOWN) if n.name == owner.name else n for n in nodes
        ]
        await fleet.refresh()
        with pytest.raises(NodeUnavailable, match=owner.name):
            await fleet.owner_of(ObjectId("abc"))
        # Same names, same ring: a node going down moves no ID.
        assert (await fleet.membership()).ring is ring_before

    asyncio.run(scenario())


def test_a_changed_address_is_used_without_rebuilding_the_ring() -> None:
    discovery = FakeNodeDiscovery(nodes=[make_node("node-1", host="10.0.0.1")])
    fleet = Fleet(discovery, InMemoryObjectStorage(), virtual_nodes=64)

    async def scenario() -> None:
        ring_before = (await fleet.membership()).ring
        discovery.nodes = [make_node("node-1", host="10.0.0.9")]
        await fleet.refresh()
        assert (await fleet.owner_of(ObjectId("abc"))).host == "10.0.0.9"
        assert (await fleet.membership()).ring is ring_before

    asyncio.run(scenario())


def test_an_empty_fleet_has_no_nodes_available() -> None:
    with pytest.raises(NoNodesAvailable):
        asyncio.run(
            Fleet(FakeNodeDiscovery(nodes=[]), InMemoryObjectStorage(), virtual_nodes=64).owner_of(
                ObjectId("a")
            )
        )


async def _until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


def test_the_watcher_lists_on_start_and_again_on_each_announced_change() -> None:
    discovery = FakeNodeDiscovery(nodes=three_nodes())
    fleet = Fleet(discovery, InMemoryObjectStorage(), virtual_nodes=64)
    watcher = FleetWatcher(fleet, discovery, resync_seconds=60)

    async def scenario() -> None:
        task = asyncio.create_task(watcher.run())
        await _until(lambda: fleet.current is not None, "the first listing")
        discovery.nodes = [*three_nodes(), make_node("node-4")]
        discovery.feeds[-1].announce()
        await _until(
            lambda: fleet.current is not None and "node-4" in fleet.current.nodes,
            "the new node",
        )
        task.cancel()

    asyncio.run(scenario())
    assert discovery.calls == 2


def test_the_watcher_resyncs_after_quiet_even_without_changes() -> None:
    discovery = FakeNodeDiscovery(nodes=three_nodes())
    fleet = Fleet(discovery, InMemoryObjectStorage(), virtual_nodes=64)
    watcher = FleetWatcher(fleet, discovery, resync_seconds=0.01)

    async def scenario() -> None:
        task = asyncio.create_task(watcher.run())
        await _until(lambda: discovery.calls >= 3, "periodic resyncs")
        task.cancel()

    asyncio.run(scenario())


def test_the_watcher_reconnects_with_backoff_and_relists_after_the_feed_breaks() -> None:
    discovery = FakeNodeDiscovery(nodes=three_nodes())
    fleet = Fleet(discovery, InMemoryObjectStorage(), virtual_nodes=64)
    sleeps: list[float] = []

    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(0)

    watcher = FleetWatcher(
        fleet, discovery, resync_seconds=60, initial_backoff_seconds=0.5, sleep=record_sleep
    )

    async def scenario() -> None:
        task = asyncio.create_task(watcher.run())
        await _until(lambda: len(discovery.feeds) == 1 and fleet.current is not None, "start")
        # The daemon goes away: the feed breaks and reconnecting fails twice.
        discovery.failure = DiscoveryUnavailable("docker is gone")
        discovery.feeds[0].break_feed(DiscoveryUnavailable("stream ended"))
        await _until(lambda: len(sleeps) >= 3, "reconnect attempts")
        assert fleet.current is not None  # still serving the last known nodes
        assert fleet.status().last_error is not None
        # It comes back: the watcher reconnects, lists again and resets its backoff.
        discovery.failure = None
        await _until(lambda: fleet.status().last_error is None, "recovery")
        task.cancel()

    asyncio.run(scenario())
    assert sleeps[:3] == [0.5, 1.0, 2.0]
    assert fleet.status().reconnects >= 3
    assert all(feed.closed for feed in discovery.feeds[:-1])


def test_a_newcomer_joins_the_fleet_only_once_it_answers_and_a_restarted_member_stays() -> None:
    discovery = FakeNodeDiscovery(nodes=[make_node("node-1"), make_node("node-2")])
    storage = InMemoryObjectStorage()
    fleet = Fleet(discovery, storage, virtual_nodes=64)

    async def scenario() -> None:
        await fleet.refresh()
        # A container running whose server does not answer yet: not a member.
        discovery.nodes.append(make_node("node-3"))
        storage.unreachable_nodes = {"node-3"}
        await fleet.refresh()
        assert set((await fleet.membership()).nodes) == {"node-1", "node-2"}
        storage.unreachable_nodes = set()
        await fleet.refresh_drain_marks()
        assert set((await fleet.membership()).nodes) == {"node-1", "node-2", "node-3"}
        # A member that restarts and does not answer yet stays one: it holds its IDs' objects.
        storage.unreachable_nodes = {"node-1"}
        await fleet.refresh()
        assert "node-1" in (await fleet.membership()).nodes

    asyncio.run(scenario())


def test_a_member_back_up_counts_as_down_until_its_server_answers() -> None:
    """A restarted or replaced container runs a moment before its server answers: asked in that
    moment, it would refuse connections (and count against its breaker)."""
    discovery = FakeNodeDiscovery(nodes=[make_node("node-1"), make_node("node-2")])
    storage = InMemoryObjectStorage()
    fleet = Fleet(discovery, storage, virtual_nodes=64)

    async def scenario() -> None:
        await fleet.refresh()
        discovery.nodes = [make_node("node-1", NodeState.DOWN, host=None), make_node("node-2")]
        await fleet.refresh()
        discovery.nodes = [make_node("node-1", host="10.0.0.7"), make_node("node-2")]
        storage.unreachable_nodes = {"node-1"}
        await fleet.refresh()
        assert not (await fleet.membership()).nodes["node-1"].is_up
        storage.unreachable_nodes = set()
        await fleet.refresh_drain_marks()
        back = (await fleet.membership()).nodes["node-1"]
        assert back.is_up
        assert back.host == "10.0.0.7"
        # A member already up whose probe fails (a busy node) is not taken down for it.
        storage.unreachable_nodes = {"node-2"}
        await fleet.refresh_drain_marks()
        assert (await fleet.membership()).nodes["node-2"].is_up

    asyncio.run(scenario())


def test_a_member_that_answers_the_periodic_probe_is_no_longer_resting() -> None:
    """With replicas, reads and writes pass a resting node over, so no client request would ever
    probe it again: the fleet's own probe closes its breaker once it answers."""
    discovery = FakeNodeDiscovery(nodes=[make_node("node-1"), make_node("node-2")])
    storage = InMemoryObjectStorage()
    breakers = NodeBreakers(failure_threshold=1, cooldown_seconds=60)
    fleet = Fleet(discovery, storage, virtual_nodes=64, on_answer=breakers.record_success)

    async def scenario() -> None:
        await fleet.refresh()
        breakers.record_failure("node-1")
        storage.unreachable_nodes = {"node-1"}
        await fleet.refresh_drain_marks()
        assert breakers.resting("node-1")
        storage.unreachable_nodes = set()
        await fleet.refresh_drain_marks()
        assert not breakers.resting("node-1")
        assert not breakers.state("node-1").open

    asyncio.run(scenario())
