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
import functools
import logging
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

import msgspec
from litestar.types import Receive, Scope, Send

from application.use_cases import DeleteObject, GetObject, HeadObject, PutObject
from domain.conditions import Verdict
from domain.errors import (
    BodyTooLarge,
    GatewayError,
    IncompleteBody,
    InvalidObjectId,
    InvalidRequest,
    PreconditionFailed,
    RangeNotSatisfiable,
)
from domain.objects import ObjectInfo, StoredObject
from entrypoints.http_errors import RouteNotFound, headers_for, status_for
from entrypoints.http_semantics import parse_range, preconditions_of
from entrypoints.observability import RequestFacts

__all__ = [
    "ALLOWED_METHODS",
    "MAX_CONTENT_TYPE_LENGTH",
    "OBJECT_ROUTE",
    "ObjectApi",
    "ObjectUseCases",
]

logger = logging.getLogger(__name__)

OBJECT_ROUTE = "/object/{object_id}"
_PREFIX = b"/object/"
ALLOWED_METHODS = ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")
_ALLOW = ", ".join(ALLOWED_METHODS).encode()
MAX_CONTENT_TYPE_LENGTH = 256
# RFC 9110 section 8.3.1: type "/" subtype *( OWS ";" OWS parameter ), parameter values a token or
# a quoted string; visible ASCII only, which is what S3 nodes store and give back.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # noqa: S105 - a grammar rule, not a secret
_QUOTED = r'"(?:[\t !#-\[\]-~]|\\[\t -~])*"'
_MEDIA_TYPE = re.compile(
    rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*(?:{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))?)*", re.ASCII
)
# Runs of optional whitespace (RFC 9110 OWS: spaces and tabs).
_WHITESPACE_RUN = re.compile(r"[ \t]+")
_JSON = b"application/json"
_ENCODE = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class ObjectUseCases:
    put: PutObject
    get: GetObject
    head: HeadObject
    delete: DeleteObject


