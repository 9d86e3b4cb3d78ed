"""The Swarm stack as an operator deploys it: scripts/swarm-deploy, reached over its published port.

Creates a single-node swarm only if the daemon is in none, and leaves it again only if it created
it. The stack gets a unique name, a free host-mode port and its own gateway image tag, and is
removed afterwards, so the machine is left as it was found.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import pytest
import yaml

from tests.integration.support import free_port, wait_for

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SWARM_DEPLOY = PROJECT_ROOT / "scripts" / "swarm-deploy"
CONNECTION_ERRORS = (httpx.TransportError,)


@dataclass
class SwarmStack:
    name: str
    env: dict[str, str]
    docker: docker.DockerClient
    http: httpx.Client

    def node_services(self) -> list[str]:
        return [f"{self.name}_amazin-object-storage-node-{i}" for i in (1, 2, 3)]

    def members(self) -> dict[str, str]:
        nodes = self.http.get("/health/ready").json()["nodes"]
        return {node["name"]: node["state"] for node in nodes}

    def task_container(self, service: str) -> docker.models.containers.Container:
        (container,) = self.docker.containers.list(
            filters={"label": f"com.docker.swarm.service.name={service}"}
        )
        return container

    def objects_on(self, service: str) -> set[str]:
        # Both MinIO and the stand-in keep an ID's versions in a directory by-id/<ID>.
        result = self.task_container(service).exec_run(["ls", "/data/objects/by-id"])
        if result.exit_code != 0:
            return set()  # nothing written there yet
        return set(result.output.decode().split())

    def scale(self, service: str, replicas: int) -> None:
        self.docker.services.get(service).scale(replicas)


@pytest.fixture(scope="module")
def swarm_stack() -> Iterator[SwarmStack]:
    client = docker.from_env()
    created_swarm = client.info()["Swarm"]["LocalNodeState"] != "active"
    if created_swarm:
        client.swarm.init(advertise_addr="127.0.0.1")
    name = f"amazinsw{uuid.uuid4().hex[:6]}"
    port = free_port()
    image = f"amazin-object-gateway:{name}"
    env = dict(os.environ, GATEWAY_PUBLISHED_PORT=str(port), GATEWAY_IMAGE=image)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        subprocess.run([str(SWARM_DEPLOY), name], env=env, check=True, timeout=900)
        yield SwarmStack(name, env, client, http)
    finally:
        http.close()
        try:
            subprocess.run([str(SWARM_DEPLOY), "--remove", name], env=env, check=True, timeout=180)
            for volume in client.volumes.list(
                filters={"label": f"com.docker.stack.namespace={name}"}
            ):
                volume.remove(force=True)
            client.images.remove(image, force=True)
        finally:
            if created_swarm:
                client.swarm.leave(force=True)
            client.close()


def test_objects_round_trip_and_spread_over_all_three_node_services(
    swarm_stack: SwarmStack,
) -> None:
    ids = [f"swarm{i}" for i in range(30)]
    for object_id in ids:
        assert swarm_stack.http.put(f"/object/{object_id}", content=object_id.encode()).is_success
    for object_id in ids:
        assert swarm_stack.http.get(f"/object/{object_id}").content == object_id.encode()
    held = {
        service: swarm_stack.objects_on(service) & set(ids)
        for service in swarm_stack.node_services()
    }
    assert all(held.values()), held
    assert sum(len(names) for names in held.values()) == len(ids)
    assert set(swarm_stack.members()) == {f"{s}.1" for s in swarm_stack.node_services()}


def test_a_replaced_task_keeps_its_place_and_every_object_reads_back(
    swarm_stack: SwarmStack,
) -> None:
    ids = [f"replaced{i}" for i in range(30)]
    for object_id in ids:
        assert swarm_stack.http.put(f"/object/{object_id}", content=object_id.encode()).is_success
    before = swarm_stack.members()
    service = swarm_stack.node_services()[1]
    old = swarm_stack.task_container(service)
    old.remove(force=True)

    def replaced() -> bool:
        containers = swarm_stack.docker.containers.list(
            filters={"label": f"com.docker.swarm.service.name={service}"}
        )
        return bool(containers) and containers[0].id != old.id

    wait_for(replaced, 60, "Swarm to start a replacement task")
    wait_for(
        lambda: set(swarm_stack.members().values()) == {"up"},
        60,
        "the gateway to use the replacement",
        ignoring=CONNECTION_ERRORS,
    )
    assert set(swarm_stack.members()) == set(before), "the ring must not change"
    for object_id in ids:
        assert swarm_stack.http.get(f"/object/{object_id}").content == object_id.encode()


def test_a_node_service_scaled_to_zero_answers_503_for_its_ids_until_scaled_back(
    swarm_stack: SwarmStack,
) -> None:
    ids = [f"scaled{i}" for i in range(30)]
    for object_id in ids:
        assert swarm_stack.http.put(f"/object/{object_id}", content=object_id.encode()).is_success
    service = swarm_stack.node_services()[2]
    on_service = sorted(swarm_stack.objects_on(service) & set(ids))
    elsewhere = sorted(set(ids) - set(on_service))
    assert on_service
    swarm_stack.scale(service, 0)
    try:
        wait_for(
            lambda: swarm_stack.members()[f"{service}.1"] == "down",
            60,
            "the gateway to see the service scaled to zero",
        )
        for object_id in on_service:
            response = swarm_stack.http.get(f"/object/{object_id}")
            assert response.status_code == 503
            assert response.json()["error"] == "node_unavailable"
        for object_id in elsewhere:
            assert swarm_stack.http.get(f"/object/{object_id}").content == object_id.encode()
    finally:
        swarm_stack.scale(service, 1)
    wait_for(
        lambda: swarm_stack.http.get(f"/object/{on_service[0]}").status_code == 200,
        60,
        "the service to serve again",
        ignoring=CONNECTION_ERRORS,
    )
    for object_id in on_service:
        assert swarm_stack.http.get(f"/object/{object_id}").content == object_id.encode()


# Run inside the gateway's container: the proxy is a unix socket in the volume they share.
_ASK_THE_PROXY = """
import http.client, json, socket, sys

