"""What both discovery adapters share: one way to reach the daemon and one failure mapping, the
events stream (opened within a timeout) and the thread that reads it, and the gateway's own
networks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor
from typing import Any, TypeVar, cast

import docker
import docker.errors
import docker.utils
import requests
from docker.utils.json_stream import json_stream

from domain.errors import DiscoveryUnavailable

__all__ = [
    "DockerDiscoveryBase",
    "DockerEventFeed",
    "EventStream",
    "docker_errors",
    "open_event_stream",
    "own_container_networks",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_STREAM_ENDED = object()


@contextlib.contextmanager
def docker_errors(doing: str) -> Iterator[None]:
    """The docker SDK's failures (and the HTTP client's under it) as ``DiscoveryUnavailable``."""
    try:
        yield
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        raise DiscoveryUnavailable(f"the Docker daemon cannot be reached ({doing}): {exc}") from exc


class DockerDiscoveryBase:
    """One client of the daemon, made on first use and made afresh after a failure; calls to it
    run in the discovery threads, off the event loop."""

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
        self._warned: set[str] = set()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _in_thread(self, call: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _with_client(self, doing: str, call: Callable[[docker.DockerClient], _T]) -> _T:
        try:
            with docker_errors(doing):
                if self._client is None:
                    self._client = self._client_factory()
                return call(self._client)
        except DiscoveryUnavailable:
            # A broken connection may not recover on the same client; start afresh next time.
            self.close()
            raise

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            logger.warning(message)


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


def open_event_stream(
    client_factory: Callable[[], docker.DockerClient], filters: Mapping[str, Any]
) -> tuple[docker.DockerClient, EventStream]:
    """A client of its own (the stream holds its connection as long as it runs) and the stream."""
    with docker_errors("connecting"):
        client = client_factory()
    try:
        with docker_errors("opening the events stream"):
            return client, EventStream.open(client, filters)
    except DiscoveryUnavailable:
        client.close()
        raise


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


class DockerEventFeed:
    """The Docker events stream as a ``ChangeFeed``: a thread reads it and wakes the event loop.

    ``concerns_fleet`` chooses which events matter.
    """

    def __init__(
        self,
        client: docker.DockerClient,
        stream: EventStream,
        concerns_fleet: Callable[[Mapping[str, Any]], bool],
        loop: asyncio.AbstractEventLoop,
        thread_name: str,
    ) -> None:
        self._client = client
        self._stream = stream
        self._concerns_fleet = concerns_fleet
        self._loop = loop
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._closed = False
        threading.Thread(target=self._read, name=thread_name, daemon=True).start()

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
