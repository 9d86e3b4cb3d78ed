"""Every error answer of the gateway: one body, and the one mapping from errors to statuses."""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgspec

from domain.errors import (
    BodyTooLarge,
    BodyTooSlow,
    Forbidden,
    GatewayError,
    InvalidRequest,
    JobInProgress,
    MissingToken,
    ObjectNotFound,
    PreconditionFailed,
    RangeNotSatisfiable,
    ServiceUnavailable,
    Unauthenticated,
    UploadTooSlow,
)

__all__ = [
    "DEFAULT_RETRY_AFTER_SECONDS",
    "ERROR_FIELDS",
    "STATUS_BY_ERROR",
    "ErrorBody",
    "MethodNotAllowed",
    "RouteNotFound",
    "error_body",
    "headers_for",
    "status_for",
]


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """Every error answer: a stable machine-readable code and a human-readable detail."""

    error: str
    detail: str


# What each field of the body says (the OpenAPI schema is built from these).
ERROR_FIELDS = {
    "error": "A stable machine-readable code.",
    "detail": "What went wrong, for people.",
}
_ENCODER = msgspec.json.Encoder()


def error_body(code: str, detail: str) -> bytes:
    """The JSON of an error answer."""
    return _ENCODER.encode(ErrorBody(code, detail))


class RouteNotFound(GatewayError):
    """No route has this path (the HTTP layer's own error; the domain knows no paths)."""

    code = "not_found"


class MethodNotAllowed(GatewayError):
    """The path has no such method; ``allowed`` lists the ones it has."""

    code = "method_not_allowed"

    def __init__(self, method: str, allowed: tuple[str, ...]) -> None:
        super().__init__(f"{method} is not allowed here; use one of {', '.join(allowed)}")
        self.allowed = allowed


# The most specific class listed wins.
STATUS_BY_ERROR: dict[type[GatewayError], int] = {
    RouteNotFound: 404,
    MethodNotAllowed: 405,
    JobInProgress: 409,
    BodyTooLarge: 413,
    UploadTooSlow: 408,
    BodyTooSlow: 408,
    InvalidRequest: 400,
    ObjectNotFound: 404,
    PreconditionFailed: 412,
    RangeNotSatisfiable: 416,
    Unauthenticated: 401,
    Forbidden: 403,
    ServiceUnavailable: 503,
    GatewayError: 500,
}
DEFAULT_RETRY_AFTER_SECONDS = 1
# RFC 6750 section 3: no error code when no credential came; invalid_token for one that is
# malformed, unknown, expired or revoked; insufficient_scope for a 403. The body's code says more.
_REALM = 'Bearer realm="object-gateway"'


def status_for(error: GatewayError) -> int:
    return next(STATUS_BY_ERROR[cls] for cls in type(error).__mro__ if cls in STATUS_BY_ERROR)


def headers_for(error: GatewayError) -> dict[str, str]:
    if isinstance(error, RangeNotSatisfiable):
        size = "*" if error.object_size is None else str(error.object_size)
        return {"Content-Range": f"bytes */{size}"}
    if isinstance(error, ServiceUnavailable):
        retry_after = error.retry_after_seconds or DEFAULT_RETRY_AFTER_SECONDS
        return {"Retry-After": str(math.ceil(retry_after))}
    if isinstance(error, MethodNotAllowed):
        return {"Allow": ", ".join(error.allowed)}
    if isinstance(error, Unauthenticated | Forbidden):
        return {"WWW-Authenticate": _challenge(error)}
    return {}


def _challenge(error: Unauthenticated | Forbidden) -> str:
    if isinstance(error, MissingToken):
        return _REALM
    if isinstance(error, Forbidden):
        return f'{_REALM}, error="insufficient_scope"'
    return f'{_REALM}, error="invalid_token"'
