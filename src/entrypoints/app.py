from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass

from litestar import Litestar, Request, Response, get, put
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, InternalServerException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.params import FromPath
from litestar.response import Stream
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from application.readiness import ReadinessReport, check_readiness
from application.use_cases import GetObject, PutObject
from domain.errors import (
    BodyTooLarge,
    GatewayError,
    IncompleteBody,
    InvalidObjectId,
    InvalidRequest,
    NodeUnavailable,
    ObjectNotFound,
    ServiceUnavailable,
)
from entrypoints.container import Container
from entrypoints.observability import ObservedRequests, RequestFacts

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

# The one mapping from domain errors to HTTP statuses; the most specific class listed wins.
STATUS_BY_ERROR: dict[type[GatewayError], int] = {
    BodyTooLarge: 413,
    InvalidRequest: 400,
    ObjectNotFound: 404,
    ServiceUnavailable: 503,
    GatewayError: 500,
}
DEFAULT_RETRY_AFTER_SECONDS = 1


@dataclass
class ErrorBody:
    """Every error answer: a stable machine-readable code and a human-readable detail."""

    error: str
    detail: str


@dataclass
class StoredBody:
    """The answer to a PUT."""

    id: str
    size: int
    etag: str


def _error(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorBody, description=description)


_UNAVAILABLE = _error(
    "The ID's node is down, unreachable or resting (node_unavailable), no node is known "
    "(no_nodes_available), or the Docker daemon cannot be reached (discovery_unavailable). "
    "Carries Retry-After."
)
_INVALID_ID = _error("The ID is not 1 to 32 ASCII letters and digits (invalid_object_id).")


def status_for(error: GatewayError) -> int:
    return next(STATUS_BY_ERROR[cls] for cls in type(error).__mro__ if cls in STATUS_BY_ERROR)


def _note(
    request: Request[object, object, State],
    *,
    object_id: str | None = None,
    node: str | None = None,
    node_failed: bool = False,
) -> None:
    """Tell the request's log line and metrics which object and node it concerned."""
    facts = RequestFacts.of(request.scope["state"])
    if facts is None:
        return
    if object_id is not None:
        facts.object_id = object_id
    if node is not None:
        facts.node = node
        facts.node_failed = node_failed


