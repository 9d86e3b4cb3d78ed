"""Three copies per ID (GATEWAY_REPLICAS=3, W=2, R=2) against real nodes: a node killed under load
costs no request, `repair` restores every copy, a stale replica is repaired by a read, and two
nodes down answer what the quorums allow."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
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

REPLICATED = {"replicas": 3}


class Fleet:
    def __init__(self) -> None:
        self.marker = new_run_marker()
        self.nodes: dict[int, StorageNode] = {}

    def add(self, index: int) -> StorageNode:
        self.nodes[index] = start_node(self.marker, index)
        return self.nodes[index]

    def remove(self, index: int) -> None:
        node = self.nodes.pop(index)
        node.wrapped.remove(force=True, v=True)
        node.container.get_docker_client().client.close()

    def by_name(self, name: str) -> StorageNode:
        return next(node for node in self.nodes.values() if node.name == name)

    def walk(self, object_id: str) -> list[str]:
        ring = HashRing([node.name for node in self.nodes.values()], DEFAULT_VIRTUAL_NODES)
        return ring.preference_list(ObjectId(object_id))


# A version written long ago (2001) by some gateway.
OLD_VERSION = "01000000000000000000-aaaaaaaaaaaaaaaa-000000000001"


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    fleet = Fleet()
    try:
        for index in (1, 2, 3):
            fleet.add(index)
        yield fleet
    finally:
        for index in list(fleet.nodes):
            fleet.remove(index)


def up_nodes(http: httpx.Client) -> int:
    return sum(node["state"] == "up" for node in http.get("/health/ready").json()["nodes"])


def test_a_node_killed_under_load_costs_no_request_and_repair_restores_three_copies(
    fleet: Fleet,
) -> None:
    written: dict[str, bytes] = {}
    statuses: Counter[int] = Counter()
    wrong: list[str] = []
    lock = threading.Lock()
    with (
        GatewayServer.for_marker(fleet.marker, **REPLICATED) as server,
        httpx.Client(base_url=server.base_url, timeout=60) as http,
    ):
        for i in range(60):
            body = os.urandom(1000 + i)
            assert http.put(f"/object/before{i}", content=body).status_code == 201
            written[f"before{i}"] = body
        stop, killed = threading.Event(), threading.Event()
        after_kill = [0]

        def client(number: int) -> None:
            # Bounded in count and time; each client owns its IDs, so it knows each answer.
            own: dict[str, bytes] = {}
            deadline = time.monotonic() + 30
            with httpx.Client(base_url=server.base_url, timeout=60) as mine:
                for step in range(2000):
                    if stop.is_set() or time.monotonic() > deadline:
                        break
                    object_id = f"load{number}x{step % 25}"
                    if step % 2 == 0:
                        body = os.urandom(200 + step)
                        response = mine.put(f"/object/{object_id}", content=body)
                        if response.is_success:
                            own[object_id] = body
                    else:
                        read_id = f"before{(number * 7 + step) % 60}"
                        response = mine.get(f"/object/{read_id}")
                        if response.status_code == 200 and response.content != written[read_id]:
                            with lock:
                                wrong.append(f"GET {read_id}: other bytes")
                    with lock:
                        statuses[response.status_code] += 1
                        if killed.is_set():
                            after_kill[0] += 1
            with lock:
                written.update(own)

        workers = [threading.Thread(target=client, args=(n,)) for n in range(6)]
        for worker in workers:
            worker.start()
        time.sleep(2)
        fleet.nodes[2].wrapped.kill()
        killed.set()
        time.sleep(6)
        stop.set()
        for worker in workers:
            worker.join(timeout=60)

        assert not wrong, wrong
        assert set(statuses) <= {200, 201}, statuses
        assert after_kill[0] > 100, (after_kill, statuses)
        for object_id, body in written.items():
            assert http.get(f"/object/{object_id}").content == body, object_id

        fleet.nodes[2].wrapped.start()

        def back() -> bool:
            # Its breaker closes on the first request that reaches it after the cool-down (a
            # write goes to every replica).
            assert http.put("/object/probe", content=b"p").is_success
            return up_nodes(http) == 3

        wait_for(back, 30, "the killed node to be back")
        status, lines = server.command("repair")
        assert status == 0, [line for line in lines if line.get("outcome") != "moved"]
        for node in fleet.nodes.values():
            assert set(written) <= node.object_names(), node.name
        for object_id, body in written.items():
            for node in fleet.nodes.values():
                assert node.newest(object_id) == body, (object_id, node.name)


def test_a_node_replaced_by_an_empty_one_is_refilled_by_repair(fleet: Fleet) -> None:
    with (
        GatewayServer.for_marker(fleet.marker, **REPLICATED) as server,
        httpx.Client(base_url=server.base_url, timeout=60) as http,
    ):
        written = {f"keep{i}": os.urandom(300 + i) for i in range(40)}
        for object_id, body in written.items():
            assert http.put(f"/object/{object_id}", content=body).is_success

        fleet.remove(2)
        fleet.add(2)  # the same name, an empty disk
        wait_for(lambda: up_nodes(http) == 3, 30, "the replacement to be up")
        for object_id, body in written.items():
            assert http.get(f"/object/{object_id}").content == body, object_id

        status, lines = server.command("repair")
        assert status == 0, [line for line in lines if line.get("outcome") != "moved"]
        assert {name for name in fleet.nodes[2].object_names() if name in written} == set(written)


def test_a_stale_replica_is_repaired_by_a_read(fleet: Fleet) -> None:
    with (
        GatewayServer.for_marker(fleet.marker, **REPLICATED) as server,
        httpx.Client(base_url=server.base_url, timeout=60) as http,
    ):
        assert http.put("/object/fresh", content=b"the newest").is_success
        first = fleet.by_name(fleet.walk("fresh")[0])
        # Only an older version on the replica every read asks first, as a node that missed
        # the write has.
        for name in first.versions()["fresh"]:
            first.client().remove_object(BUCKET, f"by-id/fresh/{name}")
        first.put_version("fresh", b"stale", OLD_VERSION)

        assert http.get("/object/fresh").content == b"the newest"
        wait_for(lambda: first.newest("fresh") == b"the newest", 10, "the read repair")
        metrics = http.get("/metrics").text
        assert 'gateway_read_repairs_total{outcome="repaired"} 1.0' in metrics


def test_a_range_read_compares_versions_and_never_repairs_the_newest_with_an_older_copy(
    fleet: Fleet,
) -> None:
    """A node answers a range with Content-Range (206 from MinIO, 200 from the stand-in): the
    copy it serves must keep its version, or an older copy beside it would look newer, be served
    and be "repaired" over the newest."""
    old, new = bytes(range(256)) * 8, bytes(reversed(range(256))) * 8
    with (
        GatewayServer.for_marker(fleet.marker, **REPLICATED) as server,
        httpx.Client(base_url=server.base_url, timeout=60) as http,
    ):
        assert http.put("/object/ranged", content=old).is_success
        first, second, _ = (fleet.by_name(name) for name in fleet.walk("ranged"))
        second.stop()
        wait_for(lambda: up_nodes(http) == 2, 20, "the gateway to see the replica down")
        assert http.put("/object/ranged", content=new).is_success  # at W = 2, without it
        second.start()
        wait_for(lambda: up_nodes(http) == 3, 30, "the replica back with its older copy")

        ranged = http.get("/object/ranged", headers={"Range": "bytes=100-199"})
        assert ranged.status_code == 206
        assert ranged.content == new[100:200]

        wait_for(lambda: second.newest("ranged") == new, 10, "the older replica to be repaired")
        assert first.newest("ranged") == new


def test_with_two_nodes_down_writes_are_refused_whole_and_reads_answer_as_r_allows(
    fleet: Fleet,
) -> None:
    with (
        GatewayServer.for_marker(fleet.marker, **REPLICATED) as majority,
        GatewayServer.for_marker(
            fleet.marker, replicas=3, write_quorum=3, read_quorum=1
        ) as read_one,
        httpx.Client(base_url=majority.base_url, timeout=60) as http,
        httpx.Client(base_url=read_one.base_url, timeout=60) as http_read_one,
    ):
        assert http.put("/object/kept", content=b"three copies").is_success
        before = {index: node.object_names() for index, node in fleet.nodes.items()}
        fleet.nodes[1].stop()
        fleet.nodes[2].stop()
        wait_for(lambda: up_nodes(http) == 1, 30, "the gateway to see two nodes down")
        wait_for(lambda: up_nodes(http_read_one) == 1, 30, "the other gateway too")

        refused = http.put("/object/kept", content=b"not acknowledged")
        assert refused.status_code == 503
        assert refused.json()["error"] == "quorum_unavailable"
        assert http.put("/object/newone", content=b"x").status_code == 503
        assert fleet.nodes[3].object_names() == before[3], "a refused write left something"
        assert http.get("/object/kept").status_code == 503

        assert http_read_one.get("/object/kept").content == b"three copies"
        assert http_read_one.put("/object/kept", content=b"no").status_code == 503
