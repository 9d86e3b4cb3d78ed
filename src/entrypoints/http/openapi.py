"""The OpenAPI description of the object routes, which Litestar cannot derive from a mount."""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    PathItem,
    Reference,
    RequestBody,
    Schema,
)

from domain.object_id import MAX_OBJECT_ID_LENGTH, OBJECT_ID_PATTERN
from domain.objects import DEFAULT_CONTENT_TYPE
from entrypoints.http.errors import ERROR_FIELDS
from entrypoints.http.headers import MAX_CONTENT_TYPE_LENGTH
from entrypoints.http.objects import OBJECT_ROUTE

__all__ = ["document_object_routes"]

_ERROR = "ErrorBody"
_BINARY = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
_STORED = "StoredBody"


def document_object_routes(app: Litestar) -> None:
    """Add ``/object/{object_id}`` to the app's schema (built now, once, and cached by Litestar)."""
    openapi: OpenAPI = app.openapi_schema
    components = openapi.components
    if isinstance(components, list):  # pragma: no cover - Litestar merges them when building
        components = openapi.components = Components()
    schemas = components.schemas = dict(components.schemas or {})
    schemas[_ERROR] = Schema(
        type=OpenAPIType.OBJECT,
        required=list(ERROR_FIELDS),
        properties={
            name: Schema(type=OpenAPIType.STRING, description=description)
            for name, description in ERROR_FIELDS.items()
        },
    )
    schemas[_STORED] = Schema(
        type=OpenAPIType.OBJECT,
        required=["id", "size", "etag"],
        properties={
            "id": Schema(type=OpenAPIType.STRING),
            "size": Schema(type=OpenAPIType.INTEGER, minimum=0),
            "etag": Schema(type=OpenAPIType.STRING),
        },
    )
    paths = openapi.paths = dict(openapi.paths or {})
    paths[OBJECT_ROUTE] = _object_path_item()


def _error(description: str) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=description,
        content={
            "application/json": OpenAPIMediaType(schema=Reference(f"#/components/schemas/{_ERROR}"))
        },
    )


def _ref(component: str) -> Reference:
    return Reference(f"#/components/schemas/{component}")


def _header(description: str, type_: OpenAPIType = OpenAPIType.STRING) -> OpenAPIHeader:
    return OpenAPIHeader(description=description, schema=Schema(type=type_))


_INVALID = _error(
    "The ID is not 1 to 32 ASCII letters and digits (invalid_object_id), or another part of the "
    "request is malformed (invalid_request)."
)
_UNAVAILABLE = _error(
    "The ID's node is down, unreachable, resting or at its cap of requests waiting for it "
    "(node_unavailable), fewer of the ID's replicas than the quorum can take part "
    "(quorum_unavailable, with GATEWAY_REPLICAS above 1), no node is known "
    "(no_nodes_available), the Docker daemon cannot be reached (discovery_unavailable), or "
    "upload parts fill the gateway's memory and disk budgets (upload_capacity_exhausted). "
    "Carries Retry-After."
)
_OBJECT_HEADERS: dict[str, OpenAPIHeader | Reference] = {
    "Content-Length": _header("The object's size in bytes.", OpenAPIType.INTEGER),
    "ETag": _header("The object's entity tag, quoted."),
    "Last-Modified": _header("When the object was stored."),
    "Accept-Ranges": _header("bytes"),
    # Required, so that the schema fuzz checks every object response carries it.
    "X-Content-Type-Options": OpenAPIHeader(
        description="nosniff: browsers take the stored Content-Type as it is.",
        schema=Schema(type=OpenAPIType.STRING, enum=["nosniff"]),
        required=True,
    ),
}
_VALIDATORS: dict[str, OpenAPIHeader | Reference] = {
    "ETag": _OBJECT_HEADERS["ETag"],
    "Last-Modified": _OBJECT_HEADERS["Last-Modified"],
}
_PRECONDITION_FAILED = _error(
    "If-Match or If-Unmodified-Since does not hold, or for a PUT If-None-Match: * finds an "
    "object (precondition_failed)."
)


def _header_parameter(name: str, description: str) -> Parameter:
    return Parameter(
        name=name,
        param_in="header",
        required=False,
        description=description,
        schema=Schema(type=OpenAPIType.STRING),
    )


_RANGE = _header_parameter("Range", "One byte range, `bytes=first-last`; others are ignored.")
_READ_CONDITIONS: list[Parameter | Reference] = [
    _header_parameter("If-None-Match", "304 when the object's ETag is among these."),
    _header_parameter("If-Modified-Since", "304 when not modified since."),
    _header_parameter("If-Match", "412 unless the object's ETag is among these."),
    _header_parameter("If-Unmodified-Since", "412 when modified since."),
]


