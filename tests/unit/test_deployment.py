"""What the compose and stack files let through and expose: read from the files themselves."""

from __future__ import annotations

import pytest

from tests.deployment import (
    COMPOSE_FILE,
    PROXY_SERVICE,
    STACK_FILE,
    allow_list,
    lets_through,
    services,
)

# Every Docker API call the gateway makes (adapters/docker), as docker-py sends it: the API version
# first (unversioned), then the containers, one container (its own, or a node), the events
# stream; under GATEWAY_DISCOVERY=swarm also the daemon's info, the services and the tasks.
# tests/reliability/test_discovery_faults.py records the real calls and holds them to this list.
GATEWAY_CALLS = [
    ("GET", "/version"),
    ("GET", "/v1.41/containers/json?all=1&filters=%7B%22name%22%3A+%5B%22node%22%5D%7D"),
    ("GET", "/v1.41/containers/3f2a9c1d0b7e/json"),
    ("GET", "/v1.41/containers/amazin-amazin-object-storage-node-1-1/json"),
    ("GET", "/v1.41/events?filters=%7B%22type%22%3A+%5B%22container%22%5D%7D"),
    ("GET", "/v1.45/info"),
    ("GET", "/v1.45/services"),
    ("GET", "/v1.45/tasks?filters=%7B%22desired-state%22%3A+%5B%22running%22%5D%7D"),
]
# What a process that reaches the proxy must never get: any file of any container, its output,
# a shell in it, a new container, images, secrets, the swarm's keys; also by way of encoded or
# dotted paths, and every method but GET.
REFUSED_CALLS = [
    ("GET", "/v1.41/containers/3f2a9c1d0b7e/archive?path=/etc/shadow"),
    ("HEAD", "/v1.41/containers/3f2a9c1d0b7e/archive?path=/"),
    ("GET", "/v1.41/containers/3f2a9c1d0b7e/export"),
    ("GET", "/v1.41/containers/3f2a9c1d0b7e/logs?stdout=1"),
    ("GET", "/v1.41/containers/3f2a9c1d0b7e/attach/ws"),
    ("GET", "/v1.41/containers/3f2a9c1d0b7e/top"),
    ("GET", "/v1.41/containers/3f2a9c1d0b7e/changes"),
    ("GET", "/v1.41/containers/3f2a9c1d0b7e/stats"),
    ("GET", "/v1.41/containers/3f2a9c1d0b7e%2Farchive/json"),
    ("GET", "/v1.41/containers/..%2F..%2Fimages/json"),
    ("GET", "/v1.41/containers/../images/json"),
    ("GET", "/v1.41/containers/x/json/../archive"),
    ("GET", "/v1.41/containers/x/json%0A"),
    ("GET", "/v1.41/images/json"),
    ("GET", "/v1.41/images/get?names=x"),
    ("GET", "/v1.41/secrets"),
    ("GET", "/v1.41/configs"),
    ("GET", "/v1.41/swarm/unlockkey"),
    ("GET", "/v1.41/services/x/logs"),
    ("GET", "/v1.41/tasks/x/logs"),
    ("GET", "/v1.41/nodes"),
    ("GET", "/v1.41/volumes"),
    ("GET", "/v1.41/system/df"),
    ("GET", "/v1.41/exec/x/json"),
    ("GET", "/_ping"),
    ("GET", "/other/v1.41/containers/json"),
    ("POST", "/v1.41/containers/create"),
    ("POST", "/v1.41/containers/3f2a9c1d0b7e/exec"),
    ("POST", "/v1.41/containers/3f2a9c1d0b7e/stop"),
    ("PUT", "/v1.41/containers/3f2a9c1d0b7e/archive?path=/"),
    ("DELETE", "/v1.41/containers/3f2a9c1d0b7e"),
]
DEPLOYMENTS = {"compose": COMPOSE_FILE, "stack": STACK_FILE}


@pytest.mark.parametrize("deployment", sorted(DEPLOYMENTS))
@pytest.mark.parametrize(("method", "target"), GATEWAY_CALLS)
def test_the_socket_proxy_lets_through_every_call_the_gateway_makes(
    deployment: str, method: str, target: str
) -> None:
    assert lets_through(allow_list(DEPLOYMENTS[deployment]), method, target)


@pytest.mark.parametrize("deployment", sorted(DEPLOYMENTS))
@pytest.mark.parametrize(("method", "target"), REFUSED_CALLS)
def test_the_socket_proxy_refuses_everything_else(
    deployment: str, method: str, target: str
) -> None:
    assert not lets_through(allow_list(DEPLOYMENTS[deployment]), method, target)


def test_compose_and_the_stack_let_through_the_same_calls_and_only_reads() -> None:
    compose, stack = allow_list(COMPOSE_FILE), allow_list(STACK_FILE)
    assert set(compose) == {"GET"}
    assert {m: r.pattern for m, r in compose.items()} == {m: r.pattern for m, r in stack.items()}


@pytest.mark.parametrize(
    ("deployment", "gateway"),
    [("compose", "gateway-via-proxy"), ("stack", "gateway")],
)
def test_the_gateway_behind_the_proxy_is_locked_down(deployment: str, gateway: str) -> None:
    service = services(DEPLOYMENTS[deployment])[gateway]
    user = str(service["user"])
    assert not user.startswith(("0", "root")), user
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    mounts = [str(volume) for volume in service.get("volumes", [])]
    assert not any("docker.sock" in mount for mount in mounts), mounts
    assert "docker-socket-proxy" in service["environment"]["DOCKER_HOST"]


def test_the_stack_runs_the_proxy_on_every_manager_beside_the_gateway() -> None:
    stack = services(STACK_FILE)
    for name in (PROXY_SERVICE, "gateway"):
        deploy = stack[name]["deploy"]
        assert deploy["mode"] == "global"
        assert "node.role == manager" in deploy["placement"]["constraints"]


def test_node_consoles_are_published_on_loopback_only_and_nowhere_in_the_stack() -> None:
    compose, stack = services(COMPOSE_FILE), services(STACK_FILE)
    nodes = [name for name in compose if name.startswith("amazin-object-storage-node")]
    assert len(nodes) == 3
    for name in nodes:
        assert all(str(port).startswith("127.0.0.1:") for port in compose[name]["ports"])
        assert "ports" not in stack[name]


@pytest.mark.parametrize("deployment", sorted(DEPLOYMENTS))
def test_node_keys_come_from_variables_with_defaults(deployment: str) -> None:
    for name, service in services(DEPLOYMENTS[deployment]).items():
        if not name.startswith("amazin-object-storage-node"):
            continue
        keys = {k: v for k, v in service["environment"].items() if k.startswith("MINIO_")}
        assert len(keys) == 2
        assert all(value.startswith("${NODE") and ":-" in value for value in keys.values()), keys
