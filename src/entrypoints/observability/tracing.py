"""OpenTelemetry tracing: off unless an OTLP endpoint is configured, by the standard variables.

On when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, unless
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``. Everything else is the SDK's own
reading of the ``OTEL_*`` variables: the sampler (``OTEL_TRACES_SAMPLER``, default parent-based
always-on), the service name (``OTEL_SERVICE_NAME``, default ``amazin-object-gateway``), the OTLP
headers, timeout and protocol details, the batch sizes. Spans leave in batches from the SDK's own
thread (OTLP over HTTP), never from the event loop.

Off, nothing is created: the request path checks one ``None`` and pays nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Tracer

__all__ = ["DEFAULT_SERVICE_NAME", "tracer_from_environ", "tracing_enabled"]

logger = logging.getLogger(__name__)
DEFAULT_SERVICE_NAME = "amazin-object-gateway"


def tracing_enabled(environ: Mapping[str, str]) -> bool:
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return (
        bool(endpoint)
        and environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"
        and environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() != "none"
    )


def tracer_from_environ(environ: Mapping[str, str]) -> Iterator[Tracer | None]:
    """The gateway's tracer while it runs (None: tracing is off); its last spans are flushed when
    the gateway stops (a dependency-injector resource)."""
    if not tracing_enabled(environ):
        yield None
        return
    # An explicit attribute would win over the variables the SDK reads: the default only fills in.
    named = environ.get("OTEL_SERVICE_NAME") or f"{SERVICE_NAME}=" in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    defaults = {} if named else {SERVICE_NAME: DEFAULT_SERVICE_NAME}
    provider = TracerProvider(resource=Resource.create(defaults))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    logger.info("tracing on: spans go to the OTLP endpoint configured by OTEL_* variables")
    try:
        yield provider.get_tracer("amazin-object-gateway")
    finally:
        provider.shutdown()
