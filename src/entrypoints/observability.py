"""Request IDs, one JSON log line per request, and Prometheus metrics, around the whole app."""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Iterator, MutableMapping
from typing import Any, TextIO

import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from application.fleet import Fleet
from domain.circuit_breaker import NodeBreakers

__all__ = [
    "BatchedLineHandler",
    "GatewayMetrics",
    "JsonLogFormatter",
    "ObservedRequests",
    "RequestFacts",
]

access_logger = logging.getLogger("gateway.access")
REQUEST_ID_HEADER = "x-request-id"
CLIENT_CLOSED_REQUEST = 499
_MAX_REQUEST_ID_LENGTH = 128
# Fields a log record may carry in ``extra`` that belong in the JSON line.
_LOG_FIELDS = (
    "request_id",
    "method",
    "path",
    "object_id",
    "node",
    "status",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "fallback",
)


class RequestFacts:
    """What a handler learned about a request (object ID, node), for its log line and metrics.

    Kept in the ASGI scope's state so the handlers and the wrapper share it without globals.
    """

    KEY = "gateway_request_facts"

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.object_id: str | None = None
        self.node: str | None = None
        self.node_failed = False
        # Set by routes that Litestar does not template (the object routes are a mount).
        self.route: str | None = None
        # The client went away (or stopped reading) before the whole answer was sent.
        self.client_closed = False
        # The object was found on a node other than its owner (not rebalanced yet).
        self.from_fallback = False

    @classmethod
    def of(cls, state: MutableMapping[str, Any]) -> RequestFacts | None:
        facts = state.get(cls.KEY)
        return facts if isinstance(facts, RequestFacts) else None


class GatewayMetrics:
    """The gateway's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self, fleet: Fleet, breakers: NodeBreakers) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gateway_http_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_http_request_duration_seconds",
            "Time from request to the last byte of the response, by route and method.",
            ["route", "method"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.bytes_in = Counter(
            "gateway_http_request_bytes", "Request body bytes received.", registry=self.registry
        )
        self.bytes_out = Counter(
            "gateway_http_response_bytes", "Response body bytes sent.", registry=self.registry
        )
        self.node_requests = Counter(
            "gateway_node_requests",
            "Requests served through each storage node.",
            ["node"],
            registry=self.registry,
        )
        self.fallback_hits = Counter(
            "gateway_fallback_reads",
            "Reads served by a node other than the ID's owner: objects not rebalanced yet.",
            ["node"],
            registry=self.registry,
        )
        self.node_errors = Counter(
            "gateway_node_errors",
            "Requests that failed because of their storage node (down, unreachable, resting).",
            ["node"],
            registry=self.registry,
        )
        self.registry.register(_FleetCollector(fleet, breakers))
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._node_children: dict[str, tuple[Counter, Counter, Counter]] = {}

    def observe(
        self,
        scope: Scope,
        *,
        facts: RequestFacts,
        status: int,
        duration: float,
        sent: int,
        received: int,
    ) -> None:
        route = facts.route or str(scope.get("path_template") or "unmatched")
        method = str(scope.get("method", ""))
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            # labels() takes a lock and builds its key on every call; a request need not.
            children = self._children[key] = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route, method),
            )
        children[0].inc()
        children[1].observe(duration)
        self.bytes_in.inc(received)
        self.bytes_out.inc(sent)
        node = facts.node
        if node is not None:
            per_node = self._node_children.get(node)
            if per_node is None:
                per_node = self._node_children[node] = (
                    self.node_requests.labels(node),
                    self.node_errors.labels(node),
                    self.fallback_hits.labels(node),
                )
            per_node[0].inc()
            if facts.node_failed:
                per_node[1].inc()
            if facts.from_fallback:
                per_node[2].inc()


class _FleetCollector(Collector):
    """Known nodes and discovery counters, read from the fleet at scrape time."""

    def __init__(self, fleet: Fleet, breakers: NodeBreakers) -> None:
        self._fleet = fleet
        self._breakers = breakers

    def collect(self) -> Iterator[Metric]:
        nodes = GaugeMetricFamily(
            "gateway_known_nodes", "Storage nodes known, by state.", labels=["state"]
        )
        membership = self._fleet.current
        counts = {"up": 0, "down": 0, "resting": 0}
        for node in () if membership is None else membership.nodes.values():
            if not node.is_up:
                counts["down"] += 1
            elif self._breakers.state(node.name).open:
                counts["resting"] += 1
            else:
                counts["up"] += 1
        for state, count in counts.items():
            nodes.add_metric([state], count)
        yield nodes
        status = self._fleet.status()
        yield CounterMetricFamily(
            "gateway_discovery_refreshes",
            "Successful full listings of the nodes.",
            status.refreshes,
        )
        yield CounterMetricFamily(
            "gateway_discovery_errors", "Failed calls to the container runtime.", status.errors
        )
        yield CounterMetricFamily(
            "gateway_discovery_reconnects",
            "Times the change feed was reopened.",
            status.reconnects,
        )


class ObservedRequests:
    """ASGI wrapper: request ID in and out, metrics, and one access log line per request."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self._app = app
        self._metrics = metrics
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
                },
            )


