"""GET /objects against real nodes: a few thousand objects, paged, across a membership change."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.support import (
    GatewayServer,
    StorageNode,
    new_run_marker,
    start_node,
    wait_for,
)

OBJECTS = 2400
PAGE = 500


@pytest.fixture
def fleet_nodes() -> Iterator[tuple[str, list[StorageNode]]]:
    marker = new_run_marker()
    started: list[StorageNode] = []
    try:
        for index in (1, 2):
            started.append(start_node(marker, index))
        yield marker, started
    finally:
        for node in started:
            node.wrapped.remove(force=True, v=True)
            node.container.get_docker_client().client.close()


def every_page(http: httpx.Client, **params: object) -> tuple[list[dict[str, object]], int]:
    listed: list[dict[str, object]] = []
    pages = 0
    after: str | None = None
    while True:
        query = {"limit": PAGE, **params} | ({"after": after} if after else {})
        response = http.get("/objects", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["objects"]) <= PAGE
        listed.extend(body["objects"])
        pages += 1
        after = body["next"]
        if after is None:
            return listed, pages


def test_every_stored_id_is_listed_once_newest_and_live_across_a_new_node(
    fleet_nodes: tuple[str, list[StorageNode]],
) -> None:
    marker, nodes = fleet_nodes
    expected: dict[str, bytes] = {f"item{i:05d}": f"first {i}".encode() for i in range(OBJECTS)}

    with (
        GatewayServer.for_marker(marker) as gateway,
        httpx.Client(base_url=gateway.base_url, timeout=60) as http,
        ThreadPoolExecutor(max_workers=8) as pool,
    ):

        def put(item: tuple[str, bytes]) -> int:
            return http.put(f"/object/{item[0]}", content=item[1]).status_code

        assert set(pool.map(put, expected.items())) <= {200, 201}

        # A third node joins: rewrites of IDs it now owns land there, and the older copies stay
        # where they were until a rebalance, so those IDs have two copies that differ.
        nodes.append(start_node(marker, 3))
        wait_for(lambda: len(http.get("/health/ready").json()["nodes"]) == 3, 20, "the third node")
        rewritten = {object_id: b"rewritten " + object_id.encode() for object_id in expected}
        rewritten = dict(list(rewritten.items())[::7])
        assert set(pool.map(put, rewritten.items())) <= {200, 201}
        expected |= rewritten
        deleted = list(expected)[3::11]
        assert {http.delete(f"/object/{object_id}").status_code for object_id in deleted} == {204}
        for object_id in deleted:
            del expected[object_id]
        held = [node.object_names() for node in nodes]
        assert sum(len(names) for names in held) > len(expected), "no ID has two copies"

        listed, pages = every_page(http)
        assert [entry["id"] for entry in listed] == sorted(expected)
        assert pages == -(-len(expected) // PAGE)
        for entry in listed:
            body = expected[str(entry["id"])]
            assert entry["size"] == len(body)
            assert entry["etag"] == hashlib.md5(body).hexdigest()  # S3's ETag of a plain upload

        under = [entry["id"] for entry in every_page(http, prefix="item001")[0]]
        assert under == sorted(i for i in expected if i.startswith("item001"))

        status, _ = gateway.command("rebalance")
        assert status == 0
        assert [entry["id"] for entry in every_page(http)[0]] == sorted(expected)

        nodes[0].stop()
        wait_for(lambda: http.get("/objects").status_code == 503, 20, "a 503 while a node is down")
        refused = http.get("/objects").json()
        assert refused["error"] == "node_unavailable"
        assert nodes[0].name in refused["detail"]
