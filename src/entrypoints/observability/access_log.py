"""Around the whole app: a request ID in and out, metrics, one access log line per request, and
(with tracing on) the request's server span."""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from contextvars import Token

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from entrypoints.observability.metrics import GatewayMetrics
from entrypoints.observability.request_facts import RequestFacts

__all__ = ["CLIENT_CLOSED_REQUEST", "REQUEST_ID_HEADER", "ObservedRequests"]

access_logger = logging.getLogger("gateway.access")
REQUEST_ID_HEADER = "x-request-id"
CLIENT_CLOSED_REQUEST = 499
_MAX_REQUEST_ID_LENGTH = 128
_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})


class ObservedRequests:
    """ASGI wrapper: request ID in and out, metrics, and one access log line per request; with a
    tracer, a server span per request that continues the client's W3C ``traceparent``."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics, tracer: Tracer | None = None) -> None:
        self._app = app
        self._metrics = metrics
        self._tracer = tracer
        # Unique without a uuid4 per request: a random prefix per process, then a counter.
        prefix = uuid.uuid4().hex[:16]
        self._request_ids = (f"{prefix}{number:016x}" for number in itertools.count(1))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        # Read before the app runs: the object routes' mount rewrites the scope's path in place.
        method, path = scope.get("method"), scope.get("path")
        request_id = _request_id_of(scope) or next(self._request_ids)
        facts = RequestFacts(request_id)
        scope["state"][RequestFacts.KEY] = facts
        status = 500
        received = sent = 0
        traced = None if self._tracer is None else _start_span(self._tracer, scope, facts)

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message  # type: ignore[return-value]

        async def tagging_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message["headers"] = headers
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self._app(scope, counting_receive, tagging_send)  # type: ignore[arg-type]
        finally:
            duration = time.perf_counter() - started
            # nginx's convention: 499 when the client closed before the answer was complete.
            if facts.client_closed:
                status = CLIENT_CLOSED_REQUEST
            if traced is not None:
                _end_span(*traced, scope, facts, status, received, sent)
            self._metrics.observe(
                scope,
                facts=facts,
                status=status,
                duration=duration,
                sent=sent,
                received=received,
            )
            access_logger.info(
                "%s %s %s",
                method,
                path,
                status,
                extra={
                    "request_id": request_id,
                    "method": method,
                    "path": path,
                    "object_id": facts.object_id,
                    "node": facts.node,
                    "status": status,
                    "bytes_in": received,
                    "bytes_out": sent,
                    "duration_ms": round(duration * 1000, 3),
                    # Only when true: most lines would carry a false.
                    "fallback": True if facts.from_fallback else None,
                    # With GATEWAY_REPLICAS above 1: the copies a write reached, or the replicas
                    # a read compared.
                    "replicas": facts.replicas,
                    "trace_id": facts.trace_id,
                    # With auth on: the token's or signing key's public ID.
                    "auth": facts.principal,
                },
            )


def _start_span(
    tracer: Tracer, scope: Scope, facts: RequestFacts
) -> tuple[Span, Token[otel_context.Context]]:
    """The request's server span, a child of the client's trace when it sent one, made current
    so that node requests become its children."""
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope.get("headers", [])
        if name.lower() in _TRACE_HEADERS
    }
    parent = _PROPAGATOR.extract(carrier) if carrier else None
    method = str(scope.get("method", ""))
    span = tracer.start_span(
        method,
        context=parent,
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": method,
            "url.path": str(scope.get("path", "")),
            "gateway.request_id": facts.request_id,
        },
    )
    facts.trace_id = format(span.get_span_context().trace_id, "032x")
    return span, otel_context.attach(trace.set_span_in_context(span, parent))


def _end_span(  # noqa: PLR0917 - what the request came to
    span: Span,
    token: Token[otel_context.Context],
    scope: Scope,
    facts: RequestFacts,
    status: int,
    received: int,
    sent: int,
) -> None:
    route = facts.route or str(scope.get("path_template") or "unmatched")
    span.update_name(f"{scope.get('method', '')} {route}")
    span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    span.set_attribute("gateway.bytes_in", received)
    span.set_attribute("gateway.bytes_out", sent)
    for name, value in (
        ("gateway.object_id", facts.object_id),
        ("gateway.node", facts.node),
        ("gateway.replicas", facts.replicas),
    ):
        if value is not None:
            span.set_attribute(name, value)
    if facts.from_fallback:
        span.set_attribute("gateway.fallback", True)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    span.end()
    otel_context.detach(token)


def _request_id_of(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name.lower() == REQUEST_ID_HEADER.encode():
            text = value.decode("latin-1").strip()
            # Echoed into a header and a log line: keep it short and printable.
            if text and len(text) <= _MAX_REQUEST_ID_LENGTH and text.isprintable():
                return text
    return None
