"""The rebalance command calls on its reporter only what the RebalanceReporter protocol declares."""

import asyncio
import io
from typing import Any

import pytest
from dependency_injector import providers

from application.rebalance import RebalanceReporter
from domain.errors import DiscoveryUnavailable
from domain.hash_ring import HashRing
from domain.object_id import ObjectId
from entrypoints import cli
from entrypoints.cli import JsonLinesReporter, TerminalReporter, run_rebalance
from entrypoints.container import Container
from entrypoints.settings import Settings
from tests.fakes import FakeNodeDiscovery, InMemoryObjectStorage, make_node

DECLARED = sorted(name for name in vars(RebalanceReporter) if not name.startswith("_"))


class ProtocolOnlyReporter:
    """Has exactly the protocol's methods (recording each call), and nothing else."""

    def __init__(self, _: object) -> None:
        self.calls: list[str] = []
        RECORDED.append(self)

    def __getattr__(self, name: str) -> Any:
        if name not in DECLARED:
            raise AttributeError(f"{name} is not part of the RebalanceReporter protocol")
        return lambda *_: self.calls.append(name)


RECORDED: list[ProtocolOnlyReporter] = []


def container_with(discovery: FakeNodeDiscovery, storage: InMemoryObjectStorage) -> Container:
    container = Container()
    container.settings.override(providers.Object(Settings(virtual_nodes=64)))
    container.node_discovery.override(providers.Object(discovery))
    container.object_storage.override(providers.Object(storage))
    return container


@pytest.mark.parametrize("dry_run", [True, False])
def test_the_command_calls_only_what_the_reporter_protocol_declares(
    monkeypatch: pytest.MonkeyPatch, dry_run: bool
) -> None:
    monkeypatch.setattr(cli, "JsonLinesReporter", ProtocolOnlyReporter)
    RECORDED.clear()
    nodes = [make_node(f"node-{i}") for i in range(3)]
    storage = InMemoryObjectStorage()
    ring = HashRing([n.name for n in nodes], 64)
    misplaced = next(f"id{i}" for i in range(100) if ring.owner(ObjectId(f"id{i}")) != "node-0")
    storage.store("node-0", misplaced, b"x")
    status = asyncio.run(
        run_rebalance(
            container_with(FakeNodeDiscovery(nodes=nodes), storage),
            dry_run=dry_run,
            drain=[],
            concurrency=1,
            out=io.StringIO(),
        )
    )
    (reporter,) = RECORDED
    assert status == (1 if dry_run else 0)
    assert reporter.calls[0] == "planned"
    assert set(reporter.calls) <= set(DECLARED)


def test_a_failure_before_the_plan_is_reported_through_the_protocol(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli, "JsonLinesReporter", ProtocolOnlyReporter)
    RECORDED.clear()
    discovery = FakeNodeDiscovery(failure=DiscoveryUnavailable("the daemon is gone"))
    status = asyncio.run(
        run_rebalance(
            container_with(discovery, InMemoryObjectStorage()),
            dry_run=False,
            drain=[],
            concurrency=1,
            out=io.StringIO(),
        )
    )
    assert status == cli.EXIT_USAGE
    assert RECORDED[0].calls == ["error"]


def test_both_reporters_implement_the_protocol_and_nothing_more() -> None:
    for reporter in (JsonLinesReporter, TerminalReporter):
        public = {name for name in vars(reporter) if not name.startswith("_")}
        assert public == set(DECLARED), reporter
    assert not issubclass(TerminalReporter, JsonLinesReporter)
