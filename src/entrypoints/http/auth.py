"""The auth check in front of every route (installed only when ``GATEWAY_AUTH_TOKENS_FILE`` is set).

An ASGI wrapper around the whole app, inside the request observer (so a refusal has its request
ID, log line and metrics), before Litestar's router and the object mount. Deny by default: every
route says what it needs in its ``opt`` (``AUTH_RULE``); a route that says nothing needs
``admin``, an unknown path or method any valid token (then its 404 or 405).

- ``/object/{id}``: read (GET, HEAD), write (PUT), delete (DELETE), any token (OPTIONS and the
  rest); a token with a prefix only for IDs that start with it. Or a signed URL instead of a
  token. The check is a header scan, one SHA-256, a dict lookup and a constant-time comparison.
- ``GET /objects``: list, and a token with a prefix only for a ``prefix`` that starts with it.
- ``/metrics`` and ``/health/ready``: metrics (or admin): operational data (node names and
  addresses) for whoever runs the gateway; a scraper's token opens no object.
- ``/schema`` and below: any valid token (the API's description; nothing of the deployment).
- ``/admin/...``: answered only on the admin listener; there, when it is on loopback (the
  default), open: whoever reaches it is inside the gateway's container and can read the tokens
  file and the Docker socket anyway. On any other address it needs admin.
- ``/health/live``: always open (liveness probes carry no token).

Classification uses Litestar's own router (``handle_routing``, cached), so the rule applied is
the rule of the handler that would answer: no path spelling can reach a handler under another
handler's rule.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.types import ASGIApp, Receive, Scope, Send
from litestar.utils import normalize_path

from application.auth import AccessControl
from domain.auth import SIGNED_URL_FIELDS, Need, Principal, valid_prefix
from domain.auth import Scope as TokenScope
from domain.errors import Forbidden, InvalidSignature, InvalidToken, MissingToken, Unauthenticated
from entrypoints.http.asgi import Response, send_error
from entrypoints.http.objects import OBJECT_ROUTE, path_of
from entrypoints.observability.request_facts import RequestFacts

__all__ = ["AUTH_RULE", "AuthGate", "Rule", "is_loopback"]

AUTH_RULE = "auth"
_OBJECT_PREFIX = b"/object/"
_AUTHORIZATION = b"authorization"
# parse_qs refuses more fields than this (a ValueError, answered 401).
_MAX_QUERY_FIELDS = 16
_OBJECT_SCOPES = {
    "GET": TokenScope.READ,
    "HEAD": TokenScope.READ,
    "PUT": TokenScope.WRITE,
    "DELETE": TokenScope.DELETE,
}


class Rule(StrEnum):
    """What a route needs, set in its handler's ``opt`` under ``AUTH_RULE``."""

    OPEN = "open"
    OBJECT = "object"
    LIST = "list"
    METRICS = "metrics"
    ANY_TOKEN = "any_token"  # noqa: S105 - a rule's name
    ADMIN = "admin"
    ADMIN_LISTENER = "admin_listener"


