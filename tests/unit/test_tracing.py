"""Tracing: when it is on, and the server span of a request (the SDK's in-memory exporter)."""

from collections.abc import Iterator

import pytest
from dependency_injector import providers
from litestar.testing import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from entrypoints.http.app import create_app
from entrypoints.observability.tracing import tracing_enabled
from tests.unit.conftest import Harness


@pytest.mark.parametrize(
    ("environ", "enabled"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_tracing_is_on_only_with_an_otlp_endpoint_and_not_disabled(
    environ: dict[str, str], enabled: bool
) -> None:
    assert tracing_enabled(environ) is enabled


@pytest.fixture
def exported(harness: Harness) -> Iterator[tuple[TestClient, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    harness.container.tracer.override(providers.Object(provider.get_tracer("test")))
    with TestClient(create_app(harness.container)) as client:
        yield client, exporter
    provider.shutdown()


def test_a_request_is_a_server_span_that_continues_the_clients_trace(
    exported: tuple[TestClient, InMemorySpanExporter],
) -> None:
    client, exporter = exported
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    response = client.put(
        "/object/traced",
        content=b"hello",
        headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
    )
    assert response.status_code == 201
    (span,) = exporter.get_finished_spans()
    assert span.kind is SpanKind.SERVER
    assert span.name == "PUT /object/{object_id}"
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == parent_id
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 201
    assert span.attributes["gateway.object_id"] == "traced"
    assert span.attributes["gateway.node"] in {"node-1", "node-2", "node-3"}


def test_without_a_traceparent_each_request_starts_a_trace_and_a_4xx_is_no_error(
    exported: tuple[TestClient, InMemorySpanExporter],
) -> None:
    client, exporter = exported
    assert client.get("/object/missing").status_code == 404
    assert client.get("/object/bad-id").status_code == 400
    first, second = exporter.get_finished_spans()
    assert first.parent is None
    assert first.context.trace_id != second.context.trace_id
    assert first.status.is_unset
    assert second.status.is_unset
