from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from litestar import Litestar, Request, Response, get, put
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, InternalServerException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.params import FromPath
from litestar.response import Stream

from application.use_cases import GetObject, PutObject
from domain.errors import (
    BodyTooLarge,
    GatewayError,
    IncompleteBody,
    InvalidObjectId,
    InvalidRequest,
    ObjectNotFound,
    ServiceUnavailable,
)
from entrypoints.container import Container

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
RETRY_AFTER_SECONDS = "1"


def status_for(error: GatewayError) -> int:
    return next(STATUS_BY_ERROR[cls] for cls in type(error).__mro__ if cls in STATUS_BY_ERROR)


def _error_response(
    status: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> Response[dict[str, str]]:
    return Response(
        content={"error": error, "detail": detail}, status_code=status, headers=headers or {}
    )


def _gateway_error_handler(
    _: Request[object, object, State], exc: Exception
) -> Response[dict[str, str]]:
    assert isinstance(exc, GatewayError)
    status = status_for(exc)
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if status == 503 else None
    return _error_response(status, exc.code, exc.detail, headers)


def _http_error_handler(
    _: Request[object, object, State], exc: Exception
) -> Response[dict[str, str]]:
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


def _without_leading_slash(path_value: str) -> str:
    # A "path" parameter (chosen so that "a/b" is a 400, not a 404) keeps its leading slash.
    return path_value.removeprefix("/")


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
    description="Streams the body to the node that owns the ID. 201 for a new object, 200 when it "
    "replaced one.",
)
async def put_object(
    request: Request[object, object, State],
    object_id: FromPath[str],
    put_use_case: NamedDependency[PutObject],
) -> Response[dict[str, object]]:
    outcome = await put_use_case(
        _without_leading_slash(object_id),
        _request_body(request),
        _content_length(request),
        request.headers.get("content-type"),
    )
    return Response(
        content={
            "id": _without_leading_slash(object_id),
            "size": outcome.info.size,
            "etag": outcome.info.etag,
        },
        status_code=201 if outcome.created else 200,
        headers={"ETag": f'"{outcome.info.etag}"'},
    )


@get("/object/{object_id:path}", summary="Read an object")
async def get_object(object_id: FromPath[str], get_use_case: NamedDependency[GetObject]) -> Stream:
    retrieved = await get_use_case(_without_leading_slash(object_id))
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


@put("/object", summary="Store an object (empty ID: always refused)", include_in_schema=False)
async def put_without_id() -> None:
    raise InvalidObjectId("the object ID is empty")


@get("/object", summary="Read an object (empty ID: always refused)", include_in_schema=False)
async def get_without_id() -> None:
    raise InvalidObjectId("the object ID is empty")


@get("/health/live", summary="Liveness: the process answers")
async def live() -> dict[str, str]:
    return {"status": "alive"}


def create_app(container: Container | None = None) -> Litestar:
    """Build the HTTP app around a container (a fresh one reading the environment by default)."""
    container = container or Container()
    settings = container.settings()

    # Plain functions, not providers: Litestar would take a provider's (*args, **kwargs) as inputs.
    def provide_put_use_case() -> PutObject:
        return container.put_object()

    def provide_get_use_case() -> GetObject:
        return container.get_object()

    def release_resources() -> None:
        container.shutdown_resources()

    return Litestar(
        route_handlers=[put_object, get_object, put_without_id, get_without_id, live],
        dependencies={
            "put_use_case": Provide(provide_put_use_case, sync_to_thread=False),
            "get_use_case": Provide(provide_get_use_case, sync_to_thread=False),
        },
        exception_handlers={
            GatewayError: _gateway_error_handler,
            HTTPException: _http_error_handler,
        },
        request_max_body_size=settings.max_body_bytes,
        # Logging is configured once by the process entry point, not by the framework.
        logging_config=None,
        on_shutdown=[release_resources],
    )
