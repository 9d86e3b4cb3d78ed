"""Limits at the edge that uvicorn does not have: request-head size and time, and a connection cap.

uvicorn (with httptools) accepts request heads of any size and waits forever for one to finish,
and keeps connections that never send a byte. A subclass of its protocol closes those gaps, each
answered the way a client can act on (431, 408, 503) and logged, never a silent failure:

- a request head larger than ``max_head_bytes`` gets 431 as soon as the excess arrives, without
  buffering what lies beyond;
- a head not complete ``head_timeout_seconds`` after its first byte (or after the connection was
  opened) gets 408 (slowloris);
- connections beyond ``max_connections`` get 503 at once. The process's file limit is raised at
  start-up to what the cap needs, so accepting never fails for lack of descriptors;
- a request without exactly one valid ``Host`` (HTTP/1.1), or with several (any version), gets 400
  (RFC 9112 section 3.2);
- chunk extensions are bounded: a chunked body whose framing beyond 16 bytes a chunk adds up to
  more than ``max_chunk_extension_bytes`` gets 400 (they carry no data, yet every byte of them
  is read and parsed).

Idle keep-alive connections are closed by uvicorn's own ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import resource
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from adapters.deadline import MovableDeadline
from domain.sizes import KiB
from entrypoints.http.asgi import RESET_EXTENSION
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
# RFC 9112 section 3.2 / RFC 3986: a host (a name, an IPv4 or a bracketed IPv6 literal) and a port.
_HOST_VALUE = re.compile(rb"[A-Za-z0-9._~!$&'()*+,;=%:\[\]-]*")
# SO_LINGER on, with a timeout of 0: closing sends an RST and frees the socket's buffers at once.
_LINGER_NOT = struct.pack("ii", 1, 0)
# Framing every chunk may take without counting towards the extensions' bound: its size in hex,
# the CRLF after it and the CRLF after its data.
_FRAMING_PER_CHUNK = 16


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    max_head_bytes: int
    head_timeout_seconds: float
    max_connections: int
    max_chunk_extension_bytes: int


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
    return dataclasses.replace(limits, max_connections=affordable)


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

    A close while ``cut_short()`` says the response under way can never be complete (the app gave
    up on a client that reads too slowly) resets the connection instead: what is still queued is a
    truncated answer, and a close would wait for that same slow client to read all of it first
    (and the kernel would go on sending what its buffers hold, as nginx's
    ``reset_timedout_connection`` explains).
    """

    __slots__ = ("_cut_short", "_held", "_loop", "_transport")

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        cut_short: Callable[[], bool] = lambda: False,
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._cut_short = cut_short
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
        if self._cut_short():
            self.reset()
            return
        self.flush()
        self._transport.close()

    def reset(self) -> None:
        """Close at once with a TCP RST, dropping what this side still has queued."""
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_NOT)
        self.abort()

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


class _HeadRefused(Exception):
    """Raised from a parser callback: stops parsing a head that must be answered 400."""


