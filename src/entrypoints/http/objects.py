"""The object routes (``/object/{id}``) as a raw ASGI app that Litestar mounts.

They carry every byte of every object, so they skip the framework's per-request machinery
(signature parsing, dependency resolution, response classes, a task group per streamed response):
measured here, that roughly doubled small-object throughput. They keep exact control of the wire as
well: the path exactly as sent (``/object//abc`` is not ``abc``), the stored Content-Type verbatim
(no charset added), and when a streamed body is cut short. Everything else (health, metrics, the
schema, unknown routes) stays ordinary Litestar routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
from litestar.types import Receive, Scope, Send

from application.objects import DeleteObject, GetObject, HeadObject, PutObject
from domain.conditions import Verdict
from domain.errors import (
    BodyTooLarge,
    GatewayError,
    InvalidObjectId,
    PreconditionFailed,
    RangeNotSatisfiable,
)
from domain.objects import ObjectInfo, StoredObject, quoted_etag
from entrypoints.http.asgi import (
    MinDataRate,
    Response,
    disconnected,
    request_body,
    reset_of,
    send_error,
)
from entrypoints.http.errors import MethodNotAllowed, RouteNotFound, status_for
from entrypoints.http.headers import (
    RawHeaders,
    content_length,
    content_type,
    object_headers,
    parse_range,
    preconditions_of,
    validators,
)
from entrypoints.observability.request_facts import RequestFacts

__all__ = ["ALLOWED_METHODS", "OBJECT_ROUTE", "ObjectApi", "ObjectUseCases", "path_of"]

logger = logging.getLogger(__name__)

OBJECT_ROUTE = "/object/{object_id}"
_PREFIX = b"/object/"
ALLOWED_METHODS = ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")
_ALLOW = ", ".join(ALLOWED_METHODS).encode()
_JSON = b"application/json"
_ENCODE = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class ObjectUseCases:
    put: PutObject
    get: GetObject
    head: HeadObject
    delete: DeleteObject


@dataclass(slots=True)
class _Exchange:
    """One request to an object route, and its answer under way."""

    object_id: str
    headers: RawHeaders
    receive: Receive
    response: Response
    facts: RequestFacts
    # Resets the connection at once (the edge's extension); None under other servers.
    reset: Callable[[], None] | None = None


class ObjectApi:
    """``PUT``, ``GET``, ``HEAD``, ``DELETE`` and ``OPTIONS`` of ``/object/{id}``."""

    def __init__(
        self,
        use_cases: ObjectUseCases,
        *,
        max_body_bytes: int | None,
        body_read_timeout_seconds: float,
        body_send_timeout_seconds: float,
        replicated: bool = False,
        min_data_rate: MinDataRate | None = None,
    ) -> None:
        self._use_cases = use_cases
        # Each answer's log line then says how many replicas it had.
        self._replicated = replicated
        self._max_body_bytes = max_body_bytes
        self._body_read_timeout = body_read_timeout_seconds
        self._body_send_timeout = body_send_timeout_seconds
        # Uploads must arrive, and downloads be read, at least this fast (after its grace).
        self._min_data_rate = min_data_rate
        self._handlers: dict[str, Callable[[_Exchange], Awaitable[None]]] = {
            "PUT": self._put,
            "GET": self._get,
            "HEAD": self._head,
            "DELETE": self._delete,
            "OPTIONS": self._options,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        facts = RequestFacts.of(scope["state"]) or RequestFacts("")
        facts.route = OBJECT_ROUTE
        response = Response(send)
        try:
            object_id = _object_id_of(scope)
            facts.object_id = object_id
            method = str(scope.get("method", ""))
            handler = self._handlers.get(method)
            if handler is None:
                raise MethodNotAllowed(method, ALLOWED_METHODS)
            await handler(
                _Exchange(
                    object_id, dict(scope["headers"]), receive, response, facts, reset_of(scope)
                )
            )
        except GatewayError as exc:
            if exc.node_name is not None:
                facts.node = exc.node_name
                facts.node_failed = status_for(exc) >= 500
            if response.started:
                raise  # too late for an error answer: the connection is cut instead
            await send_error(response, exc)

    async def _put(self, exchange: _Exchange) -> None:
        headers = exchange.headers
        length = content_length(headers)
        if (
            self._max_body_bytes is not None
            and length is not None
            and length > self._max_body_bytes
        ):
            raise BodyTooLarge(f"the body exceeds the maximum of {self._max_body_bytes} bytes")
        outcome = await self._use_cases.put(
            exchange.object_id,
            request_body(
                exchange.receive,
                self._body_read_timeout,
                self._max_body_bytes,
                self._min_data_rate,
            ),
            length,
            content_type(headers),
            preconditions_of(headers),
        )
        exchange.facts.node = outcome.node.name
        if self._replicated:
            exchange.facts.replicas = outcome.copies
        info = outcome.info
        etag = info.etag or None
        body = _ENCODE.encode({"id": exchange.object_id, "size": info.size, "etag": etag})
        head = [(b"content-type", _JSON), (b"content-length", b"%d" % len(body))]
        if etag is not None:
            head.append((b"etag", quoted_etag(etag).encode("latin-1")))
        await exchange.response.start(201 if outcome.created else 200, head)
        await exchange.response.finish(body)

    async def _get(self, exchange: _Exchange) -> None:
        headers, facts, response = exchange.headers, exchange.facts, exchange.response
        # With If-Range the client wants the whole object unless its copy is current; sending the
        # whole object is always correct, so that case is not optimised.
        byte_range = None if b"if-range" in headers else parse_range(headers.get(b"range"))
        try:
            retrieved = await self._use_cases.get(exchange.object_id, byte_range)
        except RangeNotSatisfiable:
            # RFC 9110 section 13.2.2: preconditions come before the range. This costs a HEAD,
            # only for a range beyond the object with conditions attached.
            if preconditions_of(headers).empty:
                raise
            found = await self._use_cases.head(exchange.object_id)
            facts.node, facts.from_fallback = found.node.name, found.from_fallback
            if self._replicated:
                facts.replicas = found.answered
            if not await _answered_by_precondition(exchange, found.info):
                raise
            return
        facts.node, facts.from_fallback = retrieved.node.name, retrieved.from_fallback
        if self._replicated:
            facts.replicas = retrieved.answered
        stored = retrieved.stored
        try:
            if await _answered_by_precondition(exchange, stored.info):
                return
            if stored.content_range is None:
                await response.start(200, object_headers(stored.info))
            else:
                start, end = stored.content_range
                await response.start(
                    206,
                    [
                        *object_headers(stored.info, length=end - start + 1),
                        (b"content-range", b"bytes %d-%d/%d" % (start, end, stored.info.size)),
                    ],
                )
            if stored.whole_body is not None:
                await response.finish(stored.whole_body)
            else:
                await self._stream(exchange, stored)
        finally:
            await stored.close()

    async def _stream(self, exchange: _Exchange, stored: StoredObject) -> None:
        # The server drops what is sent after the client left; watch for it so that the node's
        # connection is let go at once rather than the whole object read for nobody.
        gone = asyncio.ensure_future(disconnected(exchange.receive))
        clock = asyncio.get_running_loop().time
        rate = self._min_data_rate
        # Kestrel's MinResponseDataRate: each chunk handed over extends the time by which the
        # client must have taken it at the minimum rate (a chunk alone may take the grace), so a
        # client that reads on, but too slowly, is cut off too, not only one that stops.
        rate_deadline = 0.0
        try:
            async for chunk in stored.chunks:
                if gone.done():
                    exchange.facts.client_closed = True
                    return
                now = clock()
                deadline = now + self._body_send_timeout
                if rate is not None:
                    needed = len(chunk) / rate.bytes_per_second
                    rate_deadline = max(
                        now + max(rate.grace_seconds, needed), rate_deadline + needed
                    )
                    deadline = min(deadline, rate_deadline)
                try:
                    async with asyncio.timeout_at(deadline):
                        await exchange.response.send_more(chunk)
                except TimeoutError:
                    exchange.facts.client_closed = True
                    if exchange.reset is not None:
                        exchange.reset()
                    if rate is not None and deadline == rate_deadline:
                        logger.info(
                            "client read slower than %d bytes/s; cut off", rate.bytes_per_second
                        )
                    else:
                        logger.info(
                            "client stopped reading for %gs; cut off", self._body_send_timeout
                        )
                    return
            await exchange.response.finish(b"")
        finally:
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gone

    async def _head(self, exchange: _Exchange) -> None:
        found = await self._use_cases.head(exchange.object_id)
        exchange.facts.node, exchange.facts.from_fallback = found.node.name, found.from_fallback
        if self._replicated:
            exchange.facts.replicas = found.answered
        if not await _answered_by_precondition(exchange, found.info):
            await exchange.response.start(200, object_headers(found.info))
            await exchange.response.finish(b"")

    async def _delete(self, exchange: _Exchange) -> None:
        deleted = await self._use_cases.delete(exchange.object_id)
        exchange.facts.node = deleted.node.name
        if self._replicated:
            exchange.facts.replicas = deleted.copies
        await exchange.response.start(204, [])
        await exchange.response.finish(b"")

    async def _options(self, exchange: _Exchange) -> None:
        await exchange.response.start(204, [(b"allow", _ALLOW)])
        await exchange.response.finish(b"")


def path_of(scope: Scope) -> bytes:
    """The path exactly as sent, without the query. (A server's ``raw_path`` has none; the test
    client's, taken from httpx, carries it.)"""
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    return raw_path.partition(b"?")[0]


def _object_id_of(scope: Scope) -> str:
    """The ID exactly as the client sent it: ``/object/{id}``, one segment, nothing around it."""
    raw_path = path_of(scope)
    if not raw_path.startswith(_PREFIX) and raw_path != _PREFIX.rstrip(b"/"):
        raise RouteNotFound(f"no route {raw_path.decode('latin-1')[:64]!r}")
    raw_id = raw_path[len(_PREFIX) :]
    # Validated by ObjectId in the use case; bytes outside ASCII are shown escaped.
    object_id = raw_id.decode("ascii", errors="backslashreplace")
    if not raw_id:
        raise InvalidObjectId("the object ID is empty")
    return object_id


async def _answered_by_precondition(exchange: _Exchange, info: ObjectInfo) -> bool:
    """Answer 304 (or raise for 412) when the request's conditions say so; False otherwise."""
    verdict = preconditions_of(exchange.headers).evaluate(info, reading=True)
    if verdict is Verdict.PROCEED:
        return False
    if verdict is Verdict.FAILED:
        raise PreconditionFailed(
            "the object does not meet the request's If-Match/-Unmodified-Since"
        )
    await exchange.response.start(304, validators(info))
    await exchange.response.finish(b"")
    return True