class ObjectApi:
    """``PUT``, ``GET``, ``HEAD``, ``DELETE`` and ``OPTIONS`` of ``/object/{id}``."""

    def __init__(
        self,
        use_cases: ObjectUseCases,
        *,
        max_body_bytes: int | None,
        body_read_timeout_seconds: float,
        body_send_timeout_seconds: float,
    ) -> None:
        self._use_cases = use_cases
        self._max_body_bytes = max_body_bytes
        self._body_read_timeout = body_read_timeout_seconds
        self._body_send_timeout = body_send_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        facts = RequestFacts.of(scope["state"]) or RequestFacts("")
        facts.route = OBJECT_ROUTE
        response = _Response(send)
        try:
            object_id = _object_id_of(scope)
            facts.object_id = object_id
            method = str(scope.get("method", ""))
            if method == "PUT":
                await self._put(scope, receive, response, object_id, facts)
            elif method == "GET":
                await self._get(scope, receive, response, object_id, facts)
            elif method == "HEAD":
                found = await self._use_cases.head(object_id)
                facts.node, facts.from_fallback = found.node.name, found.from_fallback
                if not await _answered_by_precondition(_headers_of(scope), found.info, response):
                    await response.start(200, _object_headers(found.info))
                    await response.finish(b"")
            elif method == "DELETE":
                asked = await self._use_cases.delete(object_id)
                facts.node = asked[0].name
                await response.start(204, [])
                await response.finish(b"")
            elif method == "OPTIONS":
                await response.start(204, [(b"allow", _ALLOW)])
                await response.finish(b"")
            else:
                await _send_error(
                    response,
                    405,
                    "method_not_allowed",
                    f"{method} is not allowed here; use one of {', '.join(ALLOWED_METHODS)}",
                    [(b"allow", _ALLOW)],
                )
        except GatewayError as exc:
            if exc.node_name is not None:
                facts.node = exc.node_name
                facts.node_failed = status_for(exc) >= 500
            if response.started:
                raise  # too late for an error answer: the connection is cut instead
            extra = [
                (name.lower().encode(), value.encode()) for name, value in headers_for(exc).items()
            ]
            await _send_error(response, status_for(exc), exc.code, exc.detail, extra)

    async def _put(
        self,
        scope: Scope,
        receive: Receive,
        response: _Response,
        object_id: str,
        facts: RequestFacts,
    ) -> None:
        headers = _headers_of(scope)
        length = _content_length(headers)
        if (
            self._max_body_bytes is not None
            and length is not None
            and length > self._max_body_bytes
        ):
            raise BodyTooLarge(f"the body exceeds the maximum of {self._max_body_bytes} bytes")
        outcome = await self._use_cases.put(
            object_id,
            _request_body(receive, self._body_read_timeout, self._max_body_bytes),
            length,
            _content_type(headers),
            preconditions_of(headers),
        )
        facts.node = outcome.node.name
        etag = f'"{outcome.info.etag}"'.encode()
        body = _ENCODE.encode(
            {"id": object_id, "size": outcome.info.size, "etag": outcome.info.etag}
        )
        await response.start(
            201 if outcome.created else 200,
            [(b"content-type", _JSON), (b"content-length", b"%d" % len(body)), (b"etag", etag)],
        )
        await response.finish(body)

    async def _get(
        self,
        scope: Scope,
        receive: Receive,
        response: _Response,
        object_id: str,
        facts: RequestFacts,
    ) -> None:
        headers = _headers_of(scope)
        # With If-Range the client wants the whole object unless its copy is current; sending the
        # whole object is always correct, so that case is not optimised.
        byte_range = None if b"if-range" in headers else parse_range(headers.get(b"range"))
        try:
            retrieved = await self._use_cases.get(object_id, byte_range)
        except RangeNotSatisfiable:
            # RFC 9110 section 13.2.2: preconditions come before the range. This costs a HEAD,
            # only for a range beyond the object with conditions attached.
            if preconditions_of(headers).empty:
                raise
            found = await self._use_cases.head(object_id)
            facts.node, facts.from_fallback = found.node.name, found.from_fallback
            if not await _answered_by_precondition(headers, found.info, response):
                raise
            return
        facts.node, facts.from_fallback = retrieved.node.name, retrieved.from_fallback
        stored = retrieved.stored
        try:
            if await _answered_by_precondition(headers, stored.info, response):
                return
            if stored.content_range is None:
                await response.start(200, _object_headers(stored.info))
            else:
                start, end = stored.content_range
                await response.start(
                    206,
                    [
                        *_object_headers(stored.info, length=end - start + 1),
                        (b"content-range", b"bytes %d-%d/%d" % (start, end, stored.info.size)),
                    ],
                )
            if stored.whole_body is not None:
                await response.finish(stored.whole_body)
            else:
                await self._stream(receive, response, stored, facts)
        finally:
            await stored.close()

    async def _stream(
        self, receive: Receive, response: _Response, stored: StoredObject, facts: RequestFacts
    ) -> None:
        # The server drops what is sent after the client left; watch for it so that the node's
        # connection is let go at once rather than the whole object read for nobody.
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            async for chunk in stored.chunks:
                if gone.done():
                    facts.client_closed = True
                    return
                try:
                    async with asyncio.timeout(self._body_send_timeout):
                        await response.send_more(chunk)
                except TimeoutError:
                    facts.client_closed = True
                    logger.info("client stopped reading for %gs; cut off", self._body_send_timeout)
                    return
            await response.finish(b"")
        finally:
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gone


