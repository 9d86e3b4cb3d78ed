"""The rebalance by versions, against in-memory fakes: the newest wins wherever it is."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from application.fleet import Fleet
from application.node_access import NodeAccess
from application.rebalance import (
    Outcome,
    Rebalance,
    RebalanceSummary,
    StepResult,
    Survey,
)
from application.walks import merged_walk
from domain.circuit_breaker import NodeBreakers
from domain.hash_ring import HashRing
from domain.in_flight import InFlightLimits
from domain.node import DrainState, Node, NodeState
from domain.object_id import ObjectId
from domain.objects import StoredVersion
from domain.versions import Version
from tests.fakes import FakeNodeDiscovery, InMemoryObjectStorage, make_node
from tests.unit.gateways import Gateway, body_of, v

NODES = [make_node(f"node-{i}") for i in range(4)]
RING_SIZE = 64
NOW = 1_800_000_000.0


class RecordingReporter:
    def __init__(self) -> None:
        self.steps: list[StepResult] = []
        self.summaries: list[RebalanceSummary] = []
        self.moves: list[tuple[str, list[str], str]] = []
        self.rings: list[tuple[str, bool]] = []

    def surveyed(self, survey: Survey) -> None:
        pass

    def planned_move(self, object_id: str, holders: Sequence[str], owner: str, size: int) -> None:
        self.moves.append((object_id, list(holders), owner))

    def step(self, result: StepResult) -> None:
        self.steps.append(result)

    def finished(self, summary: RebalanceSummary) -> None:
        self.summaries.append(summary)

    def ring(self, fingerprint: str, settled: bool) -> None:
        self.rings.append((fingerprint, settled))


def owner(raw_id: str, names: Sequence[str] | None = None) -> str:
    return HashRing(names or [n.name for n in NODES], RING_SIZE).owner(ObjectId(raw_id))


def elsewhere(raw_id: str, skip: int = 0) -> str:
    return [n.name for n in NODES if n.name != owner(raw_id)][skip]


def rebalance(
    storage: InMemoryObjectStorage, nodes: Sequence[Node] = NODES, **options: object
) -> Rebalance:
    """A pass over ``nodes`` as a gateway whose fleet is them sees them (draining: marked so)."""
    for name in options.pop("draining", frozenset()):  # type: ignore[attr-defined]
        storage.drain_marks[name] = DrainState.DRAINING
    fleet = Fleet(FakeNodeDiscovery(nodes=list(nodes)), storage, virtual_nodes=RING_SIZE)
    asyncio.run(fleet.refresh())
    return Rebalance(
        fleet,
        storage,
        NodeAccess(NodeBreakers(3, 60), InFlightLimits(16)),
        storage,
        wall_clock=lambda: NOW,
        **options,  # type: ignore[arg-type]
    )


def run(
    storage: InMemoryObjectStorage, nodes: Sequence[Node] = NODES, **options: object
) -> tuple[RebalanceSummary, RecordingReporter]:
    reporter = RecordingReporter()
    summary = asyncio.run(rebalance(storage, nodes, **options).execute(reporter))
    return summary, reporter


def gateway_over(storage: InMemoryObjectStorage) -> Gateway:
    """A gateway (its use cases) over the same nodes and storage."""
    return Gateway(storage=storage, discovery=FakeNodeDiscovery(nodes=list(NODES)))


def test_the_survey_counts_what_is_out_of_place_and_changes_nothing() -> None:
    storage = InMemoryObjectStorage()
    storage.store(owner("home"), "home", b"h", version=v(1))
    storage.store(elsewhere("away"), "away", b"aa", version=v(1))
    storage.store(elsewhere("away"), "not-an-id!", b"someone else's")
    reporter = RecordingReporter()
    before = dict(storage.objects)
    survey = asyncio.run(rebalance(storage).survey(reporter))
    assert (survey.in_place, survey.misplaced, survey.misplaced_bytes) == (1, 1, 2)
    assert survey.foreign_keys == 1
    assert reporter.moves == [("away", [elsewhere("away")], owner("away"))]
    assert storage.objects == before


def test_a_misplaced_object_moves_to_its_owner_keeping_its_version_and_type() -> None:
    storage = InMemoryObjectStorage()
    storage.store(elsewhere("away"), "away", b"payload", "image/png", version=v(5))
    summary, _ = run(storage)
    assert (summary.moved, summary.bytes_moved) == (1, len(b"payload"))
    assert summary.everything_in_place
    assert storage.node_of("away") == [owner("away")]
    moved = storage.objects[(owner("away"), "away")]
    assert (moved.data, moved.content_type, moved.version) == (b"payload", "image/png", v(5))


def test_of_two_misplaced_copies_the_newest_wins_whatever_the_node_order() -> None:
    # The newer copy on the node that sorts first and on the one that sorts last, in turn.
    for newer_on, older_on in ((0, 1), (1, 0)):
        storage = InMemoryObjectStorage()
        holders = [elsewhere("twice", 0), elsewhere("twice", 1)]
        storage.store(holders[older_on], "twice", b"v1", version=v(10))
        storage.store(holders[newer_on], "twice", b"v2", version=v(20))
        storage.store(owner("twice"), "twice", b"v0", version=v(5))
        summary, _ = run(storage)
        assert summary.moved == 1
        assert storage.node_of("twice") == [owner("twice")]
        assert storage.objects[(owner("twice"), "twice")].data == b"v2"


def test_versions_order_copies_within_the_same_second_not_last_modified() -> None:
    storage = InMemoryObjectStorage()
    # Written in this order, so the fake's Last-Modified would rank them the other way round.
    storage.store(
        elsewhere("samesecond"), "samesecond", b"later", version=v(100.7, writer="b" * 16)
    )
    storage.store(owner("samesecond"), "samesecond", b"earlier", version=v(100.2))
    run(storage)
    assert storage.objects[(owner("samesecond"), "samesecond")].data == b"later"
    assert storage.node_of("samesecond") == [owner("samesecond")]


def test_an_older_copy_never_replaces_a_newer_one_on_the_owner() -> None:
    storage = InMemoryObjectStorage()
    storage.store(owner("kept"), "kept", b"new", version=v(20))
    storage.store(elsewhere("kept"), "kept", b"old", version=v(10))
    summary, _ = run(storage)
    assert summary.stale_deleted == 1
    assert storage.objects[(owner("kept"), "kept")].data == b"new"
    assert storage.node_of("kept") == [owner("kept")]


def test_objects_kept_before_versions_rank_by_their_last_modified_and_get_keys_of_their_own() -> (
    None
):
    storage = InMemoryObjectStorage()
    storage.store(owner("legacy"), "legacy", b"versioned long ago", version=v(1))
    storage.store(elsewhere("legacy"), "legacy", b"unversioned, written later")
    storage.store(elsewhere("old"), "old", b"first")
    storage.store(owner("old"), "old", b"second")  # one second later
    newer = Version(int(NOW * 1e9), "a" * 16, 1)
    storage.store(owner("beaten"), "beaten", b"unversioned")
    storage.store(elsewhere("beaten"), "beaten", b"versioned since", version=newer)
    run(storage)
    assert storage.objects[(owner("legacy"), "legacy")].data == b"unversioned, written later"
    assert storage.objects[(owner("old"), "old")].data == b"second"
    assert storage.objects[(owner("beaten"), "beaten")].data == b"versioned since"
    for raw_id in ("legacy", "old", "beaten"):
        assert storage.node_of(raw_id) == [owner(raw_id)]
        (kept,) = storage.versions_of(owner(raw_id), raw_id)
        assert not kept.legacy, "moved to a key of its own"
    assert storage.migrated == {n.name for n in NODES}, "no node holds the old layout any more"


def test_a_write_from_another_gateway_landing_during_the_copy_stays_the_newest() -> None:
    # The copy is a record of its own beside the write's: neither undoes the other.
    storage = InMemoryObjectStorage()
    storage.store(elsewhere("raced"), "raced", b"old copy", version=v(10))
    target = owner("raced")

    async def client_writes_first(node: str, object_id: str) -> None:
        if node == target and storage.before_commit is not None:
            storage.before_commit = None
            storage.store(target, object_id, b"client's new version", version=v(30))

    storage.before_commit = client_writes_first
    _, reporter = run(storage)
    assert storage.objects[(target, "raced")].data == b"client's new version"
    assert [step.outcome for step in reporter.steps] == [Outcome.MOVED]
    # The next pass finds the copy beside the newer version, and removes it.
    summary, _ = run(storage)
    assert summary.stale_deleted == 1
    assert storage.node_of("raced") == [target]
    assert [stored.version for stored in storage.versions_of(target, "raced")] == [v(30)]


def test_a_copy_that_a_read_repair_made_meanwhile_counts_as_moved_not_left() -> None:
    """The repair command and a read repair racing to fill the same replica: whichever lands
    first, the replica holds the newest version and the step is done (the command exits 0)."""
    storage = InMemoryObjectStorage()
    storage.store(elsewhere("raced"), "raced", b"the only copy", version=v(10))
    target = owner("raced")

    async def read_repair_lands_first(node: str, object_id: str) -> None:
        if node == target and storage.before_commit is not None:
            storage.before_commit = None
            storage.store(target, object_id, b"the only copy", version=v(10))

    storage.before_commit = read_repair_lands_first
    summary, reporter = run(storage)
    assert [step.outcome for step in reporter.steps] == [Outcome.MOVED]
    assert summary.everything_in_place
    assert storage.node_of("raced") == [target]


def test_a_client_write_landing_during_a_copy_wins_on_nodes_that_ignore_conditions() -> None:
    storage = InMemoryObjectStorage()
    storage.store(elsewhere("raced"), "raced", b"old copy", version=v(10))
    gateway = gateway_over(storage)
    client: asyncio.Future[object] | None = None

    async def client_writes_meanwhile(node: str, object_id: str) -> None:
        nonlocal client
        if client is None:
            client = asyncio.ensure_future(gateway.put("raced", body_of(b"client"), 6, None))
            await asyncio.sleep(0.01)  # as far as it gets: its last chunk waits for its turn

    async def scenario() -> None:
        await gateway.fleet.refresh()
        storage.before_commit = client_writes_meanwhile
        await gateway.rebalance().execute(RecordingReporter())
        assert client is not None
        await client
        storage.before_commit = None
        await gateway.rebalance().execute(RecordingReporter())

    asyncio.run(scenario())
    assert storage.node_of("raced") == [owner("raced")]
    assert storage.objects[(owner("raced"), "raced")].data == b"client"


def test_a_delete_from_another_gateway_while_the_copy_is_read_brings_nothing_back() -> None:
    storage = InMemoryObjectStorage()
    storage.store(elsewhere("gone"), "gone", b"old copy", version=v(10))
    target = owner("gone")

    async def client_deletes(node: str, object_id: str) -> None:
        if node == target and storage.before_commit is not None:
            storage.before_commit = None
            storage.store(target, object_id, b"", version=v(NOW - 60), deleted=True)

    storage.before_commit = client_deletes
    run(storage)
    run(storage)
    assert storage.node_of("gone") == [target]
    assert storage.objects[(target, "gone")].deleted


def test_a_delete_through_the_same_gateway_during_a_copy_brings_nothing_back() -> None:
    storage = InMemoryObjectStorage()
    storage.store(elsewhere("gone"), "gone", b"old copy", version=v(10))
    gateway = gateway_over(storage)
    client: asyncio.Future[object] | None = None

    async def client_deletes_meanwhile(node: str, object_id: str) -> None:
        nonlocal client
        if client is None:
            client = asyncio.ensure_future(gateway.delete("gone"))
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        await gateway.fleet.refresh()
        storage.before_commit = client_deletes_meanwhile
        await gateway.rebalance().execute(RecordingReporter())
        assert client is not None
        await client
        storage.before_commit = None
        await gateway.rebalance().execute(RecordingReporter())

    asyncio.run(scenario())
    assert storage.node_of("gone") == [owner("gone")]
    assert storage.objects[(owner("gone"), "gone")].deleted


def test_a_tombstone_moves_like_an_object_and_covers_the_older_copies() -> None:
    storage = InMemoryObjectStorage()
    storage.store(owner("deleted"), "deleted", b"old on the owner", version=v(10))
    storage.store(elsewhere("deleted"), "deleted", b"", version=v(40), deleted=True)
    summary, _ = run(storage)
    assert summary.moved == 1
    assert storage.node_of("deleted") == [owner("deleted")]
    assert storage.objects[(owner("deleted"), "deleted")].deleted


def test_a_tombstone_is_purged_only_alone_past_its_grace_and_with_every_node_listed() -> None:
    storage = InMemoryObjectStorage()
    for raw_id, seconds in (("oldstone", NOW - 7200), ("newstone", NOW - 60)):
        storage.store(owner(raw_id), raw_id, b"", version=v(seconds), deleted=True)
    down = [*NODES[:3], make_node("node-3", NodeState.DOWN)]
    summary, _ = run(storage, down, tombstone_grace_seconds=3600)
    assert summary.purged == 0, "a node not listed may hold a copy the tombstone covers"
    summary, _ = run(storage, tombstone_grace_seconds=3600)
    assert summary.purged == 1
    assert storage.node_of("oldstone") == []
    assert storage.node_of("newstone") == [owner("newstone")]


def test_a_draining_node_is_emptied_onto_the_others() -> None:
    storage = InMemoryObjectStorage()
    drained = "node-3"
    for i in range(40):
        storage.store(owner(f"id{i}"), f"id{i}", f"v{i}".encode(), version=v(i))
    assert any(holder == drained for holder, _ in storage.objects)
    summary, _ = run(storage, draining=frozenset({drained}))
    remaining = [n.name for n in NODES if n.name != drained]
    assert all(holder != drained for holder, _ in storage.objects)
    for i in range(40):
        assert storage.node_of(f"id{i}") == [owner(f"id{i}", remaining)]
        assert storage.objects[(owner(f"id{i}", remaining), f"id{i}")].version == v(i)
    assert summary.everything_in_place


def test_a_second_run_after_a_complete_one_has_nothing_to_do() -> None:
    storage = InMemoryObjectStorage()
    for i in range(20):
        storage.store(NODES[i % 4].name, f"id{i}", b"x", version=v(i))
    run(storage)
    survey = asyncio.run(rebalance(storage).survey())
    summary, reporter = run(storage)
    assert (survey.misplaced, survey.in_place) == (0, 20)
    assert reporter.steps == []
    assert summary.everything_in_place


def test_a_node_that_cannot_be_reached_is_reported_and_the_rest_still_moves() -> None:
    storage = InMemoryObjectStorage()
    unreachable = "node-2"
    movable = next(f"id{i}" for i in range(100) if owner(f"id{i}") not in (unreachable, "node-0"))
    storage.store("node-0", movable, b"x", version=v(1))
    stuck = next(f"id{i}" for i in range(100) if owner(f"id{i}") == unreachable)
    storage.store("node-0", stuck, b"y", version=v(1))
    storage.unreachable_nodes = {unreachable}
    summary, _ = run(storage)
    assert summary.unlisted_nodes == 1
    assert (summary.moved, summary.failed) == (1, 1)
    assert not summary.everything_in_place
    assert storage.node_of(movable) == [owner(movable)]
    assert storage.node_of(stuck) == ["node-0"], "a failed move keeps the only copy"


def test_a_down_node_is_not_listed_and_makes_the_run_incomplete() -> None:
    nodes = [*NODES[:3], make_node("node-3", NodeState.DOWN)]
    summary, _ = run(InMemoryObjectStorage(), nodes)
    assert summary.unlisted_nodes == 1
    assert not summary.everything_in_place


def test_walks_are_merged_in_id_order_pulling_one_id_ahead_per_node() -> None:
    storage = InMemoryObjectStorage()
    for i in range(300):
        storage.store(NODES[i % 3].name, f"k{i:04d}", b"x", version=v(1))
    storage.store(NODES[3].name, "k0007", b"x", version=v(2))
    storage.store(NODES[3].name, "k0007", b"y", version=v(3))
    pulled = [0]
    original = storage.walk

    async def counting(node: Node, **bounds: object) -> AsyncIterator[tuple[str, StoredVersion]]:
        async for entry in original(node, **bounds):  # type: ignore[arg-type]
            pulled[0] += 1
            yield entry

    storage.walk = counting  # type: ignore[method-assign]

    async def scenario() -> list[tuple[str, list[tuple[str, int]]]]:
        seen = []
        async for key, held in merged_walk(storage, NODES, {}):
            # Never more than an ID per node (and its versions) beyond the one handed out.
            assert pulled[0] <= len(seen) + 1 + 3 * len(NODES)
            seen.append((key, [(node.name, len(versions)) for node, versions in held]))
        return seen

    seen = asyncio.run(scenario())
    assert [key for key, _ in seen] == sorted(f"k{i:04d}" for i in range(300))
    assert dict(seen)["k0007"] == [(NODES[1].name, 1), (NODES[3].name, 2)]


# -- with N replicas per ID (the repair) ------------------------------------------------------


def replicas_of(raw_id: str, count: int = 3) -> list[str]:
    return HashRing([n.name for n in NODES], RING_SIZE).preference_list(ObjectId(raw_id))[:count]


def test_the_repair_puts_the_newest_copy_on_each_of_the_n_replicas_and_removes_handoffs() -> None:
    storage = InMemoryObjectStorage()
    first, second, third = replicas_of("abc")
    (handoff,) = [n.name for n in NODES if n.name not in (first, second, third)]
    # Written while the third replica was down: a handoff copy on the fourth node.
    storage.store(first, "abc", b"new", version=v(20))
    storage.store(second, "abc", b"new", version=v(20))
    storage.store(handoff, "abc", b"new", version=v(20))
    storage.store(third, "abc", b"old", version=v(10))

    summary, _ = run(storage, replicas=3)

    assert summary.moved == 1
    assert summary.everything_in_place
    assert sorted(storage.node_of("abc")) == sorted([first, second, third])
    assert {storage.objects[(node, "abc")].version for node in (first, second, third)} == {v(20)}


def test_a_replica_replaced_by_an_empty_node_is_refilled_and_a_second_run_has_nothing_to_do() -> (
    None
):
    storage = InMemoryObjectStorage()
    ids = [f"id{i}" for i in range(30)]
    for raw_id in ids:
        for node in replicas_of(raw_id):
            storage.store(node, raw_id, raw_id.encode(), version=v(1))
    emptied = "node-1"
    storage.records = {key: value for key, value in storage.records.items() if key[0] != emptied}

    summary, _ = run(storage, replicas=3)

    for raw_id in ids:
        assert sorted(storage.node_of(raw_id)) == sorted(replicas_of(raw_id))
    assert summary.moved == sum(1 for raw_id in ids if emptied in replicas_of(raw_id))
    survey = asyncio.run(rebalance(storage, replicas=3).survey())
    assert (survey.misplaced, survey.in_place) == (0, 30)


def test_a_tombstone_is_purged_only_once_every_replica_holds_it() -> None:
    storage = InMemoryObjectStorage()
    tombstone = v(NOW - 7200)
    first, second, third = replicas_of("gone")
    for node in (first, second):
        storage.store(node, "gone", b"", version=tombstone, deleted=True)
    storage.store(third, "gone", b"old", version=v(10))
    storage.unreachable_nodes = {third}

    summary, _ = run(storage, replicas=3, tombstone_grace_seconds=3600)
    assert summary.purged == 0
    assert storage.node_of("gone") == sorted([first, second, third])

    storage.unreachable_nodes = set()
    summary, _ = run(storage, replicas=3, tombstone_grace_seconds=3600)
    # The third replica got the tombstone, lost the old version, and then all of it went.
    assert summary.purged == 1
    assert storage.node_of("gone") == []
