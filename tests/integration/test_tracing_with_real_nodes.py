"""Tracing on, through the standard OTEL_* variables: a real OTLP/HTTP receiver gets the spans."""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.integration.support import GatewayServer, StorageNode, wait_for


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, object]
    service_name: str


class OtlpReceiver:
    """OTLP over HTTP (protobuf), as a collector receives it on /v1/traces."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.paths.append(self.path)
                receiver.take(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def take(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(_received(span, service) for span in scope_spans.spans)

    def in_trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.trace_id == trace_id]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _received(span: Span, service: str) -> ReceivedSpan:
    attributes: dict[str, object] = {}
    for attribute in span.attributes:
        value = attribute.value
        attributes[attribute.key] = getattr(value, value.WhichOneof("value") or "string_value")
    return ReceivedSpan(
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        kind=span.kind,
        attributes=attributes,
        service_name=service,
    )


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-under-test")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    yield receiver
    receiver.close()


def test_a_put_and_a_get_are_traced_from_the_clients_traceparent_to_each_node_request(
    receiver: OtlpReceiver,
    nodes: list[StorageNode],
    run_marker: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node_names = {node.name for node in nodes}
    put_trace, put_parent = secrets.token_hex(16), secrets.token_hex(8)
    get_trace, get_parent = secrets.token_hex(16), secrets.token_hex(8)
    with (
        caplog.at_level(logging.INFO, logger="gateway.access"),
        GatewayServer.for_marker(run_marker) as gateway,
        httpx.Client(base_url=gateway.base_url, timeout=30) as http,
    ):
        put = http.put(
            "/object/traced1",
            content=b"x" * 5000,
            headers={"traceparent": f"00-{put_trace}-{put_parent}-01"},
        )
        assert put.status_code in (200, 201)
        got = http.get(
            "/object/traced1", headers={"traceparent": f"00-{get_trace}-{get_parent}-01"}
        )
        assert got.content == b"x" * 5000
        wait_for(
            lambda: any(s.kind == Span.SPAN_KIND_SERVER for s in receiver.in_trace(get_trace)),
            10,
            "the GET's spans to be exported",
        )
    assert set(receiver.paths) == {"/v1/traces"}

    for trace_id, parent, method, body_attribute in (
        (put_trace, put_parent, "PUT", "http.request.body.size"),
        (get_trace, get_parent, "GET", "http.response.body.size"),
    ):
        spans = receiver.in_trace(trace_id)
        (server,) = [s for s in spans if s.kind == Span.SPAN_KIND_SERVER]
        assert server.name == f"{method} /object/{{object_id}}"
        assert server.parent_span_id == parent
        assert server.service_name == "gateway-under-test"
        assert server.attributes["gateway.object_id"] == "traced1"
        assert server.attributes["http.response.status_code"] in (200, 201)
        node_spans = [s for s in spans if s.kind == Span.SPAN_KIND_CLIENT]
        assert node_spans, spans
        assert {s.parent_span_id for s in node_spans} == {server.span_id}
        assert {s.attributes["gateway.node"] for s in node_spans} <= node_names
        # The object's own transfer (a first PUT may also create the bucket: "PUT bucket").
        (transfer,) = [
            s for s in node_spans if s.attributes["gateway.node.operation"] == f"{method} object"
        ]
        assert transfer.name == f"node {method}"
        assert transfer.attributes["gateway.node"] == server.attributes["gateway.node"]
        assert transfer.attributes["http.response.status_code"] == 200
        assert transfer.attributes[body_attribute] == 5000

    logged = {
        getattr(record, "trace_id", None)
        for record in caplog.records
        if record.name == "gateway.access"
    }
    assert {put_trace, get_trace} <= logged
