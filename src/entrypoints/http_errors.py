"""The one mapping from domain errors to HTTP answers, shared by every route."""

from __future__ import annotations

import math

from domain.errors import (
    BodyTooLarge,
    GatewayError,
    InvalidRequest,
    ObjectNotFound,
    PreconditionFailed,
    RangeNotSatisfiable,
    ServiceUnavailable,
)

__all__ = [
    "DEFAULT_RETRY_AFTER_SECONDS",
    "STATUS_BY_ERROR",
    "RouteNotFound",
    "headers_for",
    "status_for",
]


class RouteNotFound(GatewayError):
    """No route has this path (the HTTP layer's own error; the domain knows no paths)."""

    code = "not_found"


# The most specific class listed wins.
STATUS_BY_ERROR: dict[type[GatewayError], int] = {
    RouteNotFound: 404,
    BodyTooLarge: 413,
    InvalidRequest: 400,
    ObjectNotFound: 404,
    PreconditionFailed: 412,
    RangeNotSatisfiable: 416,
    ServiceUnavailable: 503,
    GatewayError: 500,
}
DEFAULT_RETRY_AFTER_SECONDS = 1


def status_for(error: GatewayError) -> int:
    return next(STATUS_BY_ERROR[cls] for cls in type(error).__mro__ if cls in STATUS_BY_ERROR)


def headers_for(error: GatewayError) -> dict[str, str]:
    if isinstance(error, RangeNotSatisfiable):
        size = "*" if error.object_size is None else str(error.object_size)
        return {"Content-Range": f"bytes */{size}"}
    if isinstance(error, ServiceUnavailable):
        retry_after = error.retry_after_seconds or DEFAULT_RETRY_AFTER_SECONDS
        return {"Retry-After": str(math.ceil(retry_after))}
    return {}
