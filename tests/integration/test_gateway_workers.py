"""The gateway as operators run it with GATEWAY_WORKERS=2, over real nodes: both workers serve
the one port, /metrics adds up every worker's counts whichever answers, a worker killed is
replaced while the other serves, and the admin API and the CLI keep working."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.support import (
    GatewayProcess,
    StorageNode,
    new_run_marker,
    start_node,
    wait_for,
)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    marker = new_run_marker()
    nodes: list[StorageNode] = []
    process: GatewayProcess | None = None
    try:
        nodes = [start_node(marker, index) for index in (1, 2)]
        process = GatewayProcess(marker, tmp_path, workers=2)
        yield process
    finally:
        if process is not None:
            process.stop()
        for node in nodes:
            node.wrapped.remove(force=True, v=True)
            node.container.get_docker_client().client.close()


def counted(metrics: str, method: str) -> float:
    """gateway_http_requests_total of the object route for ``method``, every status together."""
    labels = f'method="{method}",route="/object/{{object_id}}"'
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("gateway_http_requests_total{") and labels in line
    )


def scrape(url: str) -> str:
    # A connection of its own each time: any worker may answer.
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def test_two_workers_answer_one_port_and_one_metrics_and_outlive_a_killed_worker(
    gateway: GatewayProcess,
) -> None:
    workers = gateway.workers()
    assert len(workers) == 2
    for index in range(12):
        response = httpx.put(f"{gateway.url}/object/w{index}", content=b"x" * index, timeout=30)
        assert response.status_code == 201, response.text

    # Both workers die; their counts stay in the gateway's answer, summed with the new workers'.
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: len(gateway.workers()) == 2 and not set(gateway.workers()) & set(workers),
        20,
        "the supervisor to start two new workers",
    )
    wait_for(
        lambda: httpx.get(f"{gateway.url}/health/ready", timeout=5).status_code == 200,
        30,
        "a new worker to be ready",
        ignoring=(httpx.HTTPError,),
    )
    for index in range(12):
        response = httpx.get(f"{gateway.url}/object/w{index}", timeout=30)
        assert response.status_code == 200, response.text
        assert response.content == b"x" * index

    for _ in range(4):
        metrics = scrape(gateway.url)
        assert counted(metrics, "PUT") == 12
        assert counted(metrics, "GET") == 12

    status, lines = gateway.command("rebalance", "--dry-run", timeout=120)
    assert status == 0, lines


def served_by(gateway: GatewayProcess, path: str) -> int | None:
    """The worker that wrote the access log line of ``path``, once the line is out."""
    for line in Path(gateway.log.name).read_text().splitlines():
        entry = json.loads(line)
        if entry.get("path") == path:
            return int(entry["process"])
    return None


def test_a_worker_killed_mid_traffic_costs_only_its_own_connections(
    gateway: GatewayProcess,
) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30) as held:
        assert held.put("/object/held", content=b"held").status_code == 201
        wait_for(lambda: served_by(gateway, "/object/held") is not None, 10, "the log line")
        holder = served_by(gateway, "/object/held")
        other = next(pid for pid in gateway.workers() if pid != holder)

        os.kill(other, signal.SIGKILL)
        # The held connection's worker lives on: the connection carries on.
        for _ in range(5):
            assert held.get("/object/held").content == b"held"
        # New connections are all answered meanwhile: the living worker takes them.
        for index in range(20):
            response = httpx.put(f"{gateway.url}/object/k{index}", content=b"k", timeout=30)
            assert response.status_code == 201, (index, response.text)
        wait_for(lambda: len(gateway.workers()) == 2, 20, "a new worker")
        assert other not in gateway.workers()
        assert holder in gateway.workers()
