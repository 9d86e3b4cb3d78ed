"""Limits at the edge that uvicorn does not have: request-head size and time, and a connection cap.

uvicorn (with httptools) accepts request heads of any size and waits forever for one to finish,
and keeps connections that never send a byte. A subclass of its protocol closes those gaps, each
answered the way a client can act on (431, 408, 503) and logged, never a silent failure:

- a request head larger than ``max_head_bytes`` gets 431 as soon as the excess arrives, without
  buffering what lies beyond;
- a head not complete ``head_timeout_seconds`` after its first byte (or after the connection was
  opened) gets 408 (slowloris);
- connections beyond ``max_connections`` get 503 at once. The process's file limit is raised at
  start-up to what the cap needs, so accepting never fails for lack of descriptors.

Idle keep-alive connections are closed by uvicorn's own ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from adapters.deadline import MovableDeadline
from domain.sizes import KiB
from entrypoints.http.errors import error_body

__all__ = ["EdgeLimits", "OneSendPerResponse", "guarded_protocol", "raise_file_limit"]

logger = logging.getLogger("gateway.edge")

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}
# A response head is a few hundred bytes; bodies this small are worth joining to it too.
_HELD_WRITE_BYTES = 16 * KiB
# Descriptors beyond the client and node connections: the Docker socket, logs, temporary files.
_SPARE_DESCRIPTORS = 256


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    max_head_bytes: int
    head_timeout_seconds: float
    max_connections: int


def raise_file_limit(limits: EdgeLimits, node_connections_per_client: int) -> EdgeLimits:
    """Raise the soft file limit to what the caps need; lower the connection cap if it cannot be.

    Every client connection may hold up to ``node_connections_per_client`` node connections besides
    its own (in use, or idle in the pool after it), and a few more descriptors are spare.
    """
    per_client = 1 + node_connections_per_client
    needed = per_client * limits.max_connections + _SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft < ceiling:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
    if ceiling >= needed:
        return limits
    affordable = max(1, (ceiling - _SPARE_DESCRIPTORS) // per_client)
    logger.warning(
        "the file limit (hard %d) allows %d connections, not %d: capping at %d",
        hard,
        affordable,
        limits.max_connections,
        affordable,
    )
    return EdgeLimits(limits.max_head_bytes, limits.head_timeout_seconds, affordable)


def _refusal(status: int, error: str, detail: str, retry_after: int | None = None) -> bytes:
    body = error_body(error, detail)
    lines = [
        b"HTTP/1.1 %d %s" % (status, _REASONS[status]),
        b"content-type: application/json",
        b"content-length: %d" % len(body),
        b"connection: close",
    ]
    if retry_after is not None:
        lines.append(b"retry-after: %d" % retry_after)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class OneSendPerResponse:
    """A connection's transport, except that a small write waits for the next one, up to the end
    of the event loop's current turn, so that both leave in one send.

    uvicorn writes a response's head as soon as the app starts the response and its body in a
    second write: two system calls (and, for the client, often two TCP segments) for a small
    object, where one would do. Held bytes always go out before the turn ends, and before the
    connection is closed.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.writelines((held, data))
        elif len(data) <= _HELD_WRITE_BYTES and not self._transport.is_closing():
            # Copied if mutable: a transport's write takes the bytes as they are when called.
            self._held = data if type(data) is bytes else bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        self._held = None
        # A connection lost meanwhile takes what was held with it, as it would have unsent bytes.
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        held = self._held
        return self._transport.get_write_buffer_size() + (0 if held is None else len(held))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _HeadTooLarge(Exception):
    """Raised from a parser callback: stops parsing a head that has passed the limit."""


