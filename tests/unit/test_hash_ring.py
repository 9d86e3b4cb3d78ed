import asyncio
from collections import Counter

import pytest
from dependency_injector import providers
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import NoNodesAvailable
from domain.hash_ring import DEFAULT_VIRTUAL_NODES, HashRing
from domain.object_id import ObjectId
from entrypoints.container import Container
from tests.fakes import FakeNodeDiscovery, InMemoryObjectStorage, make_node

IDS = [ObjectId(f"object{i}") for i in range(100_000)]
SAMPLE_IDS = IDS[:20_000]


def node_names(count: int) -> list[str]:
    return [f"amazin-object-storage-node-{i}" for i in range(1, count + 1)]


def test_placement_is_the_same_for_every_ring_built_from_the_same_names_in_any_order() -> None:
    names = node_names(5)
    first = HashRing(names)
    reordered = HashRing(list(reversed(names)))
    assert all(first.owner(i) == reordered.owner(i) for i in SAMPLE_IDS)


def test_placement_never_changes_between_processes_or_releases() -> None:
    # Pinned owners: Python's salted hash() or a change of hash function would move stored objects
    # out of reach of every gateway that places them anew.
    ring = HashRing(node_names(3))
    owners = [ring.owner(ObjectId(raw)) for raw in ("abc", "hello", "x1", "Zz9")]
    assert owners == [
        "amazin-object-storage-node-2",
        "amazin-object-storage-node-1",
        "amazin-object-storage-node-3",
        "amazin-object-storage-node-2",
    ]


@pytest.mark.parametrize("node_count", [3, 5, 10, 16])
def test_ids_spread_evenly_across_nodes(node_count: int) -> None:
    ring = HashRing(node_names(node_count))
    load = Counter(ring.owner(i) for i in IDS)
    assert set(load) == set(node_names(node_count))
    mean = len(IDS) / node_count
    assert max(load.values()) / mean <= 1.05


@pytest.mark.parametrize("node_count", [3, 5, 10])
def test_adding_a_node_moves_only_its_fair_share_and_only_to_the_new_node(node_count: int) -> None:
    before = HashRing(node_names(node_count))
    after = HashRing(node_names(node_count + 1))
    new_node = node_names(node_count + 1)[-1]
    moved = [i for i in IDS if before.owner(i) != after.owner(i)]
    assert len(moved) / len(IDS) <= 1.1 / (node_count + 1)
    assert {after.owner(i) for i in moved} == {new_node}


@pytest.mark.parametrize("node_count", [3, 5, 10])
def test_removing_a_node_moves_only_the_ids_it_owned(node_count: int) -> None:
    names = node_names(node_count)
    before = HashRing(names)
    removed = names[1]
    after = HashRing([name for name in names if name != removed])
    moved = [i for i in IDS if before.owner(i) != after.owner(i)]
    assert moved
    assert all(before.owner(i) == removed for i in moved)


def test_preference_list_starts_with_the_owner_and_names_every_node_once() -> None:
    ring = HashRing(node_names(5))
    for object_id in SAMPLE_IDS[:1000]:
        preference = ring.preference_list(object_id)
        assert preference[0] == ring.owner(object_id)
        assert sorted(preference) == sorted(node_names(5))


def test_preference_list_can_be_cut_to_a_count() -> None:
    ring = HashRing(node_names(5))
    assert len(ring.preference_list(ObjectId("abc"), 2)) == 2
    assert len(ring.preference_list(ObjectId("abc"), 10)) == 5


def test_removing_the_owner_hands_its_ids_to_the_next_node_in_its_preference_list() -> None:
    names = node_names(5)
    ring = HashRing(names)
    without = {name: HashRing(set(names) - {name}) for name in names}
    for object_id in SAMPLE_IDS[:2000]:
        owner, successor = ring.preference_list(object_id, 2)
        assert without[owner].owner(object_id) == successor


def test_an_empty_ring_has_no_nodes_available() -> None:
    with pytest.raises(NoNodesAvailable):
        HashRing([]).owner(ObjectId("abc"))


def test_a_single_node_owns_everything() -> None:
    ring = HashRing(["only"])
    assert {ring.owner(i) for i in SAMPLE_IDS[:1000]} == {"only"}


@given(
    names=st.sets(st.text(min_size=1, max_size=20), min_size=1, max_size=8),
    raw_id=st.from_regex(r"[A-Za-z0-9]{1,32}", fullmatch=True),
)
def test_the_owner_is_always_one_of_the_nodes(names: set[str], raw_id: str) -> None:
    ring = HashRing(names, virtual_nodes=16)
    assert ring.owner(ObjectId(raw_id)) in names


@pytest.mark.parametrize("node_count", [3, 5, 10, 16])
def test_the_ring_the_app_builds_balances_within_5_percent(node_count: int) -> None:
    # The container's own fleet and settings: the ring that is deployed, not a class default.
    container = Container()
    discovery = FakeNodeDiscovery(nodes=[make_node(f"node-{i}") for i in range(node_count)])
    container.node_discovery.override(providers.Object(discovery))
    container.object_storage.override(providers.Object(InMemoryObjectStorage()))
    fleet = container.fleet()
    membership = asyncio.run(fleet.membership())
    assert membership.ring.virtual_nodes == DEFAULT_VIRTUAL_NODES
    load = Counter(membership.ring.owner(ObjectId(f"id{i}")) for i in range(100_000))
    assert len(load) == node_count
    assert max(load.values()) / (100_000 / node_count) <= 1.05
