"""The Swarm stack on three real Docker hosts (network namespaces, one dockerd each).

Topology: three managers, one per host (raft keeps its quorum when any one host dies, and the
gateway, global on managers, runs on each host: two of them must agree on every placement), and
one node service pinned per host by a node label (a node's volume stays on its host). Deployed
with the project's own stack file and scripts/swarm-deploy pointed at host 1 (DOCKER_HOST). The
tests run in order: the last one replaces host 3 by an empty host.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.integration.support import MINIO_IMAGE, SOCKET_PROXY_IMAGE, wait_for
from tests.multihost.hosts import (
    Host,
    create_bridge,
    remove_bridge,
    remove_leftovers,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SWARM_DEPLOY = PROJECT_ROOT / "scripts" / "swarm-deploy"
NODE_SERVICES = [f"amazin-object-storage-node-{i}" for i in (1, 2, 3)]
PORT = 3000
CONNECTION_ERRORS = (httpx.TransportError,)

pytestmark = pytest.mark.timeout(900)


@dataclass
class Cluster:
    hosts: dict[int, Host]
    image: str
    archive: Path
    stack: str = ""
    env: dict[str, str] = field(default_factory=dict)
    node_ids: dict[int, str] = field(default_factory=dict)
    setup_seconds: float = 0.0

    @property
    def manager(self) -> Host:
        return self.hosts[1]

    def gateway(self, index: int = 1) -> httpx.Client:
        return httpx.Client(base_url=f"http://{self.hosts[index].address}:{PORT}", timeout=60)

    def deploy(self, **settings: str) -> None:
        self.stack = f"amzmh{uuid.uuid4().hex[:6]}"
        self.env = dict(
            os.environ,
            DOCKER_HOST=self.manager.socket,
            GATEWAY_IMAGE=self.image,
            MINIO_IMAGE=MINIO_IMAGE,
            SOCKET_PROXY_IMAGE=SOCKET_PROXY_IMAGE,
            GATEWAY_PUBLISHED_PORT=str(PORT),
            GATEWAY_PUBLISHED_HOST=self.manager.address,
            # The hosts share this machine's filesystem: every socket proxy mounts host 1's socket
            # (a manager's API sees the whole swarm, so each gateway still places IDs on its own).
            DOCKER_SOCKET=f"/run/{self.manager.name}.sock",
            **{f"NODE{i}_CONSTRAINT": f"node.labels.amazin.slot == {i}" for i in (1, 2, 3)},
            **settings,
        )
        subprocess.run(
            [str(SWARM_DEPLOY), "--no-build", self.stack], env=self.env, check=True, timeout=300
        )

    def remove_stack(self) -> None:
        if self.stack:
            subprocess.run(
                [str(SWARM_DEPLOY), "--remove", self.stack], env=self.env, check=True, timeout=180
            )
            for host in self.hosts.values():
                with contextlib.suppress(Exception):
                    host.docker("volume", "prune", "-f", "--filter", "all=1", timeout=60)
            self.stack = ""

    def members(self, index: int = 1) -> dict[str, str]:
        with self.gateway(index) as http:
            nodes = http.get("/health/ready").json()["nodes"]
        return {node["name"]: node["state"] for node in nodes}

    def host_of(self, service: str) -> Host:
        slot = int(service.rsplit("-", 1)[1])
        return next(h for i, h in self.hosts.items() if self.slot_of(i) == slot)

    def slot_of(self, index: int) -> int:
        return 3 if index == 4 else index  # host 4 replaces host 3

    def objects_on(self, service: str) -> set[str]:
        host = self.host_of(service)
        with contextlib.closing(host.client()) as client:
            (container,) = client.containers.list(
                filters={"label": f"com.docker.swarm.service.name={self.stack}_{service}"}
            )
            # Every version of an ID is kept in a directory by-id/<ID>.
            result = container.exec_run(["ls", "/data/objects/by-id"])
        if result.exit_code != 0:
            return set()
        return set(result.output.decode().split())

    def label(self, index: int) -> None:
        node_id = self.hosts[index].docker("info", "--format", "{{.Swarm.NodeID}}").strip()
        self.node_ids[index] = node_id
        self.manager.docker(
            "node", "update", "--label-add", f"amazin.slot={self.slot_of(index)}", node_id
        )


def _build_and_save_images(workdir: Path) -> tuple[str, Path]:
    image = f"amazin-object-gateway:multihost{uuid.uuid4().hex[:6]}"
    subprocess.run(
        [
            "docker",
            "build",
            "-q",
            "--build-arg",
            f"PYTHON_IMAGE={os.environ.get('PYTHON_IMAGE', 'python:3.12-slim')}",
            "-t",
            image,
            str(PROJECT_ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    archive = workdir / "images.tar"
    subprocess.run(
        ["docker", "save", "-o", str(archive), image, MINIO_IMAGE, SOCKET_PROXY_IMAGE],
        check=True,
        timeout=600,
    )
    return image, archive


def _start_host(index: int, archive: Path) -> Host:
    host = Host(index)
    host.create_namespace()
    host.start_daemon()
    host.load_images(archive)
    return host


def _join(host: Host, manager: Host, role: str) -> None:
    token = manager.docker("swarm", "join-token", "-q", role).strip()
    host.docker(
        "swarm", "join", "--token", token, "--advertise-addr", host.address,
        f"{manager.address}:2377",
    )  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = time.monotonic()
    remove_leftovers()
    workdir = tmp_path_factory.mktemp("multihost")
    image, archive = _build_and_save_images(workdir)
    hosts: dict[int, Host] = {}
    created_bridge = False
    try:
        create_bridge()
        created_bridge = True
        with ThreadPoolExecutor(max_workers=3) as pool:
            for host in pool.map(lambda i: _start_host(i, archive), (1, 2, 3)):
                hosts[host.index] = host
        cluster = Cluster(hosts, image, archive)
        cluster.manager.docker("swarm", "init", "--advertise-addr", cluster.manager.address)
        for index in (2, 3):
            _join(hosts[index], cluster.manager, "manager")
        for index in (1, 2, 3):
            cluster.label(index)
        cluster.setup_seconds = time.monotonic() - started
        yield cluster
    finally:
        for host in reversed(list(hosts.values())):
            host.remove()
        remove_leftovers()
        if created_bridge:
            remove_bridge()
        subprocess.run(["docker", "image", "rm", "-f", image], capture_output=True, check=False)


@pytest.fixture(scope="module")
def one_copy(cluster: Cluster) -> Cluster:
    cluster.deploy(GATEWAY_REPLICAS="1")
    return cluster


def test_ids_round_trip_and_spread_over_nodes_on_all_three_hosts(
    one_copy: Cluster, figures: dict[str, str]
) -> None:
    cluster = one_copy
    figures["three hosts (namespaces), images loaded, swarm of three managers"] = (
        f"ready in {cluster.setup_seconds:.0f} s"
    )
    ids = [f"mh{i}" for i in range(30)]
    with cluster.gateway() as http:
        for object_id in ids:
            assert http.put(f"/object/{object_id}", content=object_id.encode()).is_success
        for object_id in ids:
            assert http.get(f"/object/{object_id}").content == object_id.encode()
    held = {service: cluster.objects_on(service) & set(ids) for service in NODE_SERVICES}
    assert all(held.values()), held
    assert sum(len(names) for names in held.values()) == len(ids)
    # The manager's own daemon runs one node only; the gateway found the other two through the
    # manager's API, running on the other hosts.
    with contextlib.closing(cluster.manager.client()) as local:
        local_nodes = [
            c
            for c in local.containers.list()
            if "amazin-object-storage-node" in c.labels.get("com.docker.swarm.service.name", "")
        ]
    assert len(local_nodes) == 1
    assert set(cluster.members().values()) == {"up"}
    assert len(cluster.members()) == 3


def test_two_gateways_on_two_hosts_agree_on_every_placement(one_copy: Cluster) -> None:
    cluster = one_copy
    ids = [f"agree{i}" for i in range(40)]
    with cluster.gateway(1) as first, cluster.gateway(2) as second:
        for i, object_id in enumerate(ids):
            writer = first if i % 2 else second
            assert writer.put(f"/object/{object_id}", content=object_id.encode()).is_success
        for object_id in ids:
            assert first.get(f"/object/{object_id}").content == object_id.encode()
            assert second.get(f"/object/{object_id}").content == object_id.encode()
        listed = [
            [entry["id"] for entry in http.get("/objects", params={"prefix": "agree"}).json()[
                "objects"
            ]]
            for http in (first, second)
        ]  # fmt: skip
    assert listed[0] == listed[1] == sorted(ids)
    held = {service: cluster.objects_on(service) & set(ids) for service in NODE_SERVICES}
    assert sum(len(names) for names in held.values()) == len(ids), "an ID on two nodes"


def test_a_dead_host_costs_only_its_nodes_ids_and_serves_them_again_when_back(
    one_copy: Cluster, figures: dict[str, str]
) -> None:
    cluster = one_copy
    ids = [f"dead{i}" for i in range(40)]
    with cluster.gateway() as http:
        for object_id in ids:
            assert http.put(f"/object/{object_id}", content=object_id.encode()).is_success
        on_dead = sorted(cluster.objects_on(NODE_SERVICES[2]) & set(ids))
        elsewhere = sorted(set(ids) - set(on_dead))
        assert on_dead
        assert elsewhere
        cluster.hosts[3].kill()
        try:
            for object_id in on_dead:
                response = http.get(f"/object/{object_id}")
                assert response.status_code == 503, response.text
                assert response.json()["error"] == "node_unavailable"
            for object_id in elsewhere:
                assert http.get(f"/object/{object_id}").content == object_id.encode()
        finally:
            restarted = time.monotonic()
            cluster.hosts[3].start_daemon()
        wait_for(
            lambda: all(
                http.get(f"/object/{object_id}").status_code == 200 for object_id in on_dead
            ),
            120,
            "host 3's node to serve again",
            ignoring=CONNECTION_ERRORS,
        )
        back = time.monotonic() - restarted
        for object_id in ids:
            assert http.get(f"/object/{object_id}").content == object_id.encode()
    figures["N=1, host 3 killed"] = (
        f"its {len(on_dead)} IDs 503, the other {len(elsewhere)} served; back and serving "
        f"{back:.1f} s after its daemon restarted, every object intact"
    )
    cluster.remove_stack()


def test_with_three_copies_a_host_killed_under_load_costs_nothing_and_repair_refills_its_successor(
    cluster: Cluster, figures: dict[str, str]
) -> None:
    cluster.deploy(GATEWAY_REPLICAS="3")
    acknowledged: dict[str, bytes] = {}
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(number: int) -> None:
        with cluster.gateway() as http:
            for i in range(10_000):
                if stop.is_set():
                    return
                object_id = f"load{number}x{i % 25}"
                body = os.urandom(200 + i % 700)
                try:
                    response = http.put(f"/object/{object_id}", content=body)
                    with lock:
                        statuses[response.status_code] += 1
                        if response.is_success:
                            acknowledged[object_id] = body
                        else:
                            failures.append(f"PUT {object_id}: {response.text}")
                    read = http.get(f"/object/{object_id}")
                    with lock:
                        statuses[read.status_code] += 1
                        if not read.is_success:
                            failures.append(f"GET {object_id}: {read.text}")
                        elif read.content != acknowledged.get(object_id):
                            failures.append(f"{object_id} read back wrong")
                except httpx.TransportError as exc:
                    with lock:
                        failures.append(f"{object_id}: {exc!r}")

    # Three clients: the three hosts, their nodes and gateways and the clients share the CI
    # machine's two cores; more would measure that machine rather than the gateway.
    with ThreadPoolExecutor(max_workers=3) as pool:
        running = [pool.submit(client, number) for number in range(3)]
        time.sleep(8)
        before_kill = sum(statuses.values())
        cluster.hosts[3].kill()
        time.sleep(15)
        stop.set()
        for future in running:
            future.result(timeout=120)
    assert not failures, (statuses, failures[:10])
    assert set(statuses) <= {200, 201}, statuses
    assert sum(statuses.values()) - before_kill > 50, "too few requests after the kill"

    # Host 3 is gone for good; host 4, empty, takes its place (and its node's label).
    dead = cluster.hosts.pop(3)
    dead_node = cluster.node_ids[3]
    wait_for(
        lambda: cluster.manager.docker("node", "inspect", "-f", "{{.Status.State}}", dead_node)
        .strip() == "down",
        60,
        "the swarm to see host 3 down",
    )  # fmt: skip
    cluster.manager.docker("node", "demote", dead_node)
    cluster.manager.docker("node", "rm", "--force", dead_node)
    dead.remove()
    cluster.hosts[4] = _start_host(4, cluster.archive)
    _join(cluster.hosts[4], cluster.manager, "worker")
    cluster.label(4)
    try:
        wait_for(
            lambda: set(cluster.members().values()) == {"up"} and len(cluster.members()) == 3,
            120,
            "the replacement node on host 4",
            ignoring=CONNECTION_ERRORS,
        )
    except AssertionError as exc:
        tasks = cluster.manager.docker(
            "service", "ps", "--no-trunc", f"{cluster.stack}_{NODE_SERVICES[2]}"
        )
        nodes = cluster.manager.docker("node", "ls")
        raise AssertionError(f"{exc}\nmembers {cluster.members()}\n{tasks}\n{nodes}") from None
    assert not cluster.objects_on(NODE_SERVICES[2]), "the replacement host is not empty"

    with contextlib.closing(cluster.manager.client()) as local:
        (gateway,) = [
            c
            for c in local.containers.list()
            if c.labels.get("com.docker.swarm.service.name") == f"{cluster.stack}_gateway"
        ]
        repair_started = time.monotonic()
        repaired = gateway.exec_run(["object-gateway", "repair"])
        repair_seconds = time.monotonic() - repair_started
    assert repaired.exit_code == 0, repaired.output.decode()[-3000:]
    for service in NODE_SERVICES:
        assert cluster.objects_on(service) >= set(acknowledged), service
    with cluster.gateway() as http:
        for object_id, body in acknowledged.items():
            assert http.get(f"/object/{object_id}").content == body
    total = sum(statuses.values())
    figures["N=3, host 3 killed under load (3 clients)"] = (
        f"{total} requests ({total - before_kill} after the kill), all 2xx, "
        f"{len(acknowledged)} objects all read back; repair onto an empty host 4 in "
        f"{repair_seconds:.1f} s, three copies of each"
    )
