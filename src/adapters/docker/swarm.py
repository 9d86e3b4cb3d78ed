"""Storage nodes as Docker Swarm services, found through a manager (``GATEWAY_DISCOVERY=swarm``).

Identity survives Swarm replacing a task, on any host (see ``swarm_members``). A manager's API sees
every service and task of the swarm, on every host; task changes on other hosts are not in this
daemon's events, so the change feed also compares a task listing every few seconds.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from typing import Any

import docker

from adapters.docker.client import (
    DockerDiscoveryBase,
    DockerEventFeed,
    open_event_stream,
    own_container_networks,
)
from adapters.docker.swarm_members import not_a_manager, swarm_fingerprint, swarm_members
from domain.errors import DiscoveryUnavailable
from domain.node import Node

__all__ = ["SwarmChangeFeed", "SwarmNodeDiscovery"]

_EVENT_FILTERS = {"type": ["service", "container", "node"]}
_Listing = tuple[list[Node], str]


class SwarmNodeDiscovery(DockerDiscoveryBase):
    """The ``NodeDiscovery`` port on a Swarm manager."""

    def __init__(
        self,
        client_factory: Callable[[], docker.DockerClient],
        name_marker: str,
        node_port: int,
        executor: Executor,
        task_poll_seconds: float,
    ) -> None:
        super().__init__(client_factory, name_marker, node_port, executor)
        self._task_poll_seconds = task_poll_seconds
        # The watcher's poll and a re-listing may run in the two discovery threads at once.
        self._lock = threading.Lock()

    async def discover(self) -> list[Node]:
        members, _ = await self._in_thread(self._listing)
        return members

    async def fingerprint(self) -> str:
        """A digest of the services and tasks the members are computed from."""
        _, fingerprint = await self._in_thread(self._listing)
        return fingerprint

    async def watch(self) -> SwarmChangeFeed:
        loop = asyncio.get_running_loop()
        return await self._in_thread(lambda: self._open_feed(loop))

    def _open_feed(self, loop: asyncio.AbstractEventLoop) -> SwarmChangeFeed:
        client, stream = open_event_stream(self._client_factory, _EVENT_FILTERS)
        events = DockerEventFeed(client, stream, self._concerns_fleet, loop, "swarm-events")
        return SwarmChangeFeed(events, self.fingerprint, loop, poll_seconds=self._task_poll_seconds)

    def _listing(self) -> _Listing:
        with self._lock:
            return self._with_client("listing the swarm's services", self._list)

    def _list(self, client: docker.DockerClient) -> _Listing:
        problem = not_a_manager(client.info())
        if problem is not None:
            raise DiscoveryUnavailable(problem)
        services = client.api.services()  # type: ignore[no-untyped-call]
        marked = [s for s in services if self._name_marker in s["Spec"]["Name"]]
        tasks = [
            task
            for service in marked
            for task in client.api.tasks(  # type: ignore[no-untyped-call]
                filters={"service": service["ID"]}
            )
        ]
        members = swarm_members(
            marked,
            tasks,
            name_marker=self._name_marker,
            node_port=self._node_port,
            own_networks=_own_networks(client),
            warn=self._warn_once,
        )
        return members, swarm_fingerprint(marked, tasks)

    def _concerns_fleet(self, event: Mapping[str, Any]) -> bool:
        actor = event.get("Actor", {}).get("Attributes", {})
        names = (actor.get("name", ""), actor.get("com.docker.swarm.service.name", ""))
        return event.get("Type") == "node" or any(self._name_marker in n for n in names)


def _own_networks(client: docker.DockerClient) -> frozenset[str] | None:
    # By name and by ID: a service's spec names its networks by ID, a task's attachments both.
    networks = own_container_networks(client)
    if networks is None:
        return None
    ids = {network["NetworkID"] for network in networks.values() if network.get("NetworkID")}
    return frozenset(networks) | ids


class SwarmChangeFeed:
    """Service, container and node events, plus a short poll of the tasks.

    Task state changes on other hosts are not in this daemon's events stream, so the feed also
    compares the swarm's task listing every ``poll_seconds``.
    """

    def __init__(
        self,
        events: DockerEventFeed,
        fingerprint: Callable[[], Awaitable[str]],
        loop: asyncio.AbstractEventLoop,
        *,
        poll_seconds: float,
    ) -> None:
        self._events = events
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
