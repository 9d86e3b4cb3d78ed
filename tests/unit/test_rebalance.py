"""The rebalance plan and its moves against in-memory fakes."""

import asyncio

import pytest

from application.rebalance import Outcome, Rebalance, RebalancePlan, RebalanceSummary, StepResult
from domain.errors import InvalidRequest
from domain.hash_ring import HashRing
from domain.node import NodeState
from domain.object_id import ObjectId
from tests.fakes import InMemoryObjectStorage, make_node

NODES = [make_node(f"node-{i}") for i in range(4)]
RING_SIZE = 64


class RecordingReporter:
    def __init__(self) -> None:
        self.plans: list[RebalancePlan] = []
        self.steps: list[StepResult] = []
        self.summaries: list[RebalanceSummary] = []

    def planned(self, plan: RebalancePlan) -> None:
        self.plans.append(plan)

    def step(self, result: StepResult) -> None:
        self.steps.append(result)

    def finished(self, summary: RebalanceSummary) -> None:
        self.summaries.append(summary)


def owner(raw_id: str, names: list[str] | None = None) -> str:
    return HashRing(names or [n.name for n in NODES], RING_SIZE).owner(ObjectId(raw_id))


def elsewhere(raw_id: str, names: list[str] | None = None) -> str:
    return next(n.name for n in NODES if n.name != owner(raw_id, names))


def run(
    storage: InMemoryObjectStorage, nodes=NODES, **options
) -> tuple[RebalancePlan, RebalanceSummary]:  # type: ignore[no-untyped-def]
    rebalance = Rebalance(storage, nodes, virtual_nodes=RING_SIZE, **options)

    async def scenario() -> tuple[RebalancePlan, RebalanceSummary]:
        plan = await rebalance.plan()
        return plan, await rebalance.execute(plan, RecordingReporter())

    return asyncio.run(scenario())


def test_objects_in_place_are_left_alone_and_misplaced_ones_are_planned() -> None:
    storage = InMemoryObjectStorage()
    storage.store(owner("home"), "home", b"h")
    storage.store(elsewhere("away"), "away", b"a")
    storage.store(elsewhere("away"), "not-an-id!", b"someone else's")
    plan = asyncio.run(Rebalance(storage, NODES, virtual_nodes=RING_SIZE).plan())
    assert plan.in_place == 1
    assert [(m.object_id, m.holder, m.owner) for m in plan.misplaced] == [
        ("away", elsewhere("away"), owner("away"))
    ]
    assert plan.foreign_keys == 1


def test_a_misplaced_object_moves_to_its_owner_and_leaves_the_holder() -> None:
    storage = InMemoryObjectStorage()
    holder = elsewhere("away")
    storage.store(holder, "away", b"payload", "image/png")
    plan, summary = run(storage)
    assert summary.moved == 1
    assert summary.bytes_moved == len(b"payload")
    assert summary.everything_in_place
    assert storage.node_of("away") == [owner("away")]
    moved = storage.objects[(owner("away"), "away")]
    assert (moved.data, moved.content_type) == (b"payload", "image/png")
    assert len(plan.misplaced) == 1


def test_a_newer_copy_on_the_owner_is_kept_and_the_older_misplaced_one_deleted() -> None:
    storage = InMemoryObjectStorage()
    storage.store(elsewhere("id1"), "id1", b"old")
    storage.store(owner("id1"), "id1", b"new")  # stamped later
    _, summary = run(storage)
    assert summary.stale_deleted == 1
    assert storage.node_of("id1") == [owner("id1")]
    assert storage.objects[(owner("id1"), "id1")].data == b"new"


def test_a_newer_misplaced_copy_replaces_an_older_one_on_the_owner() -> None:
    storage = InMemoryObjectStorage()
    storage.store(owner("id1"), "id1", b"old")
    storage.store(elsewhere("id1"), "id1", b"newer")
    _, summary = run(storage)
    assert summary.moved == 1
    assert storage.objects[(owner("id1"), "id1")].data == b"newer"
    assert storage.node_of("id1") == [owner("id1")]