class _Response:
    """Tracks whether the answer has started, so an error after that cuts the connection."""

    __slots__ = ("_send", "started")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def start(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        self.started = True
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def send_more(self, body: bytes) -> None:
        await self._send({"type": "http.response.body", "body": body, "more_body": True})

    async def finish(self, body: bytes) -> None:
        await self._send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_error(
    response: _Response,
    status: int,
    code: str,
    detail: str,
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    body = _ENCODE.encode({"error": code, "detail": detail})
    await response.start(
        status,
        [(b"content-type", _JSON), (b"content-length", b"%d" % len(body)), *extra_headers],
    )
    await response.finish(body)


def _object_id_of(scope: Scope) -> str:
    """The ID exactly as the client sent it: ``/object/{id}``, one segment, nothing around it."""
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    if not raw_path.startswith(_PREFIX) and raw_path != _PREFIX.rstrip(b"/"):
        raise RouteNotFound(f"no route {raw_path.decode('latin-1')[:64]!r}")
    raw_id = raw_path[len(_PREFIX) :]
    # Validated by ObjectId in the use case; bytes outside ASCII are shown escaped.
    object_id = raw_id.decode("ascii", errors="backslashreplace")
    if not raw_id:
        raise InvalidObjectId("the object ID is empty")
    return object_id


def _headers_of(scope: Scope) -> dict[bytes, bytes]:
    return dict(scope["headers"])


def _content_length(headers: dict[bytes, bytes]) -> int | None:
    raw = headers.get(b"content-length")
    if raw is None or b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        return None
    if not raw.isdigit():
        raise InvalidRequest(f"Content-Length {raw.decode('latin-1')!r} is not a number")
    return int(raw)


def _content_type(headers: dict[bytes, bytes]) -> str | None:
    raw = headers.get(b"content-type")
    if raw is None or not raw.strip():
        return None
    text = raw.decode("latin-1").strip()
    if len(text) > MAX_CONTENT_TYPE_LENGTH:
        raise InvalidRequest(
            f"the Content-Type is {len(text)} characters long; at most "
            f"{MAX_CONTENT_TYPE_LENGTH} are accepted"
        )
    if not _MEDIA_TYPE.fullmatch(text):
        raise InvalidRequest(
            f"the Content-Type {text[:64]!r} is not a media type (type/subtype; parameters)"
        )
    # S3 nodes fold every run of whitespace in a signed header to one space when they check a
    # signature, minio-py's signer only runs of spaces: a tab would make the two differ and the
    # node refuse the write. Folded here, the value stored is the one signed.
    return _WHITESPACE_RUN.sub(" ", text)


@functools.lru_cache(maxsize=4096)
def _http_date(moment: datetime) -> bytes:
    return format_datetime(moment, usegmt=True).encode()


async def _answered_by_precondition(
    headers: dict[bytes, bytes], info: ObjectInfo, response: _Response
) -> bool:
    """Answer 304 (or raise for 412) when the request's conditions say so; False otherwise."""
    verdict = preconditions_of(headers).evaluate(info, reading=True)
    if verdict is Verdict.PROCEED:
        return False
    if verdict is Verdict.FAILED:
        raise PreconditionFailed(
            "the object does not meet the request's If-Match/-Unmodified-Since"
        )
    await response.start(304, _validators(info))
    await response.finish(b"")
    return True


def _validators(info: ObjectInfo) -> list[tuple[bytes, bytes]]:
    headers = [(b"etag", f'"{info.etag}"'.encode("latin-1"))]
    if info.last_modified is not None:
        headers.append((b"last-modified", _http_date(info.last_modified)))
    return headers


def _object_headers(info: ObjectInfo, length: int | None = None) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", info.content_type.encode("latin-1")),
        (b"content-length", b"%d" % (info.size if length is None else length)),
        (b"etag", f'"{info.etag}"'.encode("latin-1")),
        (b"accept-ranges", b"bytes"),
    ]
    if info.last_modified is not None:
        headers.append((b"last-modified", _http_date(info.last_modified)))
    return headers


async def _request_body(
    receive: Receive, timeout_seconds: float, max_bytes: int | None
) -> AsyncIterator[bytes]:
    """The request body as the server hands it over, with the client's failures as domain errors."""
    received = 0
    while True:
        try:
            async with asyncio.timeout(timeout_seconds):
                message = await receive()
        except TimeoutError:
            raise IncompleteBody(
                f"the client sent no data for {timeout_seconds:g} seconds"
            ) from None
        if message["type"] == "http.disconnect":
            raise IncompleteBody("the client disconnected before sending the whole body")
        chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
        if chunk:
            received += len(chunk)
            if max_bytes is not None and received > max_bytes:
                raise BodyTooLarge(f"the body exceeds the maximum of {max_bytes} bytes")
            yield chunk
        if not message.get("more_body", False):
            return


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
