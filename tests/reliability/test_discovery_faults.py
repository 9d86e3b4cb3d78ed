"""A sick Docker daemon and paused nodes: the known fleet keeps serving, and recovers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.deployment import COMPOSE_FILE, allow_list, lets_through
from tests.integration.support import DockerSocketProxy, GatewayServer, StorageNode, wait_for


class HungDaemon:
    """Accepts connections and never answers, like a Docker daemon that is stuck."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"tcp://127.0.0.1:{self._listener.getsockname()[1]}"
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self._held.append(connection)

    def close(self) -> None:
        self._listener.close()
        for connection in self._held:
            connection.close()


@pytest.fixture
def hung_daemon() -> Iterator[HungDaemon]:
    daemon = HungDaemon()
    yield daemon
    daemon.close()


def test_eight_first_requests_against_a_hung_daemon_all_get_503_within_its_timeout(
    run_marker: str, hung_daemon: HungDaemon, figures: dict[str, str]
) -> None:
    server = GatewayServer.for_marker(run_marker, docker_timeout_seconds=2)
    server.use_docker_at(hung_daemon.base_url)

    def first_request(_: int) -> tuple[int, str, float]:
        started = time.monotonic()
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            response = http.get("/object/abc")
        return response.status_code, response.json()["error"], time.monotonic() - started

    with server, ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(first_request, range(8)))
    assert {(status, error) for status, error, _ in answers} == {(503, "discovery_unavailable")}
    slowest = max(elapsed for _, _, elapsed in answers)
    assert slowest <= 2 + 1, f"the slowest waited {slowest:.2f} s (Docker timeout 2 s)"
    figures["8 first requests, hung daemon (timeout 2 s)"] = f"all 503, slowest {slowest:.2f} s"


def test_with_the_daemon_gone_known_nodes_serve_readiness_stays_up_and_recovery_follows(
    nodes: list[StorageNode], run_marker: str, figures: dict[str, str]
) -> None:
    proxy = DockerSocketProxy()
    server = GatewayServer.for_marker(run_marker, discovery_resync_seconds=300)
    server.use_docker_at(proxy.base_url)
    try:
        with server, httpx.Client(base_url=server.base_url, timeout=30) as http:
            assert http.put("/object/steady", content=b"steady").is_success
            wait_for(lambda: http.get("/health/ready").status_code == 200, 5, "readiness")

            # Steady traffic costs the Docker daemon nothing: no API request per gateway request.
            # (Other containers on a shared daemon, another test run's, may have their network
            # events prompt a re-listing meanwhile: a few calls, never one per request.)
            before = len(proxy.request_lines)
            for _ in range(100):
                assert http.get("/object/steady").content == b"steady"
            assert len(proxy.request_lines) - before < 20
            # Everything the gateway asked is a call the socket proxy of the compose file lets
            # through (its allow-list admits the gateway's calls and nothing else).
            rules = allow_list(COMPOSE_FILE)
            assert proxy.request_lines
            for line in proxy.request_lines:
                method, target = line.decode().split(" ")
                assert lets_through(rules, method, target), line

            proxy.cut()
            wait_for(
                lambda: http.get("/health/ready").json()["discovery"]["state"] == "degraded",
                10,
                "readiness to report the degraded discovery",
            )
            ready = http.get("/health/ready")
            assert ready.status_code == 200, "serving from the known nodes: still ready"
            assert ready.json()["discovery"]["last_error"]
            assert len(ready.json()["nodes"]) == len(nodes)
            assert http.put("/object/steady", content=b"still").status_code == 200
            assert http.get("/object/steady").content == b"still"

            proxy.restore()
            restored = time.monotonic()
            wait_for(
                lambda: http.get("/health/ready").json()["discovery"]["state"] == "ok",
                40,
                "discovery to recover",
            )
            figures["Docker daemon back: discovery ok again after"] = (
                f"{time.monotonic() - restored:.1f} s (reconnect backoff)"
            )
    finally:
        proxy.close()


def test_a_paused_node_gets_503_and_serves_again_within_a_second_of_unpause(
    http: httpx.Client, nodes: list[StorageNode], figures: dict[str, str]
) -> None:
    ids = [f"paused{i}" for i in range(30)]
    for object_id in ids:
        assert http.put(f"/object/{object_id}", content=object_id.encode()).is_success
    node = nodes[2]
    on_node = sorted(node.object_names() & set(ids))
    assert on_node
    node.wrapped.pause()
    try:
        wait_for(
            lambda: http.get(f"/object/{on_node[0]}").status_code == 503,
            5,
            "the gateway to see the node paused",
        )
    finally:
        node.wrapped.unpause()
    unpaused = time.monotonic()
    wait_for(lambda: http.get(f"/object/{on_node[0]}").status_code == 200, 5, "the node to serve")
    elapsed = time.monotonic() - unpaused
    assert elapsed < 1.0, f"served {elapsed:.2f} s after unpause"
    for object_id in on_node:
        assert http.get(f"/object/{object_id}").content == object_id.encode()
    figures["unpause to first 200"] = f"{elapsed * 1000:.0f} ms"


def test_an_events_stream_that_never_answers_cannot_hang_discovery(
    nodes: list[StorageNode], run_marker: str, figures: dict[str, str]
) -> None:
    proxy = DockerSocketProxy()
    server = GatewayServer.for_marker(
        run_marker, docker_timeout_seconds=2, discovery_resync_seconds=300
    )
    server.use_docker_at(proxy.base_url)

    def discovery_state(http: httpx.Client) -> str:
        return str(http.get("/health/ready").json()["discovery"]["state"])

    try:
        with server, httpx.Client(base_url=server.base_url, timeout=30) as http:
            wait_for(lambda: discovery_state(http) == "ok", 10, "discovery")
            # The events stream breaks, and its reopening meets a daemon (or a buffering proxy)
            # that takes the request and never answers; everything else is answered.
            proxy.silence_events = True
            proxy.cut()
            proxy.restore()
            wait_for(lambda: discovery_state(http) == "degraded", 10, "the broken stream")
            time.sleep(3)  # beyond the Docker timeout (2 s): a bounded wait has given up
            assert http.get(f"/object/{'x' * 3}").status_code in (200, 404)
            proxy.silence_events = False
            answered = time.monotonic()
            wait_for(lambda: discovery_state(http) == "ok", 20, "discovery to recover")
            figures["events stream silent, then answered again: discovery ok after"] = (
                f"{time.monotonic() - answered:.1f} s"
            )
    finally:
        proxy.close()