def host_problem(headers: list[tuple[bytes, bytes]], http_version: str) -> str | None:
    """Why a request's Host header fields are not acceptable (RFC 9112 section 3.2), or None.

    HTTP/1.1 needs exactly one, any version at most one, and its value must be a host and port.
    """
    hosts = [value for name, value in headers if name == b"host"]
    if len(hosts) > 1:
        return f"the request has {len(hosts)} Host headers; one is allowed"
    if not hosts:
        return "an HTTP/1.1 request needs a Host header" if http_version == "1.1" else None
    if not _HOST_VALUE.fullmatch(hosts[0]):
        return "the Host header is not a host and port"
    return None


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
        self._head_refusal: str | None = None
        # A chunked body's framing (chunk-size lines with their extensions, trailers), measured
        # as what a read brings beyond its body bytes, and the chunks that allow for some of it.
        self._chunked_body = False
        self._body_bytes_in_read = 0
        self._chunk_framing_bytes = 0
        self._chunks = 0
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
        super().connection_made(
            OneSendPerResponse(transport, self.loop, self._response_cut_short)  # type: ignore[arg-type]
        )
        self._head_deadline.set(self.limits.head_timeout_seconds)

    def _response_cut_short(self) -> bool:
        """A response has started and will not be completed: the app ended without finishing it."""
        cycle = self.cycle
        return cycle is not None and cycle.response_started and not cycle.response_complete

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_deadline.cancel()
        if not self._refused:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._head_began_in_this_read = False
        in_head_throughout = self._in_head
        # A read that starts within a chunked body and begins no new request is body and framing
        # alone, so its framing is exact; the reads that hold a head as well are not counted.
        in_chunked_body = self._chunked_body
        self._body_bytes_in_read = 0
        # A head over the limit (or refused) stops the parser from a callback; uvicorn then calls
        # send_400_response, which answers 431 (or 400) instead.
        super().data_received(data)
        if self.transport.is_closing():
            return
        if in_chunked_body and not self._head_began_in_this_read:
            self._count_chunk_framing(len(data) - self._body_bytes_in_read)
            return
        if not self._in_head:
            return
        if in_head_throughout and not self._head_began_in_this_read:
            self._unfinished_head_bytes += len(data)
        if max(self._head_bytes, self._unfinished_head_bytes) > self.limits.max_head_bytes:
            self._refuse_head_too_large()

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:
            self._refuse_head_too_large()
        elif self._head_refusal is not None:
            self._refuse(400, "invalid_request", self._head_refusal)
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
        self._head_refusal = None
        self._chunked_body = False
        self._chunk_framing_bytes = 0
        self._chunks = 0
        self._head_deadline.set(self.limits.head_timeout_seconds)
        # By the scope's id: a scope holding a function that holds the scope would be a reference
        # cycle, freed by the garbage collector rather than when the request ends.
        scope_id = id(self.scope)
        self.scope["extensions"] = {
            RESET_EXTENSION: {"reset": lambda: self._reset_connection(scope_id)}
        }

    def _reset_connection(self, scope_id: int) -> None:
        # The request's own cycle: marked gone before the app returns, so that uvicorn does not
        # log the response it cut short as an error.
        for cycle in (self.cycle, *(queued for queued, _ in self.pipeline)):
            if cycle is not None and id(cycle.scope) == scope_id:
                cycle.disconnected = True
        transport = self.transport
        if isinstance(transport, OneSendPerResponse):
            transport.reset()
        else:
            transport.abort()

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
        problem = host_problem(self.headers, self.parser.get_http_version())
        if problem is not None:
            self._head_refusal = problem
            raise _HeadRefused
        self._chunked_body = any(
            name == b"transfer-encoding" and b"chunked" in value.lower()
            for name, value in self.headers
        )
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

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_message_complete(self) -> None:
        self._chunked_body = False
        super().on_message_complete()

    def _count_chunk_framing(self, count: int) -> None:
        self._chunk_framing_bytes += count
        allowed = self.limits.max_chunk_extension_bytes + _FRAMING_PER_CHUNK * self._chunks
        if self._chunk_framing_bytes > allowed:
            self._refuse(
                400,
                "invalid_request",
                f"the chunked body's chunk extensions exceed "
                f"{self.limits.max_chunk_extension_bytes} bytes",
            )

    def on_body(self, body: bytes) -> None:
        self._body_bytes_in_read += len(body)
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
        cycle = self.cycle
        # An answer under way (a body refused while its response streams) is cut, not followed by
        # a second one.
        if cycle is None or not cycle.response_started or cycle.response_complete:
            self.transport.write(_refusal(status, error, detail, retry_after))
        self.transport.close()


def guarded_protocol(limits: EdgeLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with these limits (uvicorn takes the class as ``http``)."""
    return type("GuardedHttpToolsProtocol", (_GuardedHttpToolsProtocol,), {"limits": limits})
