"""The compose stack as a user runs it: built and started with compose, reached only over HTTP.

Runs under a unique project name with free published ports, so it never collides with a stack the
user has up, with the socket-proxy profile on (the second, locked-down gateway behind the Docker
socket proxy). With PYTHON_IMAGE, MINIO_IMAGE and SOCKET_PROXY_IMAGE set (CI), compose builds on
the local base image and runs the stand-ins; unset, it uses the official images as a user would.

Beside the stack's open gateway runs a second one with auth on (tests/e2e/compose.auth.yml, the
same image and nodes), which the auth tests reach on a port of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import pytest
from minio import Minio

from adapters.docker import credentials_from_env
from tests.integration.support import free_port, wait_for

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
# Count as "not yet": the published port refuses connections until the gateway listens.
CONNECTION_ERRORS = (httpx.TransportError,)
NODE_SERVICES = [f"amazin-object-storage-node-{i}" for i in (1, 2, 3)]
COMPOSE_FILES = ["-f", "docker-compose.yml", "-f", "tests/e2e/compose.auth.yml"]


# The README's quick start promises both: Compose v2 (the `docker compose` plugin of every current
# Docker install) and v1 (`docker-compose`, as Debian ships it). Each runs the whole module.
COMPOSE_COMMANDS = {"compose-v2": ["docker", "compose"], "compose-v1": ["docker-compose"]}


def compose_command(version: str) -> list[str]:
    command = COMPOSE_COMMANDS[version]
    probe = subprocess.run([*command, "version"], check=False, capture_output=True)
    if probe.returncode != 0 or not shutil.which(command[0]):
        raise AssertionError(
            f"`{' '.join(command)}` is not installed; .ci/run shows how to install both versions"
        )
    return command


@dataclass
class Stack:
    project: str
    compose: list[str]
    env: dict[str, str]
    docker: docker.DockerClient
    http: httpx.Client
    # The gateway with auth on (GATEWAY_AUTH_TOKENS_FILE set).
    auth_http: httpx.Client
    # The gateway behind the Docker socket proxy (profile socket-proxy).
    proxied: httpx.Client

    def run(self, *args: str, timeout: float = 120) -> None:
        subprocess.run(
            [*self.compose, "-p", self.project, *args],
            cwd=PROJECT_ROOT,
            env=self.env,
            check=True,
            timeout=timeout,
        )

    def last_line_of(self, *args: str, timeout: float = 60) -> str:
        """The last line a command prints (the token or the URL the auth commands make)."""
        done = subprocess.run(
            [*self.compose, "-p", self.project, *args],
            cwd=PROJECT_ROOT,
            env=self.env,
            check=True,
            timeout=timeout,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip().splitlines()[-1]

    def container(self, service: str) -> docker.models.containers.Container:
        (found,) = self.docker.containers.list(
            all=True,
            filters={
                "label": [
                    f"com.docker.compose.project={self.project}",
                    f"com.docker.compose.service={service}",
                ]
            },
        )
        return found

    def node_client(self, service: str) -> Minio:
        container = self.container(service)
        credentials = credentials_from_env(container.attrs["Config"]["Env"])
        assert credentials is not None
        networks = container.attrs["NetworkSettings"]["Networks"]
        address = networks[f"{self.project}_storage"]["IPAddress"]
        return Minio(
            f"{address}:9000",
            access_key=credentials.access_key,
            secret_key=credentials.secret_key,
            secure=False,
            region="us-east-1",
        )

    def objects_on(self, service: str) -> set[str]:
        client = self.node_client(service)
        if not client.bucket_exists("objects"):
            return set()
        # Every version of an ID is kept under by-id/<ID>/ (README: What an operator sees).
        return {
            (obj.object_name or "").removeprefix("by-id/").rstrip("/")
            for obj in client.list_objects("objects", prefix="by-id/")
        }


@pytest.fixture(scope="module", params=sorted(COMPOSE_COMMANDS))
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    project = f"amazine2e{uuid.uuid4().hex[:8]}"
    gateway_port = free_port()
    auth_gateway_port = free_port()
    proxied_port = free_port()
    env = dict(
        os.environ,
        COMPOSE_PROFILES="socket-proxy",
        GATEWAY_PUBLISHED_PORT=str(gateway_port),
        AUTH_GATEWAY_PUBLISHED_PORT=str(auth_gateway_port),
        # The stack's own gateway stays open, whatever this shell has set.
        GATEWAY_AUTH_TOKENS_FILE="",
        PROXIED_GATEWAY_PUBLISHED_PORT=str(proxied_port),
        NODE1_CONSOLE_PORT=str(free_port()),
        NODE2_CONSOLE_PORT=str(free_port()),
        NODE3_CONSOLE_PORT=str(free_port()),
    )
    client = docker.from_env()
    http = httpx.Client(base_url=f"http://127.0.0.1:{gateway_port}", timeout=120)
    auth_http = httpx.Client(base_url=f"http://127.0.0.1:{auth_gateway_port}", timeout=120)
    proxied = httpx.Client(base_url=f"http://127.0.0.1:{proxied_port}", timeout=120)
    compose = [*compose_command(request.param), *COMPOSE_FILES]
    stack = Stack(project, compose, env, client, http, auth_http, proxied)
    try:
        # The gateways first and alone: they must not depend on the nodes' start order.
        stack.run("up", "--build", "-d", "gateway", "gateway-auth", timeout=900)
        wait_for(
            lambda: http.get("/health/live").status_code == 200,
            60,
            "the gateway to answer",
            ignoring=CONNECTION_ERRORS,
        )
        alone = http.get("/object/probe")
        assert alone.status_code == 503
        assert alone.json()["error"] == "no_nodes_available"
        stack.run("up", "-d")
        wait_for(
            lambda: http.get("/object/probe").status_code == 404,
            60,
            "the gateway to find the nodes without a restart",
            ignoring=CONNECTION_ERRORS,
        )
        # Each node joins once its server answers (one may take longer than the others): the
        # tests below place IDs on all three.
        wait_for(
            lambda: [n["state"] for n in http.get("/health/ready").json()["nodes"]] == ["up"] * 3,
            60,
            "all three nodes to be members",
            ignoring=CONNECTION_ERRORS,
        )
        wait_for(
            lambda: (
                [n["state"] for n in proxied.get("/health/ready").json()["nodes"]] == ["up"] * 3
            ),
            60,
            "the gateway behind the socket proxy to find the three nodes",
            ignoring=CONNECTION_ERRORS,
        )
        yield stack
    finally:
        http.close()
        auth_http.close()
        proxied.close()
        try:
            stack.run(
                "logs",
                "--no-color",
                "gateway",
                "gateway-auth",
                "gateway-via-proxy",
                "docker-socket-proxy",
            )
        finally:
            stack.run("down", "-v", "--remove-orphans")
            for network in client.networks.list(names=[f"aaa-{project}-isolated"]):
                network.remove()
            client.close()


@pytest.mark.parametrize("size", [0, 1024, 50 * MiB], ids=["0B", "1KiB", "50MiB"])
def test_put_then_get_over_the_published_port_returns_identical_bytes(
    stack: Stack, size: int
) -> None:
    data = os.urandom(size)
    assert stack.http.put(f"/object/e2e{size}", content=data).status_code in (200, 201)
    got = stack.http.get(f"/object/e2e{size}")
    assert got.status_code == 200
    assert hashlib.sha256(got.content).digest() == hashlib.sha256(data).digest()


def test_unknown_ids_are_404_and_invalid_ones_400(stack: Stack) -> None:
    assert stack.http.get("/object/neverstored").status_code == 404
    assert stack.http.get("/object/not-valid").status_code == 400
    assert stack.http.put("/object/" + "x" * 33, content=b"x").status_code == 400


def test_ids_land_on_all_three_nodes(stack: Stack) -> None:
    ids = {f"spread{i}" for i in range(30)}
    for object_id in ids:
        assert stack.http.put(f"/object/{object_id}", content=object_id.encode()).is_success
    held = {service: stack.objects_on(service) & ids for service in NODE_SERVICES}
    assert all(held.values()), held
    assert sum(len(names) for names in held.values()) == len(ids)


def test_the_gateway_reaches_a_node_on_the_network_it_shares_not_another(stack: Stack) -> None:
    # A second network that sorts first and that the gateway is not on: a gateway taking a node's
    # first address would pick it and fail to reach the node.
    isolated = stack.docker.networks.create(f"aaa-{stack.project}-isolated")
    node = stack.container("amazin-object-storage-node-1")
    isolated.connect(node)
    try:
        time.sleep(3)  # longer than the discovery TTL
        ids = [f"shared{i}" for i in range(30)]
        for object_id in ids:
            response = stack.http.put(f"/object/{object_id}", content=object_id.encode())
            assert response.is_success, response.text
        on_node = stack.objects_on("amazin-object-storage-node-1") & set(ids)
        assert on_node
        for object_id in on_node:
            assert stack.http.get(f"/object/{object_id}").content == object_id.encode()
    finally:
        isolated.disconnect(node)


def test_a_restarted_node_answers_503_meanwhile_and_serves_again_after(stack: Stack) -> None:
    ids = [f"restart{i}" for i in range(30)]
    for object_id in ids:
        assert stack.http.put(f"/object/{object_id}", content=object_id.encode()).is_success
    on_node = sorted(stack.objects_on("amazin-object-storage-node-2") & set(ids))
    assert on_node
    gateway_before = stack.container("gateway")

    # `compose restart`, split into its stop and start so the gap can be observed.
    stack.run("stop", "amazin-object-storage-node-2")
    wait_for(
        lambda: stack.http.get(f"/object/{on_node[0]}").status_code == 503,
        15,
        "the gateway to see the node stopped",
        ignoring=CONNECTION_ERRORS,
    )
    assert stack.http.put(f"/object/{on_node[0]}", content=b"elsewhere?").status_code == 503
    stack.run("start", "amazin-object-storage-node-2")
    wait_for(
        lambda: stack.http.get(f"/object/{on_node[0]}").status_code == 200,
        30,
        "the node to serve again",
        ignoring=CONNECTION_ERRORS,
    )
    for object_id in on_node:
        assert stack.http.get(f"/object/{object_id}").content == object_id.encode()

    gateway_after = stack.container("gateway")
    assert gateway_after.attrs["RestartCount"] == 0
    assert gateway_after.attrs["State"]["StartedAt"] == gateway_before.attrs["State"]["StartedAt"]


def test_the_rebalance_command_runs_beside_the_gateway_and_finds_everything_in_place(
    stack: Stack,
) -> None:
    for i in range(10):
        assert stack.http.put(f"/object/placed{i}", content=b"x").is_success
    # Exit status 0: every object is on its owner (a dry run would fail otherwise).
    # Beside the gateway, in its container: the admin API listens on its loopback only.
    stack.run("exec", "-T", "gateway", "object-gateway", "rebalance", "--dry-run")
    stack.run("exec", "-T", "gateway", "object-gateway", "rebalance")


# Auth on (the gateway-auth service): tokens and signed URLs made by the commands beside it.


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_with_auth_on_only_health_live_answers_without_a_token(stack: Stack) -> None:
    http = stack.auth_http
    wait_for(
        lambda: http.get("/health/live").status_code == 200,
        60,
        "the gateway with auth on to answer",
        ignoring=CONNECTION_ERRORS,
    )
    for method, path in [
        ("GET", "/object/e2eauth"),
        ("PUT", "/object/e2eauth"),
        ("DELETE", "/object/e2eauth"),
        ("GET", "/objects"),
        ("GET", "/metrics"),
        ("GET", "/health/ready"),
        ("GET", "/schema/openapi.json"),
    ]:
        response = http.request(method, path, content=b"x" if method == "PUT" else None)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["error"] == "missing_token"


def test_with_auth_on_tokens_and_signed_urls_made_beside_the_gateway_work_until_withdrawn(
    stack: Stack,
) -> None:
    http = stack.auth_http
    command = ["exec", "-T", "gateway-auth", "object-gateway"]
    token = stack.last_line_of(
        *command, "token", "create", "--scope", "read", "--scope", "write", "--prefix", "e2eauth"
    )
    data = os.urandom(64 * 1024)
    # Picked up without a restart, within GATEWAY_AUTH_RELOAD_SECONDS.
    wait_for(
        lambda: http.put("/object/e2eauth1", content=data, headers=bearer(token)).is_success,
        30,
        "the gateway to take the new token",
        ignoring=CONNECTION_ERRORS,
    )
    got = http.get("/object/e2eauth1", headers=bearer(token))
    assert hashlib.sha256(got.content).digest() == hashlib.sha256(data).digest()
    assert http.put("/object/other1", content=b"x", headers=bearer(token)).status_code == 403
    assert http.delete("/object/e2eauth1", headers=bearer(token)).status_code == 403

    monitor = stack.last_line_of(*command, "token", "create", "--scope", "metrics")
    wait_for(
        lambda: http.get("/metrics", headers=bearer(monitor)).status_code == 200,
        10,
        "the gateway to take the metrics token",
    )
    assert http.get("/health/ready", headers=bearer(monitor)).json()["ready"]
    assert http.get("/object/e2eauth1", headers=bearer(monitor)).status_code == 403

    # A signed URL: the first one makes the first signing key.
    url = stack.last_line_of(*command, "sign", "GET", "e2eauth1", "--expires", "15m")
    wait_for(lambda: http.get(url).status_code == 200, 10, "the gateway to take the signing key")
    assert hashlib.sha256(http.get(url).content).digest() == hashlib.sha256(data).digest()
    assert http.put(url, content=b"x").json()["error"] == "invalid_signature"
    # Two rotations retire the key it was signed with.
    stack.last_line_of(*command, "signing-key", "rotate")
    stack.last_line_of(*command, "signing-key", "rotate")
    wait_for(lambda: http.get(url).status_code == 401, 10, "the gateway to retire the key")
    assert http.get(url).json()["error"] == "revoked_key"
    short = stack.last_line_of(*command, "sign", "GET", "e2eauth1", "--expires", "2s")
    wait_for(lambda: http.get(short).status_code == 401, 10, "the short URL to expire")
    assert http.get(short).json()["error"] == "expired_signature"

    stack.last_line_of(*command, "token", "revoke", token.split("_")[1])
    wait_for(
        lambda: http.get("/object/e2eauth1", headers=bearer(token)).status_code == 401,
        10,
        "the gateway to refuse the revoked token",
    )
    # The open gateway beside it, on the same nodes, answers as it always has.
    assert stack.http.get("/object/e2eauth1").content == data


def test_the_gateway_behind_the_socket_proxy_serves_locked_down_and_without_the_socket(
    stack: Stack,
) -> None:
    data = os.urandom(256 * 1024)
    assert stack.proxied.put("/object/viaproxy", content=data).status_code in (200, 201)
    assert stack.proxied.get("/object/viaproxy").content == data
    assert stack.http.get("/object/viaproxy").content == data  # one fleet, one placement
    attributes = stack.container("gateway-via-proxy").attrs
    assert attributes["Config"]["User"] == "10001:10001"
    host = attributes["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert any(option.startswith("no-new-privileges") for option in host["SecurityOpt"])
    assert not [m for m in attributes["Mounts"] if "docker.sock" in m.get("Source", "")]
    # Inside: the user is nobody in particular, and the root filesystem takes no writes.
    result = stack.container("gateway-via-proxy").exec_run(
        ["python3", "-c", "import os; print(os.getuid()); open('/opt/written', 'w')"]
    )
    assert result.exit_code != 0
    # Its output and its error come back interleaved in either order.
    assert "10001" in result.output.decode()
    assert b"Read-only file system" in result.output


# Run inside the proxied gateway: the proxy answers only the gateway there (-allowfrom).
_ASK_THE_PROXY = """
import http.client, json, sys
statuses = {}
for method, path in json.loads(sys.argv[1]):
    connection = http.client.HTTPConnection("docker-socket-proxy", 2375, timeout=10)
    connection.request(method, path)
    statuses[method + " " + path] = connection.getresponse().status
    connection.close()
