from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any, cast

import docker
import docker.errors
import docker.utils
import requests
from docker.utils.json_stream import json_stream

from domain.errors import DiscoveryUnavailable
from domain.node import Credentials, Node, NodeState

__all__ = [
    "DockerEventFeed",
    "DockerNodeDiscovery",
    "EventStream",
    "credentials_from_env",
    "open_event_stream",
    "own_container_networks",
]

logger = logging.getLogger(__name__)

# MinIO reads MINIO_ROOT_USER/MINIO_ROOT_PASSWORD first and falls back to the legacy pair.
_KEY_PAIRS = (
    ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"),
    ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"),
)


# What can change the fleet: containers appearing, starting, stopping, (un)pausing, going or
# renamed, and containers joining or leaving networks (which changes their addresses).
_EVENT_FILTERS = {
    "type": ["container", "network"],
    "event": [
        *("create", "start", "die", "stop", "destroy", "rename", "pause", "unpause"),
        *("connect", "disconnect"),
    ],
}
_STREAM_ENDED = object()


def credentials_from_env(env: Sequence[str] | None) -> Credentials | None:
    """The node's keys from a container's ``KEY=value`` environment, read as MinIO reads them."""
    variables = dict(item.split("=", 1) for item in env or () if "=" in item)
    for user_variable, password_variable in _KEY_PAIRS:
        access_key = variables.get(user_variable)
        secret_key = variables.get(password_variable)
        if access_key and secret_key:
            return Credentials(access_key=access_key, secret_key=secret_key)
    return None


class DockerNodeDiscovery:
    """Finds storage nodes as the containers, running or not, whose name contains ``name_marker``
    and that have started at least once.

    When the gateway itself runs in a container, only nodes attached to a network it shares are
    members, and a node's address is its IP on that network; elsewhere (tests, a gateway on the
    host) every marked container is a member, addressed on its first network that has an IP.
    """

    def __init__(
        self,
        client_factory: Callable[[], docker.DockerClient],
        name_marker: str,
        node_port: int,
        executor: Executor,
    ) -> None:
        self._client_factory = client_factory
        self._name_marker = name_marker
        self._node_port = node_port
        self._executor = executor
        self._client: docker.DockerClient | None = None
        self._warned_without_keys: set[str] = set()

    async def discover(self) -> list[Node]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._discover_blocking)

    async def watch(self) -> DockerEventFeed:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._open_event_feed, loop)

    def _open_event_feed(self, loop: asyncio.AbstractEventLoop) -> DockerEventFeed:
        client, stream = open_event_stream(self._client_factory, _EVENT_FILTERS)
        return DockerEventFeed(client, stream, self._name_marker, loop)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _discover_blocking(self) -> list[Node]:
        try:
            client = self._connected_client()
            own_networks = self._own_networks(client)
            summaries = client.api.containers(
                all=True, filters={"name": re.escape(self._name_marker)}
            )
            nodes = []
            for summary in summaries:
                attributes = self._inspect(client, summary["Id"])
                if attributes is not None:
                    node = self._node_from(attributes, own_networks)
                    if node is not None:
                        nodes.append(node)
            return nodes
        except (docker.errors.DockerException, requests.RequestException) as exc:
            # A broken connection may not recover on the same client; start afresh next time.
            self.close()
            raise DiscoveryUnavailable(f"the Docker daemon cannot be reached: {exc}") from exc

    def _connected_client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _own_networks(self, client: docker.DockerClient) -> frozenset[str] | None:
        networks = own_container_networks(client)
        return None if networks is None else frozenset(networks)

    @staticmethod
    def _inspect(client: docker.DockerClient, container_id: str) -> dict[str, Any] | None:
        try:
            attributes: dict[str, Any] = client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            # Removed between listing and inspecting: it is no longer a member.
            return None
        return attributes

    def _node_from(
        self, attributes: Mapping[str, Any], own_networks: frozenset[str] | None
    ) -> Node | None:
        name = attributes["Name"].lstrip("/")
        # The daemon's name filter is an unanchored regex; keep only true substring matches.
        if self._name_marker not in name:
            return None
        if attributes["State"].get("Status") == "created":
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
            if name not in self._warned_without_keys:
                self._warned_without_keys.add(name)
                logger.warning("skipping container %s: it sets no MinIO keys", name)
            return None
        state_of_container = attributes["State"]
        running = bool(state_of_container.get("Running")) and not state_of_container.get("Paused")
        host = next(
            (
                settings["IPAddress"]
                for _, settings in sorted(networks.items())
                if settings.get("IPAddress")
            ),
            None,
        )
        state = NodeState.UP if running and host is not None else NodeState.DOWN
        return Node(
            name=name,
            host=host if state is NodeState.UP else None,
            port=self._node_port,
            credentials=credentials,
            state=state,
        )


