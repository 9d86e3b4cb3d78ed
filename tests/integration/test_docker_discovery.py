"""DockerNodeDiscovery against the real daemon and real node containers."""

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import docker
import pytest

from adapters.docker import DockerNodeDiscovery
from domain.node import Node, NodeState
from tests.integration.support import MINIO_IMAGE, TEST_LABELS, StorageNode


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


def discover(marker: str, executor: ThreadPoolExecutor) -> dict[str, Node]:
    discovery = DockerNodeDiscovery(docker.from_env, marker, 9000, executor)
    try:
        return {node.name: node for node in asyncio.run(discovery.discover())}
    finally:
        discovery.close()


def test_every_marked_container_is_found_with_its_own_keys_and_address(
    nodes: list[StorageNode], run_marker: str, executor: ThreadPoolExecutor
) -> None:
    found = discover(run_marker, executor)
    assert set(found) == {node.name for node in nodes}
    for node in nodes:
        member = found[node.name]
        assert member.state is NodeState.UP
        assert member.credentials.access_key == node.access_key
        assert member.credentials.secret_key == node.secret_key
        assert member.host == node.ip_address()
        assert member.port == 9000
    assert any(node.legacy_key_names for node in nodes)


def test_keyless_and_never_started_containers_are_skipped_and_a_stopped_one_is_a_down_member(
    docker_client: docker.DockerClient, executor: ThreadPoolExecutor
) -> None:
    marker = f"amazin-object-storage-node-{uuid.uuid4().hex[:8]}"
    keyless = docker_client.containers.create(
        MINIO_IMAGE, "server /data", name=f"{marker}-keyless", labels=TEST_LABELS
    )
    stopped = docker_client.containers.run(
        MINIO_IMAGE,
        "server /data",
        name=f"{marker}-stopped",
        labels=TEST_LABELS,
        environment={"MINIO_ROOT_USER": "stoppeduser", "MINIO_ROOT_PASSWORD": "stoppedpass"},
        detach=True,
    )
    stopped.stop(timeout=1)
    # Created and never started: it holds nothing, so it is no member (yet).
    created = docker_client.containers.create(
        MINIO_IMAGE,
        "server /data",
        name=f"{marker}-created",
        labels=TEST_LABELS,
        environment={"MINIO_ROOT_USER": "createduser", "MINIO_ROOT_PASSWORD": "createdpass"},
    )
    # Shares the marker as a substring only through a regex wildcard: must not be a member.
    lookalike = docker_client.containers.create(
        MINIO_IMAGE,
        "server /data",
        name=marker.replace("-node-", "-nodeX"),
        labels=TEST_LABELS,
        environment={"MINIO_ROOT_USER": "otheruser", "MINIO_ROOT_PASSWORD": "otherpass"},
    )
    try:
        found = discover(marker, executor)
        assert set(found) == {f"{marker}-stopped"}
        assert found[f"{marker}-stopped"].state is NodeState.DOWN
        assert found[f"{marker}-stopped"].host is None
    finally:
        for container in (keyless, stopped, created, lookalike):
            container.remove(force=True)