# (rule, path template) of a path and method as Litestar's router resolves them.
Router = Callable[[str, str], tuple[Rule, str | None]]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AuthGate:
    """Refuses (401, 403) every request that its credential does not allow; passes the rest on."""

    def __init__(
        self,
        app: ASGIApp,
        access: AccessControl,
        route_of: Router,
        *,
        admin_port: int,
        admin_on_loopback: bool,
    ) -> None:
        self._app = app
        self._access = access
        self._route_of = route_of
        # The admin listener's port, when requests arriving there may skip the token.
        self._trusted_port = admin_port if admin_port and admin_on_loopback else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self._app(scope, receive, send)
            return
        facts = RequestFacts.of(scope["state"])
        try:
            principal = self._admit(scope, facts)
        except (Unauthenticated, Forbidden) as exc:
            await send_error(Response(send), exc)
            return
        if principal is not None and facts is not None:
            facts.principal = str(principal)
        await self._app(scope, receive, send)

    def _admit(self, scope: Scope, facts: RequestFacts | None) -> Principal | None:
        method = str(scope.get("method", ""))
        raw_path = path_of(scope)
        # Every path that starts so is the object mount's (the router's normalising keeps the
        # prefix); the fast path for the routes that carry the bytes.
        if raw_path.startswith(_OBJECT_PREFIX):
            if facts is not None:
                facts.route = OBJECT_ROUTE
            raw_id = raw_path[len(_OBJECT_PREFIX) :].decode("ascii", "backslashreplace")
            return self._object(scope, method, raw_path, raw_id)
        rule, template = self._route_of(scope["path"], method)
        if facts is not None and template is not None:
            facts.route = template
        if rule is Rule.OPEN or (rule is Rule.ADMIN_LISTENER and self._on_trusted_port(scope)):
            return None
        if rule is Rule.OBJECT:  # /object itself, or a spelling the mount then refuses
            return self._object(scope, method, raw_path, "")
        return self._bearer(scope, _need(rule, scope))

    def _on_trusted_port(self, scope: Scope) -> bool:
        server = scope.get("server")
        return server is not None and server[1] == self._trusted_port

    def _object(self, scope: Scope, method: str, raw_path: bytes, raw_id: str) -> Principal:
        authorization = _authorization(scope)
        if authorization is not None:
            return self._access.check_bearer(
                authorization, Need(_OBJECT_SCOPES.get(method), raw_id)
            )
        query = _query(scope)
        if any(name in query for name in SIGNED_URL_FIELDS):
            return self._access.check_signed(method, raw_path.decode("latin-1"), query)
        raise MissingToken(
            "this gateway needs a token (Authorization: Bearer <token>) or a signed URL"
        )

    def _bearer(self, scope: Scope, need: Need) -> Principal:
        authorization = _authorization(scope)
        if authorization is None:
            raise MissingToken("this gateway needs a token: Authorization: Bearer <token>")
        return self._access.check_bearer(authorization, need)


def _need(rule: Rule, scope: Scope) -> Need:
    if rule is Rule.LIST:
        return Need(TokenScope.LIST, _listing_prefix(scope))
    if rule is Rule.METRICS:
        return Need(TokenScope.METRICS)
    if rule is Rule.ANY_TOKEN:
        return Need(None)
    return Need(TokenScope.ADMIN)  # admin, and the admin routes off the trusted listener


def _authorization(scope: Scope) -> bytes | None:
    found: bytes | None = None
    for name, value in scope["headers"]:
        if name == _AUTHORIZATION:
            if found is not None:
                raise InvalidToken("more than one Authorization header")
            found = value
    return found


def _query(scope: Scope) -> dict[str, list[str]]:
    raw: bytes = scope.get("query_string", b"")
    if not raw:
        return {}
    try:
        return urllib.parse.parse_qs(
            raw.decode("latin-1"), keep_blank_values=True, max_num_fields=_MAX_QUERY_FIELDS
        )
    except ValueError:
        raise InvalidSignature(f"the query has more than {_MAX_QUERY_FIELDS} fields") from None


def _listing_prefix(scope: Scope) -> str:
    """The ``prefix`` a listing asks for; "" (refused to tokens with a prefix) when absent,
    repeated or not a prefix an ID could have (the route answers those 400 anyway)."""
    try:
        prefixes = _query(scope).get("prefix", [])
    except InvalidSignature:
        return ""
    if len(prefixes) != 1 or not valid_prefix(prefixes[0]):
        return ""
    return prefixes[0]


def litestar_router(
    handle_routing: Callable[..., tuple[Any, Any, Any, Any, str]], schema_path: str
) -> Router:
    """Resolve a path and method as the app's router will, into the handler's rule."""
    schema_root = normalize_path(schema_path)

    def route_of(path: str, method: str) -> tuple[Rule, str | None]:
        try:
            _, handler, _, _, template = handle_routing(path=normalize_path(path), method=method)
        except HTTPException:  # no such path (404) or method (405): any token, then that answer
            return Rule.ANY_TOKEN, None
        rule = handler.opt.get(AUTH_RULE)
        if rule is not None:
            return Rule(rule), template
        if template == schema_root or template.startswith(schema_root + "/"):
            return Rule.ANY_TOKEN, template
        return Rule.ADMIN, template  # a route that says nothing: admin only

    return route_of
