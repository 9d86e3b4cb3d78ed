"""A fleet mixing a MinIO node and a RustFS node: discovery reads each server's own key names."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from domain.hash_ring import DEFAULT_VIRTUAL_NODES, HashRing
from domain.object_id import ObjectId
from tests.integration.support import (
    GatewayServer,
    StorageNode,
    new_run_marker,
    start_node,
    start_rustfs_node,
    wait_for,
)


@pytest.fixture
def mixed_fleet() -> Iterator[tuple[str, StorageNode, StorageNode]]:
    marker = new_run_marker()
    started: list[StorageNode] = []
    try:
        started.append(start_node(marker, 1))
        started.append(start_rustfs_node(marker, 2))
        yield marker, started[0], started[1]
    finally:
        for node in started:
            node.wrapped.remove(force=True, v=True)
            node.container.get_docker_client().client.close()


def test_a_node_keyed_by_rustfs_variables_is_a_member_and_stores_its_ids(
    mixed_fleet: tuple[str, StorageNode, StorageNode],
) -> None:
    marker, minio_node, rustfs_node = mixed_fleet
    ring = HashRing([minio_node.name, rustfs_node.name], DEFAULT_VIRTUAL_NODES)
    ids = [f"rust{i}" for i in range(40)]
    on_rustfs = {i for i in ids if ring.owner(ObjectId(i)) == rustfs_node.name}
    assert on_rustfs
    assert on_rustfs != set(ids)

    with (
        GatewayServer.for_marker(marker) as gateway,
        httpx.Client(base_url=gateway.base_url, timeout=30) as http,
    ):
        wait_for(
            lambda: (
                {n["name"] for n in http.get("/health/ready").json()["nodes"]}
                == {minio_node.name, rustfs_node.name}
            ),
            30,
            "both nodes to be members",
        )
        for object_id in ids:
            assert http.put(f"/object/{object_id}", content=object_id.encode()).status_code in (
                200,
                201,
            )
        for object_id in ids:
            assert http.get(f"/object/{object_id}").content == object_id.encode()

    # Read with the node's own RustFS keys: the gateway found them and stored there.
    assert on_rustfs <= rustfs_node.object_names()
    assert not on_rustfs & minio_node.object_names()
