"""Storage nodes as this Docker daemon's containers (``GATEWAY_DISCOVERY=docker``)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from typing import Any

import docker
import docker.errors

from adapters.docker.client import (
    DockerDiscoveryBase,
    DockerEventFeed,
    open_event_stream,
    own_container_networks,
)
from adapters.docker.keys import credentials_from_env
from domain.node import Node, NodeState

__all__ = ["DockerNodeDiscovery", "container_member"]

# What can change the fleet: containers appearing, starting, stopping, (un)pausing, going or
# renamed, and containers joining or leaving networks (which changes their addresses).
_EVENT_FILTERS = {
    "type": ["container", "network"],
    "event": [
        *("create", "start", "die", "stop", "destroy", "rename", "pause", "unpause"),
        *("connect", "disconnect"),
    ],
}


def container_member(
    attributes: Mapping[str, Any],
    *,
    name_marker: str,
    node_port: int,
    own_networks: frozenset[str] | None,
    warn: Callable[[str], None],
) -> Node | None:
    """The member a container is (from ``docker inspect``), or None when it is none.

    When the gateway itself runs in a container (``own_networks``), only nodes attached to a
    network it shares are members, and a node's address is its IP on that network; elsewhere
    (tests, a gateway on the host) every marked container is, addressed on its first network
    that has an IP.
    """
    name = str(attributes["Name"]).lstrip("/")
    # The daemon's name filter is an unanchored regex; keep only true substring matches.
    if name_marker not in name:
        return None
    state = attributes["State"]
    if state.get("Status") == "created":
        # Created and never started (between `docker create` and `docker start`, or left so):
        # it holds nothing, and as a member that is down it would make its IDs answer 503.
        return None
    networks: Mapping[str, Any] = attributes["NetworkSettings"]["Networks"] or {}
    if own_networks is not None:
        networks = {key: value for key, value in networks.items() if key in own_networks}
        if not networks:
            return None
    credentials = credentials_from_env(attributes["Config"].get("Env"))
    if credentials is None:
        warn(f"skipping container {name}: it sets no MinIO keys")
        return None
    running = bool(state.get("Running")) and not state.get("Paused")
    host = next(
        (
            settings["IPAddress"]
            for _, settings in sorted(networks.items())
            if settings.get("IPAddress")
        ),
        None,
    )
    up = running and host is not None
    return Node(
        name=name,
        host=host if up else None,
        port=node_port,
        credentials=credentials,
        state=NodeState.UP if up else NodeState.DOWN,
    )


class DockerNodeDiscovery(DockerDiscoveryBase):
    """Finds storage nodes as the containers, running or not, whose name contains the marker and
    that have started at least once."""

    async def discover(self) -> list[Node]:
        return await self._in_thread(lambda: self._with_client("listing the nodes", self._list))

    async def watch(self) -> DockerEventFeed:
        loop = asyncio.get_running_loop()
        return await self._in_thread(lambda: self._open_feed(loop))

    def _open_feed(self, loop: asyncio.AbstractEventLoop) -> DockerEventFeed:
        client, stream = open_event_stream(self._client_factory, _EVENT_FILTERS)
        return DockerEventFeed(client, stream, self._concerns_fleet, loop, "docker-events")

    def _list(self, client: docker.DockerClient) -> list[Node]:
        networks = own_container_networks(client)
        own_networks = None if networks is None else frozenset(networks)
        summaries = client.api.containers(all=True, filters={"name": re.escape(self._name_marker)})
        members = []
        for summary in summaries:
            try:
                attributes = client.api.inspect_container(summary["Id"])
            except docker.errors.NotFound:
                continue  # removed between listing and inspecting: no longer a member
            member = container_member(
                attributes,
                name_marker=self._name_marker,
                node_port=self._node_port,
                own_networks=own_networks,
                warn=self._warn_once,
            )
            if member is not None:
                members.append(member)
        return members

    def _concerns_fleet(self, event: Mapping[str, Any]) -> bool:
        if event.get("Type") == "network":
            return True
        attributes = event.get("Actor", {}).get("Attributes", {})
        names = (attributes.get("name", ""), attributes.get("oldName", ""))
        return any(self._name_marker in name for name in names)
