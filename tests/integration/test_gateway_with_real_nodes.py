"""The real app, real Docker discovery and real S3 nodes, driven over HTTP."""

import concurrent.futures
import hashlib
import os
import socket
import time
from collections.abc import Iterator

import docker
import httpx
import pytest
from dependency_injector import providers

from tests.integration.support import GatewayServer, StorageNode, wait_for

MiB = 1024 * 1024


def body_chunks(data: bytes, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), chunk_size):
        yield data[start : start + chunk_size]


def holders(nodes: list[StorageNode], object_id: str) -> list[str]:
    return [node.name for node in nodes if object_id in node.object_names()]


@pytest.mark.parametrize("size", [0, 1024, 20 * MiB], ids=["0B", "1KiB", "20MiB"])
def test_put_with_content_length_then_get_returns_identical_bytes(
    http: httpx.Client, size: int
) -> None:
    data = os.urandom(size)
    object_id = f"sized{size}"
    response = http.put(f"/object/{object_id}", content=data)
    assert response.status_code in (200, 201), response.text
    got = http.get(f"/object/{object_id}")
    assert got.status_code == 200
    assert got.headers["content-length"] == str(size)
    assert hashlib.sha256(got.content).digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize("size", [0, 1024, 20 * MiB], ids=["0B", "1KiB", "20MiB"])
def test_put_streamed_without_content_length_then_get_returns_identical_bytes(
    http: httpx.Client, size: int
) -> None:
    data = os.urandom(size)
    object_id = f"streamed{size}"
    # A generator body makes httpx send Transfer-Encoding: chunked, with no Content-Length.
    response = http.put(f"/object/{object_id}", content=body_chunks(data))
    assert response.status_code in (200, 201), response.text
    assert response.json()["size"] == size
    with http.stream("GET", f"/object/{object_id}") as got:
        assert got.status_code == 200
        digest = hashlib.sha256()
        for chunk in got.iter_bytes():
            digest.update(chunk)
    assert digest.digest() == hashlib.sha256(data).digest()


def test_put_over_an_existing_object_replaces_it(http: httpx.Client) -> None:
    first = http.put("/object/overwritten", content=b"first version")
    second = http.put("/object/overwritten", content=b"second")
    assert first.status_code == 201
    assert second.status_code == 200
    assert http.get("/object/overwritten").content == b"second"


def test_versions_overwrites_left_behind_are_removed_many_per_request_by_the_nodes(
    http: httpx.Client, nodes: list[StorageNode]
) -> None:
    """Concurrent overwrites leave each node old versions to remove, which go out in DeleteObjects
    requests: once quiet, every ID holds its newest version only, on every node."""
    ids = [f"tidy{index}" for index in range(24)]
    removed_before = tidied(http)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        for round_ in range(3):
            statuses = list(
                pool.map(
                    lambda object_id, r=round_: (
                        http.put(
                            f"/object/{object_id}", content=f"{object_id} {r}".encode()
                        ).status_code
                    ),
                    ids,
                )
            )
            assert set(statuses) <= {200, 201}, statuses

    def only_the_newest() -> bool:
        held = [node.versions() for node in nodes]
        return all(len(versions.get(object_id, [])) <= 1 for versions in held for object_id in ids)

    wait_for(only_the_newest, 20, "the old versions to be removed")
    for object_id in ids:
        assert http.get(f"/object/{object_id}").content == f"{object_id} 2".encode()
    assert tidied(http) - removed_before == 2 * len(ids)


def tidied(http: httpx.Client) -> float:
    """Versions the gateway has removed as useless so far."""
    line = next(
        line
        for line in http.get("/metrics").text.splitlines()
        if line.startswith('gateway_tidying_total{outcome="repaired"}')
    )
    return float(line.rsplit(" ", 1)[1])


def test_the_content_type_given_at_put_comes_back_at_get(http: httpx.Client) -> None:
    http.put("/object/typed", content=b"{}", headers={"Content-Type": "application/json"})
    got = http.get("/object/typed")
    assert got.headers["content-type"].startswith("application/json")
    assert got.headers["etag"]