def test_a_client_write_that_lands_during_the_copy_wins_on_nodes_that_honour_conditions() -> None:
    storage = InMemoryObjectStorage()
    storage.store(elsewhere("raced"), "raced", b"old copy")
    target = owner("raced")
    wrote = False

    async def client_writes_first(node: str, object_id: str) -> None:
        nonlocal wrote
        if node == target and not wrote:
            wrote = True
            storage.store(target, object_id, b"client's new version")

    storage.before_commit = client_writes_first
    _, summary = run(storage)
    assert storage.objects[(target, "raced")].data == b"client's new version"
    assert storage.node_of("raced") == [target]
    assert summary.stale_deleted == 1


def test_drain_empties_the_named_node_onto_the_others() -> None:
    storage = InMemoryObjectStorage()
    drained = "node-3"
    for i in range(40):
        storage.store(owner(f"id{i}"), f"id{i}", f"v{i}".encode())
    assert any(holder == drained for holder, _ in storage.objects)
    _, summary = run(storage, drain=[drained])
    remaining = [n.name for n in NODES if n.name != drained]
    assert all(holder != drained for holder, _ in storage.objects)
    for i in range(40):
        assert storage.node_of(f"id{i}") == [owner(f"id{i}", remaining)]
    assert summary.everything_in_place


def test_a_second_run_after_a_complete_one_has_nothing_to_do() -> None:
    storage = InMemoryObjectStorage()
    for i in range(20):
        storage.store(NODES[i % 4].name, f"id{i}", b"x")
    run(storage)
    plan, summary = run(storage)
    assert plan.misplaced == []
    assert plan.in_place == 20
    assert summary.moved == summary.stale_deleted == summary.failed == 0


def test_a_node_that_cannot_be_reached_is_reported_and_the_rest_still_moves() -> None:
    storage = InMemoryObjectStorage()
    unreachable = "node-2"
    movable = next(f"id{i}" for i in range(100) if owner(f"id{i}") not in (unreachable, "node-0"))
    storage.store("node-0", movable, b"x")
    stuck = next(f"id{i}" for i in range(100) if owner(f"id{i}") == unreachable)
    storage.store("node-0", stuck, b"y")
    storage.unreachable_nodes = {unreachable}
    plan, summary = run(storage)
    assert unreachable in plan.unlisted
    assert summary.moved == 1
    assert summary.failed == 1
    assert not summary.everything_in_place
    assert storage.node_of(movable) == [owner(movable)]
    assert storage.node_of(stuck) == ["node-0"], "a failed move keeps the only copy"


def test_a_down_node_is_not_listed_and_makes_the_run_incomplete() -> None:
    storage = InMemoryObjectStorage()
    nodes = [*NODES[:3], make_node("node-3", NodeState.DOWN)]
    plan, summary = run(storage, nodes=nodes)
    assert plan.unlisted == {"node-3": "the node is not running"}
    assert not summary.everything_in_place


def test_draining_an_unknown_node_or_every_node_is_refused() -> None:
    storage = InMemoryObjectStorage()
    with pytest.raises(InvalidRequest, match="not a member"):
        Rebalance(storage, NODES, virtual_nodes=RING_SIZE, drain=["node-9"])
    with pytest.raises(InvalidRequest, match="every node"):
        Rebalance(storage, NODES, virtual_nodes=RING_SIZE, drain=[n.name for n in NODES])


def test_every_step_is_reported() -> None:
    storage = InMemoryObjectStorage()
    storage.store(elsewhere("a1"), "a1", b"1")
    storage.store(elsewhere("a2"), "a2", b"2")
    reporter = RecordingReporter()
    rebalance = Rebalance(storage, NODES, virtual_nodes=RING_SIZE)

    async def scenario() -> None:
        plan = await rebalance.plan()
        await rebalance.execute(plan, reporter)

    asyncio.run(scenario())
    assert sorted(step.item.object_id for step in reporter.steps) == ["a1", "a2"]
    assert all(step.outcome is Outcome.MOVED for step in reporter.steps)
    assert len(reporter.summaries) == 1
