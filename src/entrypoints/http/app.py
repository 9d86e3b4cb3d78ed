"""The Litestar app: health, metrics and the schema as routes, the object routes as a mount, and
every part taken from the container."""

from __future__ import annotations

import logging

from litestar import Litestar, Request, Response, asgi, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST

from application.listing import ListObjects
from application.readiness import ReadinessReport
from domain.errors import GatewayError
from entrypoints.container import Container
from entrypoints.http.admin import admin_router
from entrypoints.http.auth import AUTH_RULE, AuthGate, Rule, is_loopback, litestar_router
from entrypoints.http.errors import ErrorBody, headers_for, status_for
from entrypoints.http.listing import list_objects
from entrypoints.http.openapi import document_object_routes
from entrypoints.observability.access_log import ObservedRequests

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

SCHEMA_PATH = "/schema"
_TITLE = "Amazin object storage gateway"
_VERSION = "0.1.0"
_BEARER = "bearerToken"


def _gateway_error_handler(
    _: Request[object, object, State], exc: Exception
) -> Response[ErrorBody]:
    assert isinstance(exc, GatewayError)
    return Response(
        ErrorBody(exc.code, exc.detail), status_code=status_for(exc), headers=headers_for(exc)
    )


def _http_error_handler(_: Request[object, object, State], exc: Exception) -> Response[ErrorBody]:
    # Litestar's own errors (unknown route, wrong method, ...) get the same body shape as ours.
    assert isinstance(exc, HTTPException)
    if exc.status_code >= 500:
        logger.error("request failed: %s", exc.detail, exc_info=exc)
    error = type(exc).__name__.removesuffix("Exception").removesuffix("Error") or "HTTP"
    return Response(
        ErrorBody(_snake_case(error), str(exc.detail)),
        status_code=exc.status_code,
        headers=exc.headers or {},
    )


def _snake_case(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


@get("/health/live", summary="Liveness: the process answers", opt={AUTH_RULE: Rule.OPEN})
async def live() -> dict[str, str]:
    return {"status": "alive"}


@get(
    "/health/ready",
    summary="Readiness: discovery is current and a node can serve",
    description="200 when the Docker daemon answered recently and at least one node is up and "
    "not resting; 503 otherwise. Lists every node (never its keys) and the discovery state.",
    responses={503: ResponseSpec(data_container=ReadinessReport, description="Not ready.")},
    opt={AUTH_RULE: Rule.METRICS},
)
async def ready(readiness: NamedDependency[ReadinessReport]) -> Response[ReadinessReport]:
    return Response(readiness, status_code=200 if readiness.ready else 503)


@get(
    "/metrics",
    summary="Prometheus metrics",
    media_type=CONTENT_TYPE_LATEST,
    opt={AUTH_RULE: Rule.METRICS},
)
async def metrics(request: Request[object, object, State]) -> Response[bytes]:
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _openapi_config(*, auth_on: bool) -> OpenAPIConfig:
    """The schema's frame; with auth on, it says that requests need a Bearer token."""
    if not auth_on:
        return OpenAPIConfig(title=_TITLE, version=_VERSION, path=SCHEMA_PATH)
    scheme = SecurityScheme(
        type="http",
        scheme="bearer",
        description="A token from `object-gateway token create`. The object routes also take a "
        "signed URL (`object-gateway sign`) instead; GET /health/live needs nothing.",
    )
    return OpenAPIConfig(
        title=_TITLE,
        version=_VERSION,
        path=SCHEMA_PATH,
        security=[{_BEARER: []}],
        components=Components(security_schemes={_BEARER: scheme}),
    )


def create_app(container: Container | None = None) -> Litestar:
    """Build the HTTP app around a container (a fresh one reading the environment by default)."""
    container = container or Container()
    object_api = container.object_api()

    @asgi(
        "/object",
        is_mount=True,
        copy_scope=False,
        include_in_schema=False,
        opt={AUTH_RULE: Rule.OBJECT},
    )
    async def objects(scope: Scope, receive: Receive, send: Send) -> None:
        await object_api(scope, receive, send)

    # A plain function, not the provider: Litestar would take a provider's (*args, **kwargs) as
    # inputs.
    def provide_readiness() -> ReadinessReport:
        return container.readiness()

    def provide_listing() -> ListObjects:
        return container.list_objects()

    settings = container.settings()
    app = Litestar(
        route_handlers=[
            objects,
            live,
            ready,
            metrics,
            list_objects,
            admin_router(container.admin_jobs, settings.admin_port),
        ],
        dependencies={
            "readiness": Provide(provide_readiness, sync_to_thread=False),
            "listing": Provide(provide_listing, sync_to_thread=False),
        },
        exception_handlers={
            GatewayError: _gateway_error_handler,
            HTTPException: _http_error_handler,
        },
        # Logging is configured once by the process entry point, not by the framework.
        logging_config=None,
        lifespan=[container.lifespan()],
        state=State({"metrics": container.metrics()}),
        openapi_config=_openapi_config(auth_on=settings.auth_mode == "on"),
    )
    handler = app.asgi_handler
    # With auth on, every request passes the gate first (entrypoints/http/auth.py); off (the
    # default), nothing is added to any request's path.
    access = container.access_control()
    if access is not None:
        if settings.admin_port and not is_loopback(settings.admin_host):
            logger.warning(
                "the admin listener %s:%d is not on loopback: its routes need an admin token",
                settings.admin_host,
                settings.admin_port,
            )
        handler = AuthGate(
            handler,
            access,
            litestar_router(app.asgi_router.handle_routing, SCHEMA_PATH),
            admin_port=settings.admin_port,
            admin_on_loopback=is_loopback(settings.admin_host),
        )
    # Outside Litestar's router and exception handling, so every request (unknown routes and
    # refusals too) gets a request ID, a log line and metrics with its final status.
    app.asgi_handler = ObservedRequests(handler, container.metrics(), container.tracer())
    document_object_routes(app)
    return app