class _GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[EdgeLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused = False
        self._in_head = True
        # The head's size as the parser reports its parts (request target, each header line):
        # exact for every part it has finished, whichever reads they came in.
        self._head_bytes = 0
        # Bytes of whole reads that arrived while a head was under way and left it unfinished:
        # bounds what the parser buffers of a header that never ends.
        self._unfinished_head_bytes = 0
        self._head_began_in_this_read = False
        self._head_too_large = False
        # A deadline per request, one timer per connection: a kept-alive connection's requests
        # only move it.
        self._head_deadline = MovableDeadline(self.loop, self._head_timed_out)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self._refused = True
            self.transport = transport
            self._refuse(
                503,
                "too_many_connections",
                f"the gateway already has {self.limits.max_connections} connections open",
                retry_after=1,
            )
            return
        super().connection_made(OneSendPerResponse(transport, self.loop))  # type: ignore[arg-type]
        self._head_deadline.set(self.limits.head_timeout_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_deadline.cancel()
        if not self._refused:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._head_began_in_this_read = False
        in_head_throughout = self._in_head
        # A head over the limit stops the parser from a callback; uvicorn then calls
        # send_400_response, which answers 431 instead.
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():
            return
        if in_head_throughout and not self._head_began_in_this_read:
            self._unfinished_head_bytes += len(data)
        if max(self._head_bytes, self._unfinished_head_bytes) > self.limits.max_head_bytes:
            self._refuse_head_too_large()

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:
            self._refuse_head_too_large()
        else:
            # uvicorn's own answer is text/plain; every error of the gateway is JSON.
            self._refuse(400, "invalid_request", f"malformed HTTP request: {msg}")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_began_in_this_read = True
        # The request line's method, spaces, version and line ends, and the head's final CRLF.
        self._head_bytes = len(b"DELETE  HTTP/1.1\r\n\r\n")
        self._unfinished_head_bytes = 0
        self._head_deadline.set(self.limits.head_timeout_seconds)

    def on_url(self, url: bytes) -> None:
        self._count_head_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head_bytes(len(name) + len(value) + len(b": \r\n"))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._unfinished_head_bytes = 0
        self._head_deadline.clear()
        super().on_headers_complete()
        if self.parser.should_upgrade() and self.cycle is not None:
            # The gateway has no WebSocket (or other upgraded) routes, so the Upgrade header is
            # ignored and the request served as plain HTTP (RFC 9110 section 7.8 allows it). The
            # parser takes whatever follows as the other protocol's, so the connection closes
            # after this answer.
            self.cycle.keep_alive = False

    def _unsupported_upgrade_warning(self) -> None:
        # uvicorn's warning would suggest installing a WebSocket library; ignoring it is deliberate.
        logger.debug("ignored an Upgrade header: the gateway has no upgraded routes")

    def _count_head_bytes(self, count: int) -> None:
        self._head_bytes += count
        if self._head_bytes > self.limits.max_head_bytes:
            self._head_too_large = True
            raise _HeadTooLarge

    def on_body(self, body: bytes) -> None:
        # uvicorn appends each chunk to a bytearray and receive() copies it out again: two copies
        # of every uploaded byte. A chunk that finds nothing waiting is handed over as it came
        # (receive()'s bytes() of a bytes object is that object); a later one still appends.
        cycle = self.cycle
        if cycle.body or cycle.response_complete or self.parser.should_upgrade():
            super().on_body(body)
            return
        cycle.body = body  # type: ignore[assignment]  # bytes where uvicorn starts a bytearray
        if len(body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()

    def _head_timed_out(self) -> None:
        if self._in_head and not self.transport.is_closing():
            self._refuse(
                408,
                "request_head_timeout",
                f"no complete request head within {self.limits.head_timeout_seconds:g} seconds",
            )

    def _refuse_head_too_large(self) -> None:
        self._refuse(
            431,
            "request_head_too_large",
            f"the request line and headers exceed {self.limits.max_head_bytes} bytes",
        )

    def _refuse(self, status: int, error: str, detail: str, retry_after: int | None = None) -> None:
        peer = self.transport.get_extra_info("peername")
        logger.warning("%d %s from %s: %s", status, error, peer, detail)
        self.transport.write(_refusal(status, error, detail, retry_after))
        self.transport.close()


def guarded_protocol(limits: EdgeLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with these limits (uvicorn takes the class as ``http``)."""
    return type("GuardedHttpToolsProtocol", (_GuardedHttpToolsProtocol,), {"limits": limits})