def test_get_of_unknown_id_returns_404(http: httpx.Client) -> None:
    response = http.get("/object/neverstored")
    assert response.status_code == 404
    assert response.json()["error"] == "object_not_found"


@pytest.mark.parametrize("path", ["/object/a-b", "/object/" + "a" * 33, "/object/"])
def test_invalid_ids_return_400(http: httpx.Client, path: str) -> None:
    for response in (http.get(path), http.put(path, content=b"x")):
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_object_id"


def test_ids_land_on_all_three_nodes_each_on_exactly_one(
    http: httpx.Client, nodes: list[StorageNode]
) -> None:
    ids = [f"spread{i}" for i in range(30)]
    for object_id in ids:
        assert http.put(f"/object/{object_id}", content=object_id.encode()).status_code == 201
    stored = {node.name: node.object_names() & set(ids) for node in nodes}
    assert all(stored.values()), f"some node holds none of the IDs: {stored}"
    assert sorted(i for names in stored.values() for i in names) == sorted(ids)


def test_a_stopped_node_gives_503_for_its_ids_while_the_others_keep_working(
    http: httpx.Client, nodes: list[StorageNode]
) -> None:
    ids = [f"outage{i}" for i in range(30)]
    for object_id in ids:
        assert http.put(f"/object/{object_id}", content=object_id.encode()).status_code == 201
    stopped = nodes[0]
    on_stopped = sorted(stopped.object_names() & set(ids))
    elsewhere = sorted(set(ids) - set(on_stopped))
    assert on_stopped
    assert elsewhere

    stopped.stop()
    try:
        wait_for(
            lambda: http.get(f"/object/{on_stopped[0]}").status_code == 503,
            10,
            "the gateway to see the node stopped",
        )
        for object_id in on_stopped:
            response = http.get(f"/object/{object_id}")
            assert response.status_code == 503, "a down owner must never look like a 404"
            assert response.json()["error"] == "node_unavailable"
            assert stopped.name in response.json()["detail"]
        refused = http.put(f"/object/{on_stopped[0]}", content=b"must not land elsewhere")
        assert refused.status_code == 503
        for object_id in elsewhere:
            assert http.get(f"/object/{object_id}").content == object_id.encode()
        assert all(on_stopped[0] not in node.object_names() for node in nodes[1:])
    finally:
        stopped.start()

    wait_for(
        lambda: http.get(f"/object/{on_stopped[0]}").status_code == 200,
        10,
        "the gateway to use the restarted node",
    )
    for object_id in on_stopped:
        assert http.get(f"/object/{object_id}").content == object_id.encode()


def test_an_unreachable_docker_daemon_gives_503_and_the_server_stays_up(run_marker: str) -> None:
    server = GatewayServer.for_marker(run_marker)
    server.container.docker_client.override(
        # A loopback port nothing listens on. (Not a missing unix socket: docker-py's unix transport
        # leaves the socket of a failed connect unclosed, which this suite reports as an error.)
        providers.Factory(docker.DockerClient, base_url="tcp://127.0.0.1:9", timeout=2)
    )
    with server, httpx.Client(base_url=server.base_url, timeout=30) as client:
        for _ in range(3):
            response = client.get("/object/abc")
            assert response.status_code == 503
            assert response.json()["error"] == "discovery_unavailable"
            assert "Docker" in response.json()["detail"]
        assert client.get("/object/a-b").status_code == 400


def test_an_upload_cut_off_midway_leaves_the_previous_object_intact(
    http: httpx.Client, gateway: GatewayServer
) -> None:
    assert http.put("/object/interrupted", content=b"first version").status_code in (200, 201)
    announced, sent = 20 * MiB, 12 * MiB  # more than two parts: the multipart upload had begun
    with socket.create_connection(("127.0.0.1", gateway.port)) as raw:
        raw.sendall(
            b"PUT /object/interrupted HTTP/1.1\r\nHost: gateway\r\n"
            + f"Content-Length: {announced}\r\n\r\n".encode()
        )
        chunk = os.urandom(MiB)
        for _ in range(sent // MiB):
            raw.sendall(chunk)
    # The gateway notices the disconnect and aborts; the old object must be all a reader ever sees.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert http.get("/object/interrupted").content == b"first version"
        time.sleep(0.2)
