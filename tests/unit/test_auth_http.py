"""Auth through the real app on fakes: every route against every kind of credential, signed URLs,
the admin listener, and what reaches logs and metrics."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from litestar.testing import TestClient

from domain.auth import Keyring, Scope, issue_token
from domain.object_id import ObjectId
from entrypoints.http.app import create_app
from entrypoints.settings import Settings
from tests.unit.conftest import Harness

AUTH_ON = Settings(virtual_nodes=64, auth_tokens_file="/never/read/tokens.json")
STORED = b"stored bytes"


@dataclass
class Gateway:
    harness: Harness
    client: TestClient

    def token(self, *scopes: Scope, prefix: str = "", expires_in: float | None = None) -> str:
        issued = self.harness.credentials().create_token(
            scopes, prefix=prefix, expires_in_seconds=expires_in
        )
        self.harness.reload_credentials()
        return issued.token

    def sign(self, method: str, object_id: str, expires_in: float = 900) -> str:
        signed, _ = self.harness.credentials().sign(method, ObjectId(object_id), expires_in)
        self.harness.reload_credentials()
        return signed.path_and_query

    def rotate(self) -> None:
        self.harness.credentials().rotate_signing_key()
        self.harness.reload_credentials()

    def revoke(self, token: str) -> None:
        token_id = token.split("_")[1]
        assert self.harness.credentials().revoke_token(token_id) is not None
        self.harness.reload_credentials()


def gateway_with(settings: Settings) -> Iterator[Gateway]:
    harness = Harness(settings)
    with TestClient(create_app(harness.container)) as client:
        yield Gateway(harness, client)


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    """Auth on, with ``img1`` stored (written with a token of its own)."""
    for gateway in gateway_with(AUTH_ON):
        writer = gateway.token(Scope.WRITE)
        stored = gateway.client.put("/object/img1", content=STORED, headers=auth(writer))
        assert stored.status_code == 201
        yield gateway


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    if response.request.method != "HEAD":
        assert response.json()["error"] == code
        assert response.json()["detail"]
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


# The matrix: every route x no token, a wrong one, an expired one, a revoked one, one without the
# scope, one for another prefix, and the right one.


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    scope: Scope | None  # None: any valid token
    ok: int
    # Object routes and listings: a token's prefix applies.
    named: bool

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ROUTES = [
    Route("GET", "/object/img1", Scope.READ, 200, named=True),
    Route("HEAD", "/object/img1", Scope.READ, 200, named=True),
    Route("PUT", "/object/img1", Scope.WRITE, 200, named=True),
    Route("DELETE", "/object/img1", Scope.DELETE, 204, named=True),
    Route("OPTIONS", "/object/img1", None, 204, named=True),
    Route("GET", "/objects?prefix=img", Scope.LIST, 200, named=True),
    Route("GET", "/metrics", Scope.METRICS, 200, named=False),
    Route("GET", "/health/ready", Scope.METRICS, 200, named=False),
    Route("GET", "/schema/openapi.json", None, 200, named=False),
    Route("GET", "/no/such/route", None, 404, named=False),
]
CASES = ["no token", "wrong", "expired", "revoked", "wrong scope", "wrong prefix", "right"]


def matrix() -> Iterator[object]:
    for route in ROUTES:
        for case in CASES:
            if case == "wrong scope" and route.scope is None:
                continue  # any scope is the right one
            yield pytest.param(route, case, id=f"{route}-{case}")


def credential(gateway: Gateway, route: Route, case: str) -> dict[str, str]:
    right = route.scope or Scope.READ
    if case == "no token":
        return {}
    if case == "wrong":  # well-formed, never issued
        return auth(issue_token(Keyring(), [right], now=0).token)
    if case == "expired":
        token = gateway.token(right, expires_in=60)
        gateway.harness.clock.advance(61)
        return auth(token)
    if case == "revoked":
        token = gateway.token(right)
        gateway.revoke(token)
        return auth(token)
    if case == "wrong scope":
        others = [
            s for s in Scope if s is not right and not (right is Scope.METRICS and s is Scope.ADMIN)
        ]
        return auth(gateway.token(*others))
    if case == "wrong prefix":
        return auth(gateway.token(right, prefix="doc"))
    return auth(gateway.token(right))


EXPECTED_REFUSALS = {
    "no token": (401, "missing_token"),
    "wrong": (401, "invalid_token"),
    "expired": (401, "expired_token"),
    "revoked": (401, "invalid_token"),
    "wrong scope": (403, "insufficient_scope"),
}


@pytest.mark.parametrize(("route", "case"), list(matrix()))
def test_each_route_answers_each_credential_as_its_scope_and_prefix_say(
    gateway: Gateway, route: Route, case: str
) -> None:
    headers = credential(gateway, route, case)
    response = gateway.client.request(
        route.method, route.path, headers=headers, content=b"new" if route.method == "PUT" else None
    )
    if case in EXPECTED_REFUSALS:
        assert_refused(response, *EXPECTED_REFUSALS[case])
    elif case == "wrong prefix" and route.named:
        assert_refused(response, 403, "prefix_not_allowed")
    else:
        assert response.status_code == route.ok, response.text
        if route.method == "GET" and route.path == "/object/img1":
            assert response.content == STORED
    # A refused write or delete changed nothing.
    if response.status_code in (401, 403):
        reader = gateway.token(Scope.READ)
        assert gateway.client.get("/object/img1", headers=auth(reader)).content == STORED


def test_health_live_answers_with_no_token_and_with_a_wrong_one(gateway: Gateway) -> None:
    assert gateway.client.get("/health/live").status_code == 200
    assert gateway.client.get("/health/live", headers=auth("nonsense")).status_code == 200


def test_nothing_but_health_live_answers_without_a_credential(gateway: Gateway) -> None:
    app = gateway.client.app
    checked = 0
    for route in app.routes:
        path = re.sub(r"\{[^}]+\}", "x1", route.path)
        methods = sorted(getattr(route, "methods", None) or {"GET"})
        for method in methods:
            response = gateway.client.request(method, path)
            if path == "/health/live" and method == "GET":
                assert response.status_code == 200
            else:
                assert_refused(response, 401, "missing_token")
            checked += 1
    assert checked >= 10
    for method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS", "POST", "PATCH"):
        for path in (
            "/object/abc",
            "/object/not-valid",
            "/object/",
            "/object",
            "/",
            "/admin/rebalance",
        ):
            assert_refused(gateway.client.request(method, path), 401, "missing_token")


@pytest.mark.parametrize(
    "path",
    [
        "//metrics",
        "/metrics/",
        "/health//ready",
        "/objects/",
        "//object/img1",
        "/object//img1",
        "/schema/",
    ],
)
def test_no_spelling_of_a_path_reaches_a_route_without_a_credential(
    gateway: Gateway, path: str
) -> None:
    assert_refused(gateway.client.get(path), 401, "missing_token")


def test_a_metrics_token_cannot_reach_an_object_by_another_spelling(gateway: Gateway) -> None:
    token = gateway.token(Scope.METRICS)
    for path in ("/object/img1", "//object/img1", "/object//img1", "/object"):
        response = gateway.client.get(path, headers=auth(token))
        assert response.status_code in (403, 404, 400), (path, response.status_code)
        assert response.content != STORED


def test_two_authorization_headers_are_an_invalid_token(gateway: Gateway) -> None:
    token = gateway.token(Scope.READ)
    response = gateway.client.get(
        "/object/img1",
        headers=[("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")],
    )
    assert_refused(response, 401, "invalid_token")


def test_a_token_made_while_serving_works_after_the_reload_and_stops_when_revoked(
    gateway: Gateway,
) -> None:
    issued = gateway.harness.credentials().create_token([Scope.READ])
    assert_refused(
        gateway.client.get("/object/img1", headers=auth(issued.token)), 401, "invalid_token"
    )
    gateway.harness.reload_credentials()
    assert gateway.client.get("/object/img1", headers=auth(issued.token)).content == STORED
    gateway.revoke(issued.token)
    assert_refused(
        gateway.client.get("/object/img1", headers=auth(issued.token)), 401, "invalid_token"
    )


def test_a_token_with_a_prefix_lists_only_that_prefix(gateway: Gateway) -> None:
    token = gateway.token(Scope.LIST, prefix="img")
    listed = gateway.client.get("/objects?prefix=img", headers=auth(token))
    assert listed.status_code == 200
    assert [entry["id"] for entry in listed.json()["objects"]] == ["img1"]
    assert gateway.client.get("/objects?prefix=img1", headers=auth(token)).status_code == 200
    for query in (
        "",
        "?prefix=",
        "?prefix=doc",
        "?prefix=img&prefix=doc",
        "?prefix=i%6Dg!",
        "?after=img",
    ):
        assert_refused(
            gateway.client.get(f"/objects{query}", headers=auth(token)), 403, "prefix_not_allowed"
        )


# Signed URLs.


def test_a_signed_url_reads_its_object_without_a_token(gateway: Gateway) -> None:
    url = gateway.sign("GET", "img1")
    response = gateway.client.get(url)
    assert response.status_code == 200
    assert response.content == STORED
    assert gateway.client.head(url).status_code == 200


def test_a_signed_url_writes_and_deletes_only_what_it_was_signed_for(gateway: Gateway) -> None:
    put = gateway.sign("PUT", "img2")
    assert gateway.client.put(put, content=b"via a signed URL").status_code == 201
    assert gateway.client.get(gateway.sign("GET", "img2")).content == b"via a signed URL"
    assert_refused(gateway.client.get(put), 401, "invalid_signature")
    assert_refused(gateway.client.delete(put), 401, "invalid_signature")
    other = put.replace("/object/img2", "/object/img1")
    assert_refused(gateway.client.put(other, content=b"x"), 401, "invalid_signature")
    delete = gateway.sign("DELETE", "img2")
    assert gateway.client.delete(delete).status_code == 204


def test_a_signed_url_answers_expired_signature_from_its_expiry_on(gateway: Gateway) -> None:
    url = gateway.sign("GET", "img1", expires_in=60)
    gateway.harness.clock.advance(59)
    assert gateway.client.get(url).status_code == 200
    gateway.harness.clock.advance(1)
    assert_refused(gateway.client.get(url), 401, "expired_signature")


def test_a_tampered_signed_url_is_an_invalid_signature(gateway: Gateway) -> None:
    url = gateway.sign("GET", "img1", expires_in=60)
    expires = re.search(r"expires=(\d+)", url)
    assert expires is not None
    later = url.replace(expires.group(0), f"expires={int(expires.group(1)) + 86400}")
    assert_refused(gateway.client.get(later), 401, "invalid_signature")
    assert_refused(
        gateway.client.get(url[:-1] + ("0" if url[-1] != "0" else "1")), 401, "invalid_signature"
    )
    assert_refused(gateway.client.get(url + "&signature=00"), 401, "invalid_signature")
    assert_refused(
        gateway.client.get("/object/img1?signature=" + "0" * 64), 401, "invalid_signature"
    )


def test_a_rotation_keeps_urls_of_the_key_before_and_revokes_the_one_before_that(
    gateway: Gateway,
) -> None:
    first = gateway.sign("GET", "img1", expires_in=86400)
    gateway.rotate()
    second = gateway.sign("GET", "img1", expires_in=86400)
    assert gateway.client.get(first).status_code == 200
    assert gateway.client.get(second).status_code == 200
    gateway.rotate()
    assert_refused(gateway.client.get(first), 401, "revoked_key")
    assert gateway.client.get(second).status_code == 200


def test_a_signed_url_opens_no_other_route(gateway: Gateway) -> None:
    url = gateway.sign("GET", "img1")
    query = url.partition("?")[2]
    for path in ("/objects", "/metrics", "/health/ready", "/schema/openapi.json"):
        assert_refused(gateway.client.get(f"{path}?{query}"), 401, "missing_token")


def test_a_token_wins_over_a_signature_in_the_same_request(gateway: Gateway) -> None:
    url = gateway.sign("GET", "img1")
    assert_refused(gateway.client.get(url, headers=auth("ogw_00000000_x")), 401, "invalid_token")


# The admin listener.


def test_the_admin_routes_on_a_loopback_admin_listener_need_no_token() -> None:
    # The test client's requests arrive on port 80: that is the admin listener here.
    settings = Settings(virtual_nodes=64, admin_port=80, auth_tokens_file="/never/read")
    for gateway in gateway_with(settings):
        assert gateway.client.post("/admin/undrain/node-1").status_code == 200
        # The other routes on that listener still want a token.
        assert_refused(gateway.client.get("/object/img1"), 401, "missing_token")
        assert_refused(gateway.client.get("/metrics"), 401, "missing_token")


def test_the_admin_routes_off_loopback_need_an_admin_token() -> None:
    settings = Settings(
        virtual_nodes=64, admin_host="0.0.0.0", admin_port=80, auth_tokens_file="/never/read"
    )
    for gateway in gateway_with(settings):
        assert_refused(gateway.client.post("/admin/undrain/node-1"), 401, "missing_token")
        reader = gateway.token(Scope.READ, Scope.METRICS)
        assert_refused(
            gateway.client.post("/admin/undrain/node-1", headers=auth(reader)),
            403,
            "insufficient_scope",
        )
        admin = gateway.token(Scope.ADMIN)
        assert gateway.client.post("/admin/undrain/node-1", headers=auth(admin)).status_code == 200


def test_the_admin_routes_stay_404_on_the_public_port_with_an_admin_token(gateway: Gateway) -> None:
    admin = gateway.token(Scope.ADMIN)
    assert gateway.client.post("/admin/undrain/node-1", headers=auth(admin)).status_code == 404


# What leaves the gateway: log lines, metrics, error bodies.


def test_no_token_or_signature_reaches_a_log_line_a_metric_or_an_error_body(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    token = gateway.token(Scope.READ, Scope.METRICS)
    url = gateway.sign("GET", "img1")
    signature = url.rpartition("signature=")[2]
    bodies = []
    with caplog.at_level(logging.DEBUG):
        bodies.append(gateway.client.get("/object/img1", headers=auth(token)).text)
        bodies.append(gateway.client.get(url).text)
        bodies.append(gateway.client.get("/object/img1", headers=auth(token + "x")).text)
        bodies.append(gateway.client.get(url + "0").text)
        bodies.append(gateway.client.get("/object/doc1", headers={"Authorization": token}).text)
        metrics = gateway.client.get("/metrics", headers=auth(token)).text
    # The gateway's own records (the test client's httpx logs the URLs it requests).
    logged = "\n".join(
        record.getMessage() + repr(record.__dict__)
        for record in caplog.records
        if not record.name.startswith(("httpx", "httpcore"))
    )
    for secret in (token, token.rpartition("_")[2], signature):
        assert secret not in logged
        assert secret not in metrics
        assert all(secret not in body for body in bodies)


def test_the_access_log_names_the_token_or_key_that_was_used(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    token = gateway.token(Scope.READ)
    url = gateway.sign("GET", "img1")
    key_id = re.search(r"key=([0-9a-f]+)", url)
    assert key_id is not None
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        gateway.client.get("/object/img1", headers=auth(token))
        gateway.client.get(url)
        gateway.client.get("/object/img1")
    lines = [r for r in caplog.records if r.name == "gateway.access"]
    assert [getattr(r, "auth", None) for r in lines] == [
        f"token {token.split('_')[1]}",
        f"signed {key_id.group(1)}",
        None,
    ]
    assert [getattr(r, "status", None) for r in lines] == [200, 200, 401]


def test_refusals_are_counted_under_their_route(gateway: Gateway) -> None:
    gateway.client.get("/object/img1")
    gateway.client.get("/metrics")
    gateway.client.get("/object/random123")
    metrics = gateway.client.get("/metrics", headers=auth(gateway.token(Scope.METRICS))).text
    assert (
        'gateway_http_requests_total{method="GET",route="/object/{object_id}",status="401"} 2.0'
        in metrics
    )
    assert 'gateway_http_requests_total{method="GET",route="/metrics",status="401"} 1.0' in metrics


def test_the_schema_says_requests_need_a_bearer_token(gateway: Gateway) -> None:
    schema = gateway.client.get("/schema/openapi.json", headers=auth(gateway.token(Scope.READ)))
    document = schema.json()
    assert document["security"] == [{"bearerToken": []}]
    assert document["components"]["securitySchemes"]["bearerToken"]["scheme"] == "bearer"
    assert "/object/{object_id}" in document["paths"]


# Auth off: the contract as it was.


def test_with_auth_off_authorization_headers_and_signatures_change_nothing(
    client: TestClient,
) -> None:
    assert client.put("/object/abc", content=b"open", headers=auth("whatever")).status_code == 201
    assert client.get("/object/abc?expires=1&key=x&signature=y").content == b"open"
    assert client.get("/metrics").status_code == 200
    assert client.get("/objects", headers={"Authorization": "Basic eDp5"}).status_code == 200
    document = client.get("/schema/openapi.json").json()
    assert "security" not in document
    assert "securitySchemes" not in document["components"]
