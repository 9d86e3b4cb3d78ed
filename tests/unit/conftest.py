"""Shared fixtures of the unit tests: the real app wired to in-memory fakes of the ports."""

from collections.abc import Iterator

import pytest
from dependency_injector import providers
from litestar.testing import TestClient

from application.auth import Credentials
from domain.hash_ring import HashRing
from domain.node import NodeState
from domain.object_id import ObjectId
from entrypoints.container import Container
from entrypoints.http.app import create_app
from entrypoints.settings import Settings
from tests.fakes import (
    FakeClock,
    FakeNodeDiscovery,
    InMemoryCredentialStore,
    InMemoryObjectStorage,
    make_node,
)


class Harness:
    def __init__(self, settings: Settings) -> None:
        self.discovery = FakeNodeDiscovery(nodes=[make_node(f"node-{i}") for i in (1, 2, 3)])
        self.storage = InMemoryObjectStorage()
        # Used only when the settings turn auth on (auth_tokens_file): no file is touched.
        self.credential_store = InMemoryCredentialStore()
        self.clock = FakeClock()
        self.container = Container()
        self.container.settings.override(providers.Object(settings))
        self.container.node_discovery.override(providers.Object(self.discovery))
        self.container.object_storage.override(providers.Object(self.storage))
        self.container.credential_store.override(providers.Object(self.credential_store))
        self.container.clock.override(providers.Object(self.clock))
        # Off whatever OTEL_* variables the machine has; tests that trace set their own tracer.
        self.container.tracer.override(providers.Object(None))

    def credentials(self) -> Credentials:
        """What the object-gateway token, sign and signing-key commands change."""
        return self.container.credentials()

    def reload_credentials(self) -> None:
        """What the gateway's look at the tokens file does every GATEWAY_AUTH_RELOAD_SECONDS."""
        access = self.container.access_control()
        assert access is not None, "auth is off in these settings"
        access.refresh()

    def refresh(self, client: TestClient) -> None:
        """Tell the app's fleet that discovery changed, as the watcher would on a Docker event."""
        client.blocking_portal.call(self.container.fleet().refresh)

    def stop_owner_of(self, raw_id: str) -> str:
        names = [node.name for node in self.discovery.nodes]
        owner = HashRing(names, self.container.settings().virtual_nodes).owner(ObjectId(raw_id))
        self.discovery.nodes = [
            make_node(n.name, NodeState.DOWN) if n.name == owner else n
            for n in self.discovery.nodes
        ]
        return owner


@pytest.fixture
def harness() -> Harness:
    return Harness(Settings(virtual_nodes=64))


@pytest.fixture
def client(harness: Harness) -> Iterator[TestClient]:
    with TestClient(create_app(harness.container)) as test_client:
        yield test_client