def open_event_stream(
    client_factory: Callable[[], docker.DockerClient], filters: Mapping[str, Any]
) -> tuple[docker.DockerClient, EventStream]:
    """A client of its own (the stream holds its connection as long as it runs) and the stream."""
    try:
        client = client_factory()
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise DiscoveryUnavailable(f"the Docker daemon cannot be reached: {exc}") from exc
    try:
        return client, EventStream.open(client, filters)
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        client.close()
        raise DiscoveryUnavailable(f"the Docker events stream failed: {exc}") from exc


class EventStream:
    """The daemon's events, one decoded JSON object at a time, opened within the client's timeout.

    docker-py's ``events()`` waits for the daemon's answer without a timeout: a daemon, or a proxy
    that buffers streamed answers, that takes the request and never answers would hold discovery's
    watcher for ever, and no re-listing would run again. Here the answer's head must come within
    the client's timeout; after it, events may be minutes apart, so the socket waits without one.
    """

    def __init__(self, response: requests.Response) -> None:
        self._response = response

    @classmethod
    def open(cls, client: docker.DockerClient, filters: Mapping[str, Any]) -> EventStream:
        api = client.api
        response = api.get(
            f"{api.base_url}/v{api.api_version}/events",
            params={"filters": docker.utils.convert_filters(dict(filters))},
            stream=True,
            timeout=api.timeout,
        )
        response.raise_for_status()
        connection = response.raw.connection
        if connection is not None and connection.sock is not None:
            connection.sock.settimeout(None)
        return cls(response)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # json_stream decodes bytes as it splits them (its stubs say text only).
        chunks = cast(Iterator[str], self._response.raw.read_chunked(decode_content=False))
        return cast(Iterator[dict[str, Any]], json_stream(chunks))

    def close(self) -> None:
        # Closing the response alone would leave a thread blocked in the socket's read.
        connection = self._response.raw.connection
        if connection is not None and connection.sock is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)
        self._response.close()


def own_container_networks(client: docker.DockerClient) -> Mapping[str, Any] | None:
    """The networks (by name) of the gateway's own container, or None when it runs in none."""
    if not os.path.exists("/.dockerenv"):
        return None
    try:
        own = client.api.inspect_container(socket.gethostname())
    except docker.errors.NotFound:
        return None
    networks: Mapping[str, Any] = own["NetworkSettings"]["Networks"] or {}
    return networks


class DockerEventFeed:
    """The Docker events stream as a ``ChangeFeed``: a thread reads it and wakes the event loop.

    Subclasses choose which events concern the fleet (``_concerns_fleet``).
    """

    _thread_name = "docker-events"

    def __init__(
        self,
        client: docker.DockerClient,
        stream: EventStream,
        name_marker: str,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._client = client
        self._stream = stream
        self._name_marker = name_marker
        self._loop = loop
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._closed = False
        threading.Thread(target=self._read, name=self._thread_name, daemon=True).start()

    async def next_change(self, timeout_seconds: float) -> bool:
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout_seconds)
        except TimeoutError:
            return False
        # A burst (compose starting a stack) becomes one change.
        while not self._queue.empty() and item is not _STREAM_ENDED:
            next_item = self._queue.get_nowait()
            if next_item is _STREAM_ENDED or isinstance(next_item, BaseException):
                item = next_item
        if item is _STREAM_ENDED:
            raise DiscoveryUnavailable("the Docker events stream ended")
        if isinstance(item, BaseException):
            raise DiscoveryUnavailable(f"the Docker events stream failed: {item}") from item
        return True

    async def close(self) -> None:
        self._closed = True
        self._stream.close()
        self._client.close()

    def _read(self) -> None:
        try:
            for event in self._stream:
                if self._concerns_fleet(event):
                    self._hand_over(event)
            self._hand_over(_STREAM_ENDED)
        except Exception as exc:  # any failure of the stream is handed over, to be reported there
            if not self._closed:
                self._hand_over(exc)

    def _hand_over(self, item: object) -> None:
        # RuntimeError: the event loop is gone, so nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _concerns_fleet(self, event: Mapping[str, Any]) -> bool:
        if event.get("Type") == "network":
            return True
        attributes = event.get("Actor", {}).get("Attributes", {})
        names = (attributes.get("name", ""), attributes.get("oldName", ""))
        return any(self._name_marker in name for name in names)