print(json.dumps(statuses))
"""


def test_the_socket_proxy_lets_through_the_gateways_calls_and_refuses_the_rest(
    stack: Stack,
) -> None:
    node = stack.container("amazin-object-storage-node-1").id
    calls = {
        ("GET", f"/v1.41/containers/{node}/json"): 200,
        ("GET", "/v1.41/containers/json?all=1"): 200,
        ("GET", f"/v1.41/containers/{node}/archive?path=/etc/passwd"): 403,
        ("GET", f"/v1.41/containers/{node}/export"): 403,
        ("GET", f"/v1.41/containers/{node}/logs?stdout=1"): 403,
        ("GET", "/v1.41/images/json"): 403,
        ("POST", f"/v1.41/containers/{node}/stop"): 405,
        ("HEAD", "/_ping"): 405,
    }
    result = stack.container("gateway-via-proxy").exec_run(
        ["python3", "-c", _ASK_THE_PROXY, json.dumps(list(calls))]
    )
    assert result.exit_code == 0, result.output
    answered = json.loads(result.output)
    assert answered == {f"{method} {path}": status for (method, path), status in calls.items()}


def test_node_consoles_are_published_on_loopback_only(stack: Stack) -> None:
    for service in NODE_SERVICES:
        bindings = stack.container(service).attrs["HostConfig"]["PortBindings"]
        assert [b["HostIp"] for b in bindings["9001/tcp"]] == ["127.0.0.1"], bindings
