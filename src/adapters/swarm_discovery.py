"""Storage nodes as Docker Swarm services: identity that survives Swarm replacing a task, any host.

Under plain Docker a node's identity is its container name. Under Swarm a replaced task (removed,
crashed, or its host gone) gets a new container, so a new name; the identity has to be what Swarm
keeps: ``<service name>.<slot>`` for a replicated service, ``<service name>.<node id>`` for a global
one. A manager's API sees every service and task of the swarm, on every host.

Membership: for each service whose name contains the marker, its slots ``1..replicas`` (a service
scaled to 0 keeps slot 1, down, the way a stopped container stays a member: its IDs answer 503,
not another node's 404), or for a global service each node it runs (or is restarting) a task on.
A member is up when the task Swarm wants running in its place is running and has an address on an
overlay network the gateway shares. Keys come from the service's container spec, read as MinIO
reads them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any

import docker
import docker.errors
import requests

from adapters.docker_discovery import (
    DockerEventFeed,
    EventStream,
    credentials_from_env,
    open_event_stream,
    own_container_networks,
)
from domain.errors import DiscoveryUnavailable
from domain.node import Node, NodeState

__all__ = ["SwarmChangeFeed", "SwarmNodeDiscovery", "not_a_manager", "swarm_members"]

logger = logging.getLogger(__name__)

_FAILURES = (docker.errors.DockerException, requests.RequestException)
_EVENT_FILTERS = {"type": ["service", "container", "node"]}
_WANTED_STATES = frozenset({"running", "ready"})


def swarm_members(
    services: Iterable[Mapping[str, Any]],
    tasks: Iterable[Mapping[str, Any]],
    *,
    name_marker: str,
    node_port: int,
    own_networks: frozenset[str] | None,
    warn: Callable[[str], None] = logger.warning,
) -> list[Node]:
    """The fleet's members from the API's service and task listings (pure: tested on recordings).

    ``own_networks`` are the names of the networks the gateway's own container is on (None when it
    does not run in a container: then any non-ingress address will do).
    """
    tasks_by_service: dict[str, list[Mapping[str, Any]]] = {}
    for task in tasks:
        tasks_by_service.setdefault(str(task.get("ServiceID")), []).append(task)
    members: list[Node] = []
    for service in sorted(services, key=lambda s: str(s["Spec"]["Name"])):
        spec = service["Spec"]
        name = str(spec["Name"])
        if name_marker not in name:
            continue
        if own_networks is not None and not _attached_to(spec) & own_networks:
            continue  # not on a network the gateway shares: another stack's, unreachable anyway
        container_spec = spec.get("TaskTemplate", {}).get("ContainerSpec", {})
        credentials = credentials_from_env(container_spec.get("Env"))
        if credentials is None:
            warn(f"skipping service {name}: it sets no MinIO keys")
            continue
        # Swarm's restart supervisor (and a rolling update) holds a replacement task in "ready"
        # for the restart delay: its place stays a member, down, until the task runs.
        wanted = [
            task
            for task in tasks_by_service.get(str(service["ID"]), [])
            if task.get("DesiredState") in _WANTED_STATES
        ]
        mode = spec.get("Mode", {})
        if "Global" in mode:
            places = {str(task.get("NodeID")): f"{name}.{task.get('NodeID')}" for task in wanted}
            key = "NodeID"
        else:
            replicas = int(mode.get("Replicated", {}).get("Replicas", 1) or 0)
            places = {str(slot): f"{name}.{slot}" for slot in range(1, max(replicas, 1) + 1)}
            key = "Slot"
        for place, identity in sorted(places.items()):
            candidates = [task for task in wanted if str(task.get(key)) == place]
            current = max(candidates, key=_version) if candidates else None
            host = _address(current, own_networks) if current is not None else None
            running = (
                current is not None
                and current.get("DesiredState") == "running"
                and current.get("Status", {}).get("State") == "running"
            )
            up = running and host is not None
            members.append(
                Node(
                    name=identity,
                    host=host if up else None,
                    port=node_port,
                    credentials=credentials,
                    state=NodeState.UP if up else NodeState.DOWN,
                )
            )
    return members


def _attached_to(spec: Mapping[str, Any]) -> set[str]:
    networks = [
        *(spec.get("TaskTemplate", {}).get("Networks") or ()),
        *(spec.get("Networks") or ()),
    ]
    return {str(network.get("Target")) for network in networks}


def _version(task: Mapping[str, Any]) -> int:
    return int(task.get("Version", {}).get("Index", 0))


def _address(task: Mapping[str, Any], own_networks: frozenset[str] | None) -> str | None:
    for attachment in task.get("NetworksAttachments") or ():
        network = attachment.get("Network", {})
        network_name = network.get("Spec", {}).get("Name", "")
        if own_networks is None:
            if network.get("Spec", {}).get("Ingress"):
                continue
        elif network_name not in own_networks and network.get("ID") not in own_networks:
            continue
        for address in attachment.get("Addresses") or ():
            return str(address).split("/", 1)[0]
    return None


class SwarmNodeDiscovery:
    """The ``NodeDiscovery`` port on a Swarm manager (``GATEWAY_DISCOVERY=swarm``)."""

    def __init__(
        self,
        client_factory: Callable[[], docker.DockerClient],
        name_marker: str,
        node_port: int,
        executor: Executor,
        task_poll_seconds: float,
    ) -> None:
        self._client_factory = client_factory
        self._name_marker = name_marker
        self._node_port = node_port
        self._executor = executor
        self._task_poll_seconds = task_poll_seconds
        self._client: docker.DockerClient | None = None
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    async def discover(self) -> list[Node]:
        loop = asyncio.get_running_loop()
        members, _ = await loop.run_in_executor(self._executor, self._listing)
        return members

    async def watch(self) -> SwarmChangeFeed:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._open_feed, loop)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _open_feed(self, loop: asyncio.AbstractEventLoop) -> SwarmChangeFeed:
        client, stream = open_event_stream(self._client_factory, _EVENT_FILTERS)
        return SwarmChangeFeed(
            client,
            stream,
            self._name_marker,
            self.fingerprint,
            loop,
            poll_seconds=self._task_poll_seconds,
        )

    async def fingerprint(self) -> str:
        """A digest of the services and tasks the members are computed from."""
        loop = asyncio.get_running_loop()
        _, fingerprint = await loop.run_in_executor(self._executor, self._listing)
        return fingerprint

    def _listing(self) -> tuple[list[Node], str]:
        """The members, and a fingerprint of what they were computed from."""
        with self._lock:
            try:
                client = self._client or self._client_factory()
                self._client = client
                _require_manager(client)
                services = client.api.services()  # type: ignore[no-untyped-call]
                marked = [s for s in services if self._name_marker in s["Spec"]["Name"]]
                tasks = [
                    task
                    for service in marked
                    for task in client.api.tasks(  # type: ignore[no-untyped-call]
                        filters={"service": service["ID"]}
                    )
                ]
                own_networks = self._own_networks(client)
            except _FAILURES as exc:
                self.close()
                raise DiscoveryUnavailable(f"the Docker daemon cannot be reached: {exc}") from exc
        members = swarm_members(
            marked,
            tasks,
            name_marker=self._name_marker,
            node_port=self._node_port,
            own_networks=own_networks,
            warn=self._warn_once,
        )
        return members, _fingerprint(marked, tasks)

    @staticmethod
    def _own_networks(client: docker.DockerClient) -> frozenset[str] | None:
        # By name and by ID: a service's spec names its networks by ID, a task's attachments both.
        networks = own_container_networks(client)
        if networks is None:
            return None
        ids = {network["NetworkID"] for network in networks.values() if network.get("NetworkID")}
        return frozenset(networks) | ids

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            logger.warning(message)


def _require_manager(client: docker.DockerClient) -> None:
    problem = not_a_manager(client.info())
    if problem is not None:
        raise DiscoveryUnavailable(problem)


def not_a_manager(info: Mapping[str, Any]) -> str | None:
    """Why a daemon (its ``docker info``) cannot serve swarm discovery; None when it can."""
    swarm = info.get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active":
        return (
            "GATEWAY_DISCOVERY=swarm, but this Docker daemon is not part of a swarm "
            "(docker swarm init, or run the gateway on a manager)"
        )
    if not swarm.get("ControlAvailable"):
        return (
            "GATEWAY_DISCOVERY=swarm, but this Docker daemon is a swarm worker, not a manager: "
            "only managers see every service and task (place the gateway on managers)"
        )
    return None


def _fingerprint(services: Sequence[Mapping[str, Any]], tasks: Sequence[Mapping[str, Any]]) -> str:
    # What the members depend on; a change in it is a change of the fleet.
    summary = sorted(
        [("service", s["ID"], s.get("Version", {}).get("Index")) for s in services]
        + [
            (
                "task",
                t["ID"],
                t.get("DesiredState"),
                t.get("Status", {}).get("State"),
                json.dumps(t.get("NetworksAttachments") or [], sort_keys=True, default=str),
            )
            for t in tasks
        ],
        key=str,
    )
    return hashlib.sha256(json.dumps(summary, default=str).encode()).hexdigest()


class _SwarmEvents(DockerEventFeed):
    """Service, container and node events of the marked services."""

    _thread_name = "swarm-events"

    def _concerns_fleet(self, event: Mapping[str, Any]) -> bool:
        actor = event.get("Actor", {}).get("Attributes", {})
        names = (actor.get("name", ""), actor.get("com.docker.swarm.service.name", ""))
        return event.get("Type") == "node" or any(self._name_marker in n for n in names)


class SwarmChangeFeed:
    """Service, container and node events, plus a short poll of the tasks.

    Task state changes on other hosts are not in this daemon's events stream, so the feed also
    compares the swarm's task listing every ``poll_seconds``.
    """

    def __init__(
        self,
        client: docker.DockerClient,
        stream: EventStream,
        name_marker: str,
        fingerprint: Callable[[], Awaitable[str]],
        loop: asyncio.AbstractEventLoop,
        *,
        poll_seconds: float,
    ) -> None:
        self._events = _SwarmEvents(client, stream, name_marker, loop)
        self._fingerprint = fingerprint
        self._loop = loop
        self._poll_seconds = poll_seconds
        self._last_fingerprint: str | None = None

    async def next_change(self, timeout_seconds: float) -> bool:
        if self._last_fingerprint is None:
            # The baseline right away (the watcher has just listed): a task change on another host
            # before the first poll is then seen by it, not left to the resync.
            await self._tasks_changed()
        deadline = self._loop.time() + timeout_seconds
        while (remaining := deadline - self._loop.time()) > 0:
            if await self._events.next_change(min(remaining, self._poll_seconds)):
                return True
            if await self._tasks_changed():
                return True
        return False

    async def _tasks_changed(self) -> bool:
        fingerprint = await self._fingerprint()
        changed = self._last_fingerprint is not None and fingerprint != self._last_fingerprint
        self._last_fingerprint = fingerprint
        return changed

    async def close(self) -> None:
        await self._events.close()
