"""Two gateways over one fleet of real nodes: a drain through one while the other takes slow
uploads, and objects kept under the layout before versions had keys, read and moved by repair.

Each gateway is a composition root of its own (its own fleet view, clock, breakers), as two
processes would be; they share nothing but the nodes.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import random
import time
from collections.abc import Iterator

import httpx
import pytest

from domain.hash_ring import DEFAULT_VIRTUAL_NODES, HashRing
from domain.object_id import ObjectId
from tests.integration.support import (
    BUCKET,
    GatewayServer,
    StorageNode,
    new_run_marker,
    start_node,
    wait_for,
)


@pytest.fixture
def three_nodes() -> Iterator[tuple[str, list[StorageNode]]]:
    marker = new_run_marker()
    nodes: list[StorageNode] = []
    try:
        for index in (1, 2, 3):
            nodes.append(start_node(marker, index))
        yield marker, nodes
    finally:
        for node in nodes:
            node.wrapped.remove(force=True, v=True)
            node.container.get_docker_client().client.close()


def members(http: httpx.Client) -> int:
    return len(http.get("/health/ready").json()["nodes"])


def trickled(body: bytes, seconds: float, pieces: int = 8) -> Iterator[bytes]:
    """A client that sends its body in pieces over ``seconds``."""
    size = -(-len(body) // pieces)
    for start in range(0, len(body), size):
        time.sleep(seconds / pieces)
        yield body[start : start + size]


def test_uploads_slower_than_a_drain_through_another_gateway_survive_the_nodes_removal(
    three_nodes: tuple[str, list[StorageNode]],
) -> None:
    marker, nodes = three_nodes
    drained = nodes[1]
    ring = HashRing([node.name for node in nodes], DEFAULT_VIRTUAL_NODES)
    # Uploads owned by the node to be drained, small ones (read whole) and streamed ones.
    ids = [f"slow{i}" for i in range(400) if ring.owner(ObjectId(f"slow{i}")) == drained.name]
    chosen = random.Random(7)
    uploads = {
        object_id: (os.urandom(chosen.choice((40_000, 300_000))), chosen.uniform(3, 12))
        for object_id in ids[:24]
    }
    with (
        GatewayServer.for_marker(marker) as writer,
        GatewayServer.for_marker(marker) as drainer,
        httpx.Client(base_url=writer.base_url, timeout=60) as through_writer,
        httpx.Client(base_url=drainer.base_url, timeout=60) as through_drainer,
    ):
        wait_for(lambda: members(through_writer) == 3, 10, "the writer to see three nodes")

        def upload(object_id: str) -> int:
            body, seconds = uploads[object_id]
            with httpx.Client(base_url=writer.base_url, timeout=60) as client:
                return client.put(
                    f"/object/{object_id}",
                    content=trickled(body, seconds),
                    headers={"Content-Length": str(len(body))},
                ).status_code

        with concurrent.futures.ThreadPoolExecutor(len(uploads)) as pool:
            started = {object_id: pool.submit(upload, object_id) for object_id in uploads}
            time.sleep(1)
            status, lines = drainer.command("drain", drained.name)
            assert status == 0, lines
            answered = {object_id: future.result() for object_id, future in started.items()}
        acknowledged = [object_id for object_id, code in answered.items() if code in (200, 201)]
        assert len(acknowledged) >= len(uploads) // 2, answered

        # The drain said the node may go: it goes, and nothing acknowledged goes with it.
        drained.wrapped.remove(force=True, v=True)
        nodes.remove(drained)
        for http in (through_writer, through_drainer):
            wait_for(lambda http=http: members(http) == 2, 15, "the gateways to see it gone")
        for object_id in acknowledged:
            for http in (through_writer, through_drainer):
                response = http.get(f"/object/{object_id}")
                assert response.status_code == 200, (object_id, response.text)
                assert response.content == uploads[object_id][0], object_id


def test_objects_kept_under_the_old_layout_are_read_then_moved_to_keys_of_their_own(
    three_nodes: tuple[str, list[StorageNode]],
) -> None:
    marker, nodes = three_nodes
    ring = HashRing([node.name for node in nodes], DEFAULT_VIRTUAL_NODES)
    # What a gateway before this layout left: one key per ID, its version in the metadata, and
    # a delete as a tombstone of that kind.
    old = {f"old{i}": os.urandom(100 + i) for i in range(12)}
    for object_id, body in old.items():
        owner = next(node for node in nodes if node.name == ring.owner(ObjectId(object_id)))
        client = owner.client()
        if not client.bucket_exists(BUCKET):
            client.make_bucket(BUCKET)
        client.put_object(
            BUCKET,
            object_id,
            io.BytesIO(body),
            len(body),
            content_type="application/x-old",
            metadata={"gateway-version": f"01700000000000000000-aaaaaaaaaaaaaaaa-{1:012d}"},
        )
    gone = "old0"
    tombstone = "01790000000000000000-aaaaaaaaaaaaaaaa-000000000002"
    holder = next(node for node in nodes if node.name == ring.owner(ObjectId(gone)))
    holder.client().put_object(
        BUCKET,
        gone,
        io.BytesIO(tombstone.encode()),
        len(tombstone),
        metadata={"gateway-version": tombstone, "gateway-deleted": "true"},
    )
    with (
        GatewayServer.for_marker(marker) as server,
        httpx.Client(base_url=server.base_url, timeout=60) as http,
    ):
        wait_for(lambda: members(http) == 3, 10, "the gateway to see three nodes")
        assert http.get(f"/object/{gone}").status_code == 404
        for object_id, body in old.items():
            if object_id == gone:
                continue
            response = http.get(f"/object/{object_id}")
            assert response.content == body, object_id
            assert response.headers["content-type"] == "application/x-old"
        listed = http.get("/objects").json()
        assert sorted(entry["id"] for entry in listed["objects"]) == sorted(set(old) - {gone})
        assert http.put("/object/old1", content=b"rewritten").status_code == 200

        status, lines = server.command("repair")
        assert status == 0, lines
        for node in nodes:
            keys = node.bucket_keys()
            assert not [name for name in keys if not name.startswith(("by-id/", "."))]
            assert not keys or ".gateway/migrated" in keys, node.name
        assert http.get("/object/old1").content == b"rewritten"
        assert http.get(f"/object/{gone}").status_code == 404
        for object_id, body in old.items():
            if object_id not in (gone, "old1"):
                assert http.get(f"/object/{object_id}").content == body, object_id


def test_a_bucket_made_beforehand_is_marked_migrated_only_when_it_holds_no_old_object(
    three_nodes: tuple[str, list[StorageNode]],
) -> None:
    """A bucket someone made before the gateway ran (as the benchmark, or an operator, does) holds
    nothing of the old layout when it holds no key at its top: reads there need not look for the
    old key, one request fewer each. One holding such a key keeps being looked at until repair."""
    marker, nodes = three_nodes
    empty, holding, untouched = nodes
    for node in (empty, holding):
        node.client().make_bucket(BUCKET)
    holding.client().put_object(BUCKET, "kept", io.BytesIO(b"old"), 3)
    with (
        GatewayServer.for_marker(marker) as server,
        httpx.Client(base_url=server.base_url, timeout=60) as http,
    ):
        wait_for(lambda: members(http) == 3, 10, "the gateway to see three nodes")
        for index in range(30):  # some land on the empty bucket, which then holds something
            assert http.put(f"/object/new{index}", content=b"new").status_code == 201
        wait_for(
            lambda: ".gateway/migrated" in empty.bucket_keys(), 10, "the empty bucket to be marked"
        )
        assert ".gateway/migrated" not in holding.bucket_keys()
        # A bucket the gateway made itself is marked when it is made.
        assert ".gateway/migrated" in untouched.bucket_keys()


def test_a_fleet_of_empty_buckets_made_beforehand_is_settled_as_it_is(
    three_nodes: tuple[str, list[StorageNode]],
) -> None:
    """Buckets made before any gateway ran and still empty hold nothing out of place, as no
    bucket would: the ring is marked settled on every node, and reads ask only the replicas."""
    marker, nodes = three_nodes
    for node in nodes:
        node.client().make_bucket(BUCKET)
    with (
        GatewayServer.for_marker(marker) as server,
        httpx.Client(base_url=server.base_url, timeout=60) as http,
    ):
        wait_for(lambda: members(http) == 3, 10, "the gateway to see three nodes")
        wait_for(
            lambda: all(
                any(key.endswith(".settled") for key in node.bucket_keys()) for node in nodes
            ),
            15,
            "every node to be marked settled",
        )
        assert http.put("/object/first", content=b"1").status_code == 201
        assert http.get("/object/first").content == b"1"
