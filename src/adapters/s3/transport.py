"""One signed S3 request to one node: the pooled aiohttp session, SigV4, timeouts, and the one place
where aiohttp's (and the socket's) failures become the gateway's errors (``map_errors``).

minio-py is the authority on S3 here (its SigV4 functions sign every request, see ``signing``), but
its client is synchronous; running it in threads made every request cross into a worker thread
and back, and let one frozen node hold every thread. So each node request is a coroutine on one
shared ``aiohttp.ClientSession``, with pooled keep-alive connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import SplitResult

import aiohttp
from minio.helpers import queryencode
from opentelemetry.propagate import inject
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from yarl import URL

from adapters.s3.signing import signed_headers
from domain.errors import GatewayError, NodeUnavailable, NodeUnreachable
from domain.node import Node
from domain.sizes import GiB

__all__ = [
    "EMPTY_SHA256",
    "MAX_SINGLE_PUT_BYTES",
    "UNSIGNED_PAYLOAD",
    "MinioSettings",
    "RequestBody",
    "S3Transport",
    "map_errors",
    "node_tls",
]

# S3 refuses a single PUT above 5 GiB; beyond it only multipart uploads work.
MAX_SINGLE_PUT_BYTES = 5 * GiB
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"

RequestBody = bytes | bytearray | AsyncIterator[bytes] | None


@dataclass(frozen=True, slots=True)
class MinioSettings:
    bucket: str
    connect_timeout_seconds: float
    # From the request (or the end of its body) to the node's response headers.
    first_byte_timeout_seconds: float
    # The longest a streaming body may go without the node sending or accepting a byte.
    idle_timeout_seconds: float
    # Multipart parts are at least 5 MiB; each is held while it is filled and sent.
    part_size_bytes: int
    # Objects up to this size are read whole and sent in one piece; larger ones stream in chunks
    # of about this size.
    download_chunk_bytes: int
    max_single_put_bytes: int = MAX_SINGLE_PUT_BYTES
    # "http", or "https": TLS to every node, its certificate chain checked against ca_file (a
    # PEM bundle; empty: the system's trust store).
    scheme: str = "http"
    ca_file: str = ""


def node_tls(settings: MinioSettings) -> ssl.SSLContext | None:
    """The TLS context for the nodes, or None for plain HTTP.

    The chain must lead to the fleet's CA; the host name is not compared, since nodes are reached
    at the addresses Docker reports, which change as containers come and go: give the fleet a CA
    of its own (one that signs nothing but its nodes), as the README says.
    """
    if settings.scheme != "https":
        return None
    context = ssl.create_default_context(cafile=settings.ca_file or None)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    return context


@contextlib.contextmanager
def map_errors(node: Node, doing: str) -> Iterator[None]:
    """aiohttp's failures, the socket's and timeouts while ``doing`` something with ``node``, as
    the node's unreachability (which its breaker counts). The only place they become ours."""
    try:
        yield
    except TimeoutError:
        raise NodeUnreachable(node.name, f"it stopped answering while {doing}") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise NodeUnreachable(node.name, f"the connection failed while {doing} ({exc!r})") from exc