def _object_path_item() -> PathItem:
    found = OpenAPIResponse(
        description="The object's bytes, with the Content-Type given when it was stored.",
        headers=_OBJECT_HEADERS,
        content={
            DEFAULT_CONTENT_TYPE: OpenAPIMediaType(schema=_BINARY),
            "*/*": OpenAPIMediaType(
                schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
            ),
        },
    )
    stored = OpenAPIMediaType(schema=_ref(_STORED))
    partial = OpenAPIResponse(
        description="The bytes of the range asked for.",
        headers={
            **_OBJECT_HEADERS,
            "Content-Range": _header("bytes first-last/size"),
        },
        content=found.content,
    )
    not_modified = OpenAPIResponse(
        description="The client's copy is current (If-None-Match, If-Modified-Since).",
        headers=_VALIDATORS,
    )
    not_found = _error("Nothing is stored under this ID (object_not_found).")
    return PathItem(
        parameters=[
            Parameter(
                name="object_id",
                param_in="path",
                required=True,
                description="1 to 32 ASCII letters and digits.",
                schema=Schema(
                    type=OpenAPIType.STRING,
                    pattern=f"^{OBJECT_ID_PATTERN}$",
                    min_length=1,
                    max_length=MAX_OBJECT_ID_LENGTH,
                ),
            )
        ],
        get=Operation(
            summary="Read an object",
            operation_id="GetObject",
            description="Streams the object back from the node that owns its ID (or from a node "
            "that held it before membership changed). A single byte range is honoured; "
            "conditional requests are evaluated against the object's ETag and Last-Modified.",
            parameters=[_RANGE, *_READ_CONDITIONS],
            responses={
                "200": found,
                "206": partial,
                "304": not_modified,
                "400": _INVALID,
                "404": not_found,
                "412": _PRECONDITION_FAILED,
                "416": _error("The range lies beyond the object (range_not_satisfiable)."),
                "503": _UNAVAILABLE,
            },
        ),
        head=Operation(
            summary="Read an object's headers",
            operation_id="HeadObject",
            description="GET's status and headers, without the body.",
            parameters=_READ_CONDITIONS,
            responses={
                "200": OpenAPIResponse(description="The object exists.", headers=_OBJECT_HEADERS),
                "304": OpenAPIResponse(description="Not modified.", headers=_VALIDATORS),
                "400": OpenAPIResponse(description="Invalid ID."),
                "404": OpenAPIResponse(description="Nothing is stored under this ID."),
                "412": OpenAPIResponse(description="A precondition does not hold."),
                "503": OpenAPIResponse(description="The ID's node cannot be asked."),
            },
        ),
        delete=Operation(
            summary="Delete an object",
            operation_id="DeleteObject",
            description="Removes the object from its owner and from every node a read would look "
            "on. 204 whether or not anything was stored.",
            responses={
                "204": OpenAPIResponse(description="Nothing is stored under the ID any more."),
                "400": _INVALID,
                "503": _UNAVAILABLE,
            },
        ),
        put=Operation(
            summary="Store an object",
            operation_id="PutObject",
            description=(
                "Streams the body to the node that owns the ID, replacing any object stored under "
                "it. The Content-Type given (a media type of at most "
                f"{MAX_CONTENT_TYPE_LENGTH} characters) is stored and returned by GET. Writes are "
                "atomic: a failed or interrupted upload leaves the previous object as it was."
            ),
            parameters=[
                _header_parameter("If-None-Match", "`*`: store only if nothing is stored yet."),
                _header_parameter("If-Match", "Replace only the object with this ETag."),
            ],
            request_body=RequestBody(
                required=True,
                content={
                    "*/*": OpenAPIMediaType(
                        schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
                    )
                },
            ),
            responses={
                "201": OpenAPIResponse(
                    description="A new object was stored.",
                    headers={"ETag": _OBJECT_HEADERS["ETag"]},
                    content={"application/json": stored},
                ),
                "200": OpenAPIResponse(
                    description="An existing object was replaced.",
                    headers={"ETag": _OBJECT_HEADERS["ETag"]},
                    content={"application/json": stored},
                ),
                "400": _error(
                    "Invalid ID (invalid_object_id), a malformed Content-Type or Content-Length "
                    "(invalid_request), or a body that ended early or stalled (incomplete_body)."
                ),
                "408": _error(
                    "After GATEWAY_MIN_DATA_RATE_GRACE_SECONDS, the body arrived slower on average "
                    "than GATEWAY_MIN_DATA_RATE_BYTES_PER_SECOND (body_too_slow)."
                ),
                "412": _PRECONDITION_FAILED,
                "413": _error("The body exceeds GATEWAY_MAX_BODY_BYTES (body_too_large)."),
                "503": _UNAVAILABLE,
            },
        ),
        options=Operation(
            summary="The methods of an object",
            operation_id="ObjectOptions",
            responses={
                "204": OpenAPIResponse(
                    description="No body; Allow lists the methods.",
                    headers={"Allow": _header("The methods this path accepts.")},
                )
            },
        ),
    )
