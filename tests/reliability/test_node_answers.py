"""Nodes that answer badly: dying or going silent mid-body (through a TCP proxy), refusing HEADs.

Listings, multipart completions and error documents are read whole; every such read must be bounded
in time and end as the node's failure (503, counted by its breaker), never as an SDK error that
escapes as a 500 or a traceback. A refusal of a request that carried nothing of the client's is
the node's fault, never the client's 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import io
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import httpx
import pytest
from dependency_injector import providers

from adapters.s3 import ByteBudget, MinioObjectStorage, MinioSettings, PartSpool
from application.node_access import NodeAccess
from domain.circuit_breaker import NodeBreakers
from domain.errors import NodeUnavailable, NodeUnreachable
from domain.in_flight import InFlightLimits
from domain.node import Credentials, Node, NodeState
from domain.object_id import ObjectId
from domain.objects import VersionKind
from domain.versions import VersionClock
from entrypoints.container import Container
from entrypoints.settings import Settings
from tests.fakes import FakeNodeDiscovery
from tests.integration.support import GatewayServer, StorageNode

MiB = 1024 * 1024
IDLE_TIMEOUT = 1.5


class AnswerCuttingProxy:
    """Forwards to a node; when armed, the next answer to a request whose line contains ``marker``
    gets its head and the first ``keep`` bytes of its body, and then the connection is cut
    (``how="cut"``) or goes silent (``how="stall"``)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.marker = b""
        self.how = ""
        self.keep = 10
        self.fired = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, marker: bytes, how: str) -> None:
        self.fired.clear()
        self.marker, self.how = marker, how

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._upstream)
            self._sockets += [client, upstream]
            last_request = [b""]
            threading.Thread(
                target=self._requests, args=(client, upstream, last_request), daemon=True
            ).start()
            threading.Thread(
                target=self._answers, args=(upstream, client, last_request), daemon=True
            ).start()

    def _requests(
        self, client: socket.socket, upstream: socket.socket, last_request: list[bytes]
    ) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                line = data.split(b"\r\n", 1)[0]
                if line.endswith(b" HTTP/1.1"):
                    last_request[0] = line
                upstream.sendall(data)

    def _answers(
        self, upstream: socket.socket, client: socket.socket, last_request: list[bytes]
    ) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                armed = self.marker and self.marker in last_request[0]
                if not armed:
                    client.sendall(data)
                    continue
                head, _, body = data.partition(b"\r\n\r\n")
                client.sendall(head + b"\r\n\r\n" + body[: self.keep])
                self.marker = b""
                self.fired.set()
                if self.how == "cut":
                    break
                time.sleep(30)  # silent, connection open
        for end in (client, upstream):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()


@pytest.fixture
def proxied(nodes: list[StorageNode]) -> Iterator[tuple[AnswerCuttingProxy, Node, StorageNode]]:
    target = nodes[2]
    proxy = AnswerCuttingProxy((target.ip_address(), 9000))
    node = Node(
        name=target.name,
        host="127.0.0.1",
        port=proxy.port,
        credentials=Credentials(target.access_key, target.secret_key),
        state=NodeState.UP,
    )
    yield proxy, node, target
    proxy.close()


def storage() -> MinioObjectStorage:
    return MinioObjectStorage(
        MinioSettings(
            bucket="objects",
            connect_timeout_seconds=1,
            first_byte_timeout_seconds=2,
            idle_timeout_seconds=IDLE_TIMEOUT,
            part_size_bytes=5 * MiB,
            download_chunk_bytes=256 * 1024,
        ),
        PartSpool(ByteBudget(16 * MiB), ByteBudget(64 * MiB)),
    )