def _error_response(
    status: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> Response[ErrorBody]:
    return Response(ErrorBody(error, detail), status_code=status, headers=headers or {})


def _gateway_error_handler(
    request: Request[object, object, State], exc: Exception
) -> Response[ErrorBody]:
    assert isinstance(exc, GatewayError)
    status = status_for(exc)
    headers = None
    if isinstance(exc, ServiceUnavailable):
        retry_after = exc.retry_after_seconds or DEFAULT_RETRY_AFTER_SECONDS
        headers = {"Retry-After": str(math.ceil(retry_after))}
    if exc.node_name is not None:
        _note(request, node=exc.node_name, node_failed=isinstance(exc, NodeUnavailable))
    return _error_response(status, exc.code, exc.detail, headers)


def _http_error_handler(_: Request[object, object, State], exc: Exception) -> Response[ErrorBody]:
    # Litestar's own errors (unknown route, wrong method, ...) get the same body shape as ours.
    assert isinstance(exc, HTTPException)
    if exc.status_code >= 500:
        logger.error("request failed: %s", exc.detail, exc_info=exc)
    error = type(exc).__name__.removesuffix("Exception").removesuffix("Error") or "HTTP"
    return _error_response(exc.status_code, _snake_case(error), str(exc.detail), exc.headers)


def _snake_case(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


async def _request_body(request: Request[object, object, State]) -> AsyncIterator[bytes]:
    """The request body as it arrives, with Litestar's failures turned into domain errors."""
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except RequestEntityTooLarge as exc:
        raise BodyTooLarge("the body exceeds the configured maximum size") from exc
    except InternalServerException as exc:
        raise IncompleteBody("the client disconnected before sending the whole body") from exc


def _object_id(request: Request[object, object, State], path_value: str) -> str:
    # A "path" parameter (chosen so that "a/b" is a 400, not a 404) keeps its leading slash.
    object_id = path_value.removeprefix("/")
    _note(request, object_id=object_id)
    return object_id


def _content_length(request: Request[object, object, State]) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None or "chunked" in request.headers.get("transfer-encoding", "").lower():
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest(f"Content-Length {raw!r} is not a number") from None


@put(
    "/object/{object_id:path}",
    summary="Store an object",
    description="Streams the body to the node that owns the ID, replacing any object stored under "
    "it. The Content-Type given is stored and returned by GET. Writes are atomic.",
    status_code=201,
    response_description="A new object was stored (200 when it replaced one).",
    responses={
        200: ResponseSpec(
            data_container=StoredBody, description="An existing object was replaced."
        ),
        400: _error(
            "Invalid ID (invalid_object_id) or a body shorter than its Content-Length "
            "(incomplete_body)."
        ),
        413: _error("The body exceeds GATEWAY_MAX_BODY_BYTES (body_too_large)."),
        503: _UNAVAILABLE,
    },
)
async def put_object(
    request: Request[object, object, State],
    object_id: FromPath[str],
    put_use_case: NamedDependency[PutObject],
) -> Response[StoredBody]:
    object_id = _object_id(request, object_id)
    outcome = await put_use_case(
        object_id,
        _request_body(request),
        _content_length(request),
        request.headers.get("content-type"),
    )
    _note(request, node=outcome.node.name)
    return Response(
        StoredBody(id=object_id, size=outcome.info.size, etag=outcome.info.etag),
        status_code=201 if outcome.created else 200,
        headers={"ETag": f'"{outcome.info.etag}"'},
    )


@get(
    "/object/{object_id:path}",
    summary="Read an object",
    description="Streams the object back with its Content-Length, Content-Type and ETag.",
    response_description="The object's bytes.",
    responses={
        400: _INVALID_ID,
        404: _error("Nothing is stored under this ID (object_not_found)."),
        503: _UNAVAILABLE,
    },
)
async def get_object(
    request: Request[object, object, State],
    object_id: FromPath[str],
    get_use_case: NamedDependency[GetObject],
) -> Stream:
    retrieved = await get_use_case(_object_id(request, object_id))
    _note(request, node=retrieved.node.name)
    stored = retrieved.stored

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in stored.chunks:
                yield chunk
        finally:
            await stored.close()

    return Stream(
        body(),
        media_type=stored.info.content_type,
        headers={"Content-Length": str(stored.info.size), "ETag": f'"{stored.info.etag}"'},
    )


@put("/object", include_in_schema=False)
async def put_without_id() -> None:
    raise InvalidObjectId("the object ID is empty")


@get("/object", include_in_schema=False)
async def get_without_id() -> None:
    raise InvalidObjectId("the object ID is empty")


@get("/health/live", summary="Liveness: the process answers")
async def live() -> dict[str, str]:
    return {"status": "alive"}


@get(
    "/health/ready",
    summary="Readiness: discovery is current and a node can serve",
    description="200 when the Docker daemon answered recently and at least one node is up and "
    "not resting; 503 otherwise. Lists every node (never its keys) and the discovery state.",
    responses={503: ResponseSpec(data_container=ReadinessReport, description="Not ready.")},
)
async def ready(readiness: NamedDependency[ReadinessReport]) -> Response[ReadinessReport]:
    return Response(readiness, status_code=200 if readiness.ready else 503)


@get("/metrics", summary="Prometheus metrics", media_type=CONTENT_TYPE_LATEST)
async def metrics(request: Request[object, object, State]) -> Response[bytes]:
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def create_app(container: Container | None = None) -> Litestar:
    """Build the HTTP app around a container (a fresh one reading the environment by default)."""
    container = container or Container()
    settings = container.settings()

    # Plain functions, not providers: Litestar would take a provider's (*args, **kwargs) as inputs.
    def provide_put_use_case() -> PutObject:
        return container.put_object()

    def provide_get_use_case() -> GetObject:
        return container.get_object()

    def provide_readiness() -> ReadinessReport:
        return check_readiness(
            container.fleet(), container.breakers(), settings.discovery_stale_after_seconds
        )

    @contextlib.asynccontextmanager
    async def keep_fleet_current(_: Litestar) -> AsyncIterator[None]:
        watcher = asyncio.create_task(container.fleet_watcher().run(), name="fleet-watcher")
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            container.shutdown_resources()

    app = Litestar(
        route_handlers=[
            put_object,
            get_object,
            put_without_id,
            get_without_id,
            live,
            ready,
            metrics,
        ],
        dependencies={
            "put_use_case": Provide(provide_put_use_case, sync_to_thread=False),
            "get_use_case": Provide(provide_get_use_case, sync_to_thread=False),
            "readiness": Provide(provide_readiness, sync_to_thread=False),
        },
        exception_handlers={
            GatewayError: _gateway_error_handler,
            HTTPException: _http_error_handler,
        },
        request_max_body_size=settings.max_body_bytes,
        # Logging is configured once by the process entry point, not by the framework.
        logging_config=None,
        lifespan=[keep_fleet_current],
        state=State({"metrics": container.metrics()}),
        openapi_config=OpenAPIConfig(title="Amazin object storage gateway", version="0.1.0"),
    )
    # Outside Litestar's router and exception handling, so every request (unknown routes too) gets
    # a request ID, a log line and metrics with its final status.
    app.asgi_handler = ObservedRequests(app.asgi_handler, container.metrics())
    return app
