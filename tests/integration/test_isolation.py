"""One sick node costs only its own IDs; dropped connections are retried; client errors stay 4xx."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest

from adapters.s3 import ByteBudget, MinioObjectStorage, MinioSettings, PartSpool
from application.node_access import NodeAccess
from domain.circuit_breaker import NodeBreakers
from domain.in_flight import InFlightLimits
from domain.node import Credentials, Node, NodeState
from domain.object_id import ObjectId
from domain.objects import VersionKind
from domain.versions import VersionClock
from tests.integration.support import GatewayServer, StorageNode, frozen

MiB = 1024 * 1024


def ids_by_node(http: httpx.Client, nodes: list[StorageNode], prefix: str) -> dict[str, list[str]]:
    ids = [f"{prefix}{i}" for i in range(40)]
    for object_id in ids:
        assert http.put(f"/object/{object_id}", content=object_id.encode()).is_success
    return {node.name: sorted(node.object_names() & set(ids)) for node in nodes}


def test_requests_to_other_nodes_complete_while_a_frozen_nodes_requests_are_pending(
    nodes: list[StorageNode], run_marker: str
) -> None:
    server = GatewayServer.for_marker(
        run_marker,
        node_first_byte_timeout_seconds=4,
        node_max_in_flight=6,
        breaker_failure_threshold=50,  # the breaker must not be what keeps the others fast
    )
    with server, httpx.Client(base_url=server.base_url, timeout=60) as http:
        placed = ids_by_node(http, nodes, "isolated")
        sick = nodes[0]
        on_sick = placed[sick.name]
        healthy = [i for node in nodes[1:] for i in placed[node.name]]
        assert on_sick
        assert healthy

        def read(object_id: str) -> tuple[int, float]:
            with httpx.Client(base_url=server.base_url, timeout=60) as client:
                response = client.get(f"/object/{object_id}")
                return response.status_code, time.monotonic()

        with frozen(sick), ThreadPoolExecutor(max_workers=12) as pool:
            pending: list[Future[tuple[int, float]]] = [
                pool.submit(read, on_sick[i % len(on_sick)]) for i in range(12)
            ]
            time.sleep(0.5)  # they have reached the gateway; six wait on the frozen node
            for object_id in healthy:
                put = http.put(
                    f"/object/{object_id}", content=b"while frozen " + object_id.encode()
                )
                assert put.status_code == 200
                assert (
                    http.get(f"/object/{object_id}").content
                    == b"while frozen " + object_id.encode()
                )
            healthy_done = time.monotonic()
            still_pending = sum(not future.done() for future in pending)
            outcomes = [future.result(timeout=30) for future in pending]

        # Six requests were still waiting on the frozen node when every healthy round trip was done.
        assert still_pending == 6
        assert all(status == 503 for status, _ in outcomes), outcomes
        assert sum(finished > healthy_done for _, finished in outcomes) == 6
        # Six were refused at once by the node's cap on requests in flight.
        assert sum(finished < healthy_done for _, finished in outcomes) == 6
        for object_id in on_sick:
            assert http.get(f"/object/{object_id}").content == object_id.encode()


class DroppingProxy:
    """A TCP proxy in front of a node that can close a kept-alive connection as a request arrives.

    That is what a node does when its idle timeout closes a pooled connection just as the gateway
    reuses it: the request is sent and no answer ever comes.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.drop_next_reused = threading.Event()
        self.dropped = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._upstream)
            answered = threading.Event()
            threading.Thread(target=self._requests, args=(client, upstream, answered)).start()
            threading.Thread(target=self._answers, args=(upstream, client, answered)).start()

    def _requests(
        self, client: socket.socket, upstream: socket.socket, answered: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if answered.is_set() and self.drop_next_reused.is_set():
                    self.drop_next_reused.clear()
                    self.dropped += 1
                    break
                upstream.sendall(data)
        for end in (client, upstream):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def _answers(
        self, upstream: socket.socket, client: socket.socket, answered: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                client.sendall(data)
                answered.set()


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


def test_a_get_on_a_connection_the_node_closed_is_retried_and_not_held_against_it(
    nodes: list[StorageNode],
) -> None:
    target = nodes[1]
    proxy = DroppingProxy((target.ip_address(), 9000))
    node = Node(
        name=target.name,
        host="127.0.0.1",
        port=proxy.port,
        credentials=Credentials(target.access_key, target.secret_key),
        state=NodeState.UP,
    )
    storage = MinioObjectStorage(
        MinioSettings(
            bucket="objects",
            connect_timeout_seconds=1,
            first_byte_timeout_seconds=5,
            idle_timeout_seconds=5,
            part_size_bytes=5 * MiB,
            download_chunk_bytes=256 * 1024,
        ),
        PartSpool(ByteBudget(16 * MiB), ByteBudget(64 * MiB)),
    )
    # One failure would open this breaker: a retried request must not count as one.
    access = NodeAccess(NodeBreakers(failure_threshold=1, cooldown_seconds=60), InFlightLimits(4))
    object_id = ObjectId("droppedconnection")

    async def scenario() -> None:
        try:
            version = await storage.put(
                node,
                object_id,
                VersionClock().next(),
                VersionKind.DATA,
                one_chunk(b"kept alive"),
                10,
                "text/plain",
            )
            for _ in range(3):
                proxy.drop_next_reused.set()
                stored = await access.call(node, lambda: storage.open(node, object_id, version))
                assert stored.whole_body == b"kept alive"
                await stored.close()
                listed = await access.call(node, lambda: storage.versions(node, object_id))
                assert listed == [version]
        finally:
            await storage.aclose()

    try:
        asyncio.run(scenario())
    finally:
        proxy.close()
    assert proxy.dropped == 3
    assert access.breakers.state(target.name).consecutive_failures == 0


@pytest.mark.parametrize(
    "content_type",
    [b"\xc3\xbf\xc3\xbe", b"text/" + b"x" * 8000, b"no-slash", b"text/plain; charset"],
    ids=["non-ascii", "8000-characters", "no-subtype", "bare-parameter"],
)
def test_a_malformed_content_type_is_a_400_and_stores_nothing(
    http: httpx.Client, nodes: list[StorageNode], content_type: bytes
) -> None:
    object_id = f"badtype{len(content_type)}"
    response = http.put(
        f"/object/{object_id}", content=b"body", headers={"Content-Type": content_type}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "Content-Type" in response.json()["detail"]
    assert http.get(f"/object/{object_id}").status_code == 404
    assert all(object_id not in node.object_names() for node in nodes)


def test_a_content_type_with_parameters_is_stored_and_returned_verbatim(
    http: httpx.Client,
) -> None:
    given = 'text/plain; charset="utf-8"; format=flowed'
    assert http.put(
        "/object/typedverbatim", content=b"hi", headers={"Content-Type": given}
    ).is_success
    assert http.get("/object/typedverbatim").headers["content-type"] == given
    assert http.put(
        "/object/plaintext", content=b"hi", headers={"Content-Type": "text/plain"}
    ).is_success
    assert http.get("/object/plaintext").headers["content-type"] == "text/plain"


def test_a_chunked_upload_cut_off_after_its_first_parts_leaves_the_previous_object(
    http: httpx.Client, gateway: GatewayServer, nodes: list[StorageNode]
) -> None:
    assert http.put("/object/chunkedcut", content=b"first version").is_success
    with socket.create_connection(("127.0.0.1", gateway.port)) as raw:
        raw.sendall(
            b"PUT /object/chunkedcut HTTP/1.1\r\nHost: gateway\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = os.urandom(MiB)
        for _ in range(12):  # two parts uploaded, a third being filled
            raw.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        time.sleep(0.5)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert http.get("/object/chunkedcut").content == b"first version"
        time.sleep(0.2)