class S3Transport:
    """Signs and sends requests to the nodes over one pooled aiohttp session."""

    def __init__(self, settings: MinioSettings, tracer: Tracer | None = None) -> None:
        self.settings = settings
        # With tracing on, each node request is a span, a child of the request being served.
        self._tracer = tracer
        self._session: aiohttp.ClientSession | None = None
        self._scheme = settings.scheme
        # Read once (the CA file) at start-up; None: plain HTTP.
        self._tls = node_tls(settings)
        # Built once: aiohttp's read timeout covers the wait for the first byte and each read.
        self._first_byte_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.connect_timeout_seconds,
            sock_connect=settings.connect_timeout_seconds,
            sock_read=settings.first_byte_timeout_seconds,
        )
        # For requests that a deadline of their own bounds (streamed uploads, long completions).
        self._no_read_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.connect_timeout_seconds,
            sock_connect=settings.connect_timeout_seconds,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        node: Node,
        method: str,
        key: str | None,
        *,
        timeout: float | None = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: RequestBody = None,
        payload_hash: str = EMPTY_SHA256,
    ) -> aiohttp.ClientResponse:
        """``send`` within the time to first byte, or within ``timeout`` overall."""
        # Without ``timeout``, aiohttp's own read timeout bounds the wait for the first byte (and
        # each read after it): no timer of our own on the hot path.
        timer = contextlib.nullcontext() if timeout is None else asyncio.timeout(timeout)
        try:
            async with timer:
                return await self.send(
                    node,
                    method,
                    key,
                    query=query,
                    headers=headers,
                    data=data,
                    payload_hash=payload_hash,
                    bounded_by_caller=timeout is not None,
                )
        except TimeoutError:
            raise NodeUnreachable(node.name, "it did not answer in time") from None

    async def send(
        self,
        node: Node,
        method: str,
        key: str | None,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: RequestBody = None,
        payload_hash: str = EMPTY_SHA256,
        body_failure: Callable[[], BaseException | None] | None = None,
        bounded_by_caller: bool = False,
    ) -> aiohttp.ClientResponse:
        """Sign and send one request; the response's headers have arrived when it returns.

        A failure of the request body (``body_failure`` returns it) is re-raised as it was, so the
        client's own errors (a short body, a stall) stay the client's. ``bounded_by_caller``: the
        caller's own deadline bounds the request, so aiohttp's read timeout is left out.
        """
        if self._tracer is None:
            return await self._send(
                node, method, key, query, headers, data, payload_hash, body_failure,
                bounded_by_caller, traced=False,
            )  # fmt: skip
        # The span lasts until the node's response headers: its time to first byte. The body
        # that follows is timed by the request's own span.
        operation = f"{method} {'bucket' if key is None else 'object'}"
        if query:
            operation += "?" + "&".join(sorted(query))
        with self._tracer.start_as_current_span(
            f"node {method}",
            kind=SpanKind.CLIENT,
            attributes={
                "gateway.node": node.name,
                "gateway.node.operation": operation,
                "http.request.method": method,
                "server.address": node.host or "",
                "server.port": node.port,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            sent = len(data) if isinstance(data, bytes | bytearray) else None
            length = (headers or {}).get("Content-Length")
            if sent is None and length is not None and length.isdigit():
                sent = int(length)
            if sent is not None:
                span.set_attribute("http.request.body.size", sent)
            try:
                response = await self._send(
                    node, method, key, query, headers, data, payload_hash, body_failure,
                    bounded_by_caller, traced=True,
                )  # fmt: skip
            except GatewayError as exc:
                span.set_status(Status(StatusCode.ERROR, exc.code))
                span.set_attribute("error.type", exc.code)
                raise
            span.set_attribute("http.response.status_code", response.status)
            if response.content_length is not None:
                span.set_attribute("http.response.body.size", response.content_length)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response

    async def _send(  # noqa: PLR0917 - send()'s arguments, passed on
        self,
        node: Node,
        method: str,
        key: str | None,
        query: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        data: RequestBody,
        payload_hash: str,
        body_failure: Callable[[], BaseException | None] | None,
        bounded_by_caller: bool,
        *,
        traced: bool,
    ) -> aiohttp.ClientResponse:
        endpoint = node.endpoint
        if endpoint is None:
            raise NodeUnavailable(node.name, "the node has no address")
        bucket = self.settings.bucket
        path = f"/{bucket}" if key is None else f"/{bucket}/{key}"
        query_string = (
            "&".join(f"{name}={queryencode(value)}" for name, value in sorted(query.items()))
            if query
            else ""
        )
        credentials = node.credentials
        signed = signed_headers(
            method=method,
            url=SplitResult(self._scheme, endpoint, path, query_string, ""),
            headers=headers or {},
            access_key=credentials.access_key,
            secret_key=credentials.secret_key,
            payload_hash=payload_hash,
        )
        if traced:
            # Unsigned, added after signing: a node (or a proxy before it) may drop it freely.
            inject(signed)
        try:
            with map_errors(node, "sending a request"):
                return await self._http().request(
                    method,
                    URL.build(
                        scheme=self._scheme,
                        authority=endpoint,
                        path=path,
                        query_string=query_string,
                        encoded=True,
                    ),
                    headers=signed,
                    data=data,
                    timeout=self._no_read_timeout
                    if bounded_by_caller
                    else self._first_byte_timeout,
                )
        except NodeUnreachable:
            failure = body_failure() if body_failure is not None else None
            if isinstance(failure, GatewayError):
                raise failure from None
            raise

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                # No pool limit: a request that waited for a pooled connection would time out as if
                # the node were unreachable. What a node may be asked at once is capped by
                # InFlightLimits, and connections by the gateway's own connection cap.
                connector=aiohttp.TCPConnector(
                    limit=0, limit_per_host=0, ssl=self._tls if self._tls is not None else True
                ),
                # Bytes pass through as stored: no decompression, no cookies, no extra headers.
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                timeout=self._first_byte_timeout,
            )
        return self._session