class Local(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect("/run/docker-socket-proxy/docker.sock")

statuses = {}
for method, path in json.loads(sys.argv[1]):
    connection = Local("localhost", timeout=10)
    connection.request(method, path)
    statuses[method + " " + path] = connection.getresponse().status
    connection.close()
print(json.dumps(statuses))
"""


def test_the_gateway_runs_locked_down_and_reaches_docker_only_through_the_proxy(
    swarm_stack: SwarmStack,
) -> None:
    gateway = swarm_stack.task_container(f"{swarm_stack.name}_gateway")
    assert swarm_stack.task_container(f"{swarm_stack.name}_docker-socket-proxy")
    assert gateway.attrs["Config"]["User"] == "10001:10001"
    assert gateway.attrs["HostConfig"]["ReadonlyRootfs"] is True
    assert gateway.attrs["HostConfig"]["CapDrop"] == ["ALL"]
    assert not [m for m in gateway.attrs["Mounts"] if "docker.sock" in m.get("Source", "")]
    node = swarm_stack.task_container(swarm_stack.node_services()[0]).id
    calls = {
        ("GET", "/v1.41/services"): 200,
        ("GET", "/v1.41/tasks"): 200,
        ("GET", f"/v1.41/containers/{node}/json"): 200,
        ("GET", f"/v1.41/containers/{node}/archive?path=/data"): 403,
        ("GET", f"/v1.41/containers/{node}/export"): 403,
        ("GET", f"/v1.41/containers/{node}/logs?stdout=1"): 403,
        ("GET", "/v1.41/secrets"): 403,
        ("POST", "/v1.41/services/create"): 405,
    }
    result = gateway.exec_run(["python3", "-c", _ASK_THE_PROXY, json.dumps(list(calls))])
    assert result.exit_code == 0, result.output
    answered = json.loads(result.output)
    assert answered == {f"{method} {path}": status for (method, path), status in calls.items()}


def test_the_encrypted_overlay_option_encrypts_the_stacks_network() -> None:
    merged = subprocess.run(
        [
            "docker", "stack", "config",
            "-c", str(PROJECT_ROOT / "deploy" / "swarm" / "docker-stack.yml"),
            "-c", str(PROJECT_ROOT / "deploy" / "swarm" / "encrypted-overlay.yml"),
        ],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    network = yaml.safe_load(merged.stdout)["networks"]["storage"]
    assert network["driver"] == "overlay"
    assert "encrypted" in network["driver_opts"]
    assert not network.get("attachable")