async def pieces(count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"p" * MiB


@pytest.mark.parametrize("how", ["cut", "stall"])
@pytest.mark.parametrize("operation", ["listing", "completion", "error-document"])
def test_an_answer_cut_short_or_stalled_mid_body_is_the_nodes_failure_within_the_idle_time(
    proxied: tuple[AnswerCuttingProxy, Node, StorageNode],
    operation: str,
    how: str,
    figures: dict[str, str],
) -> None:
    proxy, node, _ = proxied
    gateway_storage = storage()
    access = NodeAccess(NodeBreakers(failure_threshold=10, cooldown_seconds=60), InFlightLimits(8))
    # With a wrong secret the node refuses the listing with an XML error document in the body.
    wrong_keys = replace(node, credentials=Credentials(node.credentials.access_key, "not-its-key"))

    async def listing() -> object:
        return [entry async for entry in gateway_storage.walk(node)]

    async def completion() -> object:
        # Unknown length past one part: a multipart upload, ending in a completion document.
        return await gateway_storage.put(
            node,
            ObjectId("cutcompletion"),
            VersionClock().next(),
            VersionKind.DATA,
            pieces(6),
            None,
            "a/b",
        )

    async def refused_listing() -> object:
        return [entry async for entry in gateway_storage.walk(wrong_keys)]

    run, marker = {
        "listing": (listing, b"list-type=2"),
        "completion": (completion, b".data?uploadId="),
        "error-document": (refused_listing, b"list-type=2"),
    }[operation]

    async def scenario() -> float:
        try:
            await gateway_storage.put(
                node,
                ObjectId("cutseed"),
                VersionClock().next(),
                VersionKind.DATA,
                pieces(1),
                MiB,
                "a/b",
            )
            proxy.arm(marker, how)
            started = time.monotonic()
            with pytest.raises(NodeUnavailable) as failed:
                await access.call(node, run)
            elapsed = time.monotonic() - started
            assert proxy.fired.is_set()
            if operation != "error-document":
                assert isinstance(failed.value, NodeUnreachable), failed.value
                assert access.breakers.state(node.name).consecutive_failures == 1
            return elapsed
        finally:
            await gateway_storage.aclose()

    elapsed = asyncio.run(scenario())
    assert elapsed < IDLE_TIMEOUT + 2, f"{operation} ({how}) took {elapsed:.1f} s"
    figures[f"node answer {how} mid-body ({operation})"] = f"503 after {elapsed:.2f} s"


def test_rebalance_reports_a_node_whose_listing_is_cut_off_and_exits_1_with_a_summary(
    proxied: tuple[AnswerCuttingProxy, Node, StorageNode], nodes: list[StorageNode]
) -> None:
    proxy, cut_node, target = proxied
    client = target.client()
    if not client.bucket_exists("objects"):
        client.make_bucket("objects")
    # A version, as a gateway keeps it: something for a listing to carry.
    seed = "by-id/listedseed/01000000000000000000-aaaaaaaaaaaaaaaa-000000000001.data"
    client.put_object("objects", seed, io.BytesIO(b"seed"), 4)
    others = [
        Node(n.name, n.ip_address(), 9000, Credentials(n.access_key, n.secret_key), NodeState.UP)
        for n in nodes[:2]
    ]
    container = Container()
    container.settings.override(providers.Object(Settings()))
    container.node_discovery.override(
        providers.Object(FakeNodeDiscovery(nodes=[*others, cut_node]))
    )
    with GatewayServer(container) as gateway:
        proxy.arm(b"list-type=2", "cut")
        status, lines = gateway.command("rebalance", "--dry-run")
    assert status == 1
    (survey,) = [line for line in lines if line["event"] == "survey"]
    assert list(survey["unlisted_nodes"]) == [cut_node.name]
    assert lines[-1]["event"] == "dry_run"


class RefusingHeadNode(http.server.BaseHTTPRequestHandler):
    """An S3 node that takes writes but refuses every HEAD of an object with a bare 400, as a node
    set up for another region refuses SigV4 requests (AuthorizationHeaderMalformed)."""

    protocol_version = "HTTP/1.1"

    def do_HEAD(self) -> None:
        status = 200 if self.path.rstrip("/") == "/objects" else 400
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("ETag", '"0123456789abcdef0123456789abcdef"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def test_a_nodes_refusal_of_a_head_is_the_nodes_fault_not_the_clients(
    run_marker: str,
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RefusingHeadNode)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    node = Node(
        f"{run_marker}-refusing",
        "127.0.0.1",
        server.server_address[1],
        Credentials("someuser", "some-secret-key"),
        NodeState.UP,
    )
    container = Container()
    container.settings.override(providers.Object(Settings(node_name_marker=run_marker)))
    container.node_discovery.override(providers.Object(FakeNodeDiscovery(nodes=[node])))
    try:
        with GatewayServer(container) as gateway, httpx.Client(base_url=gateway.base_url) as client:
            put = client.put("/object/refusedhead", content=b"x")
            head = client.head("/object/refusedhead")
    finally:
        server.shutdown()
        server.server_close()
    assert put.status_code == 503, put.text
    assert put.json()["error"] == "node_unavailable"
    assert head.status_code == 503
