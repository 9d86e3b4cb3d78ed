"""Event-driven discovery, fast failure, degraded discovery and observability, with real nodes."""

import logging
import os
import time

import httpx
import pytest
from docker import DockerClient
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.support import (
    MINIO_IMAGE,
    TEST_LABELS,
    GatewayServer,
    StorageNode,
    frozen,
    new_run_marker,
    start_node,
    wait_for,
)


def ids_on(node: StorageNode, http: httpx.Client, prefix: str, count: int = 30) -> list[str]:
    ids = [f"{prefix}{i}" for i in range(count)]
    for object_id in ids:
        assert http.put(f"/object/{object_id}", content=object_id.encode()).is_success
    return sorted(node.object_names() & set(ids))


def test_a_node_started_after_the_gateway_is_used_within_two_seconds() -> None:
    marker = new_run_marker()
    nodes = [start_node(marker, 1), start_node(marker, 2)]
    try:
        with (
            GatewayServer.for_marker(marker) as server,
            httpx.Client(base_url=server.base_url, timeout=30) as http,
        ):
            wait_for(
                lambda: len(http.get("/health/ready").json()["nodes"]) == 2,
                10,
                "the gateway's first discovery",
            )
            nodes.append(start_node(marker, 3))
            started = time.monotonic()
            wait_for(
                lambda: len(http.get("/health/ready").json()["nodes"]) == 3,
                2,
                "the gateway to see the new node",
            )
            assert time.monotonic() - started < 2
            assert ids_on(nodes[2], http, "latecomer"), "no ID landed on the new node"
    finally:
        for node in nodes:
            node.container.stop()
            node.container.get_docker_client().client.close()


def test_a_node_that_stops_answering_fails_fast_once_its_breaker_opens(
    nodes: list[StorageNode], run_marker: str
) -> None:
    server = GatewayServer.for_marker(
        run_marker,
        node_first_byte_timeout_seconds=0.5,
        node_connect_timeout_seconds=0.5,
        breaker_failure_threshold=2,
        breaker_cooldown_seconds=1.0,
    )
    with server, httpx.Client(base_url=server.base_url, timeout=30) as http:
        hung = nodes[1]
        on_hung = ids_on(hung, http, "breaker")
        elsewhere = [f"breaker{i}" for i in range(30) if f"breaker{i}" not in on_hung]
        with frozen(hung):
            for _ in range(2):  # each waits out the read timeout
                assert http.get(f"/object/{on_hung[0]}").status_code == 503
            started = time.perf_counter()
            fast = http.get(f"/object/{on_hung[0]}")
            elapsed = time.perf_counter() - started
            assert fast.status_code == 503
            assert "resting" in fast.json()["detail"]
            assert int(fast.headers["retry-after"]) >= 1
            assert elapsed < 0.05, f"an open breaker took {elapsed * 1000:.1f} ms"
            for object_id in elsewhere[:5]:
                assert http.get(f"/object/{object_id}").status_code == 200
            ready = {n["name"]: n["state"] for n in http.get("/health/ready").json()["nodes"]}
            assert ready[hung.name] == "resting"
        # Back: after the cool-down one probe goes through and the breaker closes.
        wait_for(
            lambda: http.get(f"/object/{on_hung[0]}").status_code == 200,
            10,
            "the node to be used again",
        )
        for object_id in on_hung:
            assert http.get(f"/object/{object_id}").content == object_id.encode()


def test_metrics_move_and_the_access_log_carries_the_echoed_request_id(
    http: httpx.Client, run_marker: str, caplog: pytest.LogCaptureFixture
) -> None:
    def requests_total() -> float:
        families = text_string_to_metric_families(http.get("/metrics").text)
        return sum(
            sample.value
            for family in families
            for sample in family.samples
            if sample.name == "gateway_http_requests_total" and sample.labels["method"] == "PUT"
        )

    before = requests_total()
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        response = http.put(
            "/object/observed", content=b"x", headers={"X-Request-ID": "integration-7"}
        )
    assert response.headers["x-request-id"] == "integration-7"
    assert requests_total() == before + 1
    lines = [r for r in caplog.records if getattr(r, "request_id", None) == "integration-7"]
    assert len(lines) == 1
    assert lines[0].object_id == "observed"  # type: ignore[attr-defined]
    assert lines[0].node.startswith(run_marker)  # type: ignore[attr-defined]


def test_a_node_whose_bucket_vanished_gets_it_back_on_the_next_write() -> None:
    # As after a node is recreated on an empty volume with the same address and keys.
    marker = new_run_marker()
    node = start_node(marker, 1)
    try:
        with (
            GatewayServer.for_marker(marker) as server,
            httpx.Client(base_url=server.base_url, timeout=30) as http,
        ):
            assert http.put("/object/before", content=b"before").status_code == 201
            node.lose_bucket()
            assert http.get("/object/before").status_code == 404

            small = http.put("/object/small", content=b"small")
            assert small.status_code == 201, small.text
            assert http.get("/object/small").content == b"small"
            # A streamed body cannot be sent twice: the node's bucket is made again at once and
            # the client is asked to retry; the next attempt is stored.
            node.lose_bucket()
            large = os.urandom(300 * 1024)
            first = http.put("/object/large", content=large)
            assert first.status_code in (201, 503), first.text
            if first.status_code == 503:
                assert first.json()["error"] == "node_unavailable"
                assert "bucket" in first.json()["detail"]
                assert http.put("/object/large", content=large).status_code == 201
            assert http.get("/object/large").content == large
    finally:
        node.container.stop()
        node.container.get_docker_client().client.close()


def test_a_node_created_but_not_yet_started_takes_no_ids_until_it_starts(
    nodes: list[StorageNode], http: httpx.Client, run_marker: str, docker_client: DockerClient
) -> None:
    ids = [f"beforecreate{i}" for i in range(60)]
    for object_id in ids:
        assert http.put(f"/object/{object_id}", content=object_id.encode()).is_success

    def members() -> int:
        return len(http.get("/health/ready").json()["nodes"])

    created = docker_client.containers.create(
        MINIO_IMAGE,
        "server /data",
        name=f"{run_marker}-created",
        labels=TEST_LABELS,
        environment={"MINIO_ROOT_USER": "createduser", "MINIO_ROOT_PASSWORD": "created-secret"},
    )
    try:
        time.sleep(1)  # the create event has been seen and the fleet listed again
        assert members() == len(nodes)
        statuses = {http.get(f"/object/{object_id}").status_code for object_id in ids}
        assert statuses == {200}, "a created container must not take IDs (503) before it runs"
        created.start()
        wait_for(lambda: members() == len(nodes) + 1, 5, "the started node to join")
        # Its IDs are still found where they were written.
        assert {http.get(f"/object/{object_id}").status_code for object_id in ids} == {200}
    finally:
        created.remove(force=True, v=True)
    wait_for(lambda: members() == len(nodes), 5, "the removed node to leave")