def _request_id_of(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name.lower() == REQUEST_ID_HEADER.encode():
            text = value.decode("latin-1").strip()
            # Echoed into a header and a log line: keep it short and printable.
            if text and len(text) <= _MAX_REQUEST_ID_LENGTH and text.isprintable():
                return text
    return None


@functools.lru_cache(maxsize=4)
def _local_time(second: int) -> str:
    # Formatted once a second, not once a line.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(second))


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line; request fields passed in ``extra`` become keys."""

    # msgspec (Litestar's own encoder) is several times faster than json.dumps, and every request
    # writes a line; values it does not know are written as their str().
    _encoder = msgspec.json.Encoder(enc_hook=str)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _local_time(int(record.created)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in _LOG_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self._encoder.encode(entry).decode()


class BatchedLineHandler(logging.StreamHandler[TextIO]):
    """A stream handler that writes its lines in batches, at most ``flush_seconds`` after the first.

    The access log has a line per request, and a write per line is a system call per request.
    A warning or worse, a batch of ``max_batch_bytes``, and closing (``logging.shutdown`` at exit)
    write at once; a process killed outright loses at most ``flush_seconds`` of lines.
    """

    def __init__(
        self, stream: TextIO, flush_seconds: float, max_batch_bytes: int = 64 * 1024
    ) -> None:
        super().__init__(stream)
        self._flush_seconds = flush_seconds
        self._max_batch_bytes = max_batch_bytes
        self._lines: list[str] = []
        self._batch_bytes = 0
        self._stopped = threading.Event()
        self._flusher: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:  # logging's contract: a handler reports its failures, never raises
            self.handleError(record)
            return
        # emit() runs under the handler's lock (Handler.handle takes it).
        self._lines.append(line)
        self._batch_bytes += len(line)
        if record.levelno >= logging.WARNING or self._batch_bytes >= self._max_batch_bytes:
            self._write_batch()
        elif self._flusher is None:
            self._flusher = threading.Thread(
                target=self._flush_periodically, name="log-flusher", daemon=True
            )
            self._flusher.start()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self._write_batch()

    def close(self) -> None:
        self._stopped.set()
        self.flush()
        super().close()

    def _write_batch(self) -> None:
        lines, self._lines, self._batch_bytes = self._lines, [], 0
        try:
            if lines:
                self.stream.write("".join(lines))
            self.stream.flush()
        except (OSError, ValueError):
            # The stream is gone (closed, or a broken pipe): there is nowhere left to write to,
            # and a request must not fail for its log line.
            pass

    def _flush_periodically(self) -> None:
        while not self._stopped.wait(self._flush_seconds):
            self.flush()
