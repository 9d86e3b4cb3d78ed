"""The HTTP layer against in-memory fakes: statuses, headers and error bodies."""

import pytest
from litestar.testing import TestClient

from domain.errors import DiscoveryUnavailable
from entrypoints.http.app import create_app
from entrypoints.settings import Settings
from tests.unit.conftest import Harness


def test_put_of_a_new_object_answers_201_with_its_etag(client: TestClient) -> None:
    response = client.put("/object/abc", content=b"hello")
    assert response.status_code == 201
    assert response.json()["id"] == "abc"
    assert response.json()["size"] == 5
    assert response.headers["etag"] == f'"{response.json()["etag"]}"'


def test_put_over_an_existing_object_answers_200(client: TestClient) -> None:
    client.put("/object/abc", content=b"old")
    response = client.put("/object/abc", content=b"new")
    assert response.status_code == 200
    assert client.get("/object/abc").content == b"new"


def test_get_returns_the_body_with_length_type_and_etag(client: TestClient) -> None:
    body = bytes(range(256)) * 100
    put = client.put("/object/abc", content=body, headers={"Content-Type": "image/png"})
    response = client.get("/object/abc")
    assert response.status_code == 200
    assert response.content == body
    assert response.headers["content-length"] == str(len(body))
    assert response.headers["content-type"] == "image/png"
    assert response.headers["etag"] == put.headers["etag"]


def test_get_without_a_stored_type_answers_octet_stream(client: TestClient) -> None:
    client.put("/object/abc", content=b"x", headers={"Content-Type": ""})
    assert client.get("/object/abc").headers["content-type"] == "application/octet-stream"


def test_an_empty_body_round_trips(client: TestClient) -> None:
    assert client.put("/object/empty", content=b"").status_code == 201
    response = client.get("/object/empty")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == "0"


def test_get_of_an_unknown_id_returns_404_with_a_json_error(client: TestClient) -> None:
    response = client.get("/object/nothing")
    assert response.status_code == 404
    assert response.json()["error"] == "object_not_found"
    assert response.json()["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "/object/a-b",
        "/object/" + "a" * 33,
        "/object/",
        "/object",
        "/object/a/b",
        "/object/a%20b",
        "/object/%C3%A9",
    ],
)
@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_an_invalid_id_returns_400_with_a_json_error(
    client: TestClient,
    method: str,
    path: str,
) -> None:
    response = client.request(method, path, content=b"x" if method == "PUT" else None)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_object_id"


def test_a_stopped_owner_gives_503_with_retry_after_and_names_the_node(
    client: TestClient,
    harness: Harness,
) -> None:
    assert client.put("/object/abc", content=b"v1").status_code == 201
    stopped = harness.stop_owner_of("abc")
    harness.refresh(client)
    for response in (client.get("/object/abc"), client.put("/object/abc", content=b"v2")):
        assert response.status_code == 503
        assert response.json()["error"] == "node_unavailable"
        assert stopped in response.json()["detail"]
        assert response.headers["retry-after"]
    assert harness.storage.node_of("abc") == [stopped]


def test_an_unreachable_node_gives_503(client: TestClient, harness: Harness) -> None:
    harness.storage.unreachable_nodes = {n.name for n in harness.discovery.nodes}
    response = client.get("/object/abc")
    assert response.status_code == 503
    assert response.json()["error"] == "node_unavailable"


def test_an_unreachable_docker_daemon_gives_503_naming_discovery(harness: Harness) -> None:
    harness.discovery.failure = DiscoveryUnavailable("the Docker daemon cannot be reached")
    with TestClient(create_app(harness.container)) as client:
        response = client.get("/object/abc")
    assert response.status_code == 503
    assert response.json() == {
        "error": "discovery_unavailable",
        "detail": "the Docker daemon cannot be reached",
    }


def test_a_known_membership_keeps_serving_when_docker_becomes_unreachable(
    client: TestClient, harness: Harness
) -> None:
    assert client.put("/object/abc", content=b"kept").status_code == 201
    harness.discovery.failure = DiscoveryUnavailable("the Docker daemon cannot be reached")
    with pytest.raises(DiscoveryUnavailable):
        harness.refresh(client)
    assert client.get("/object/abc").content == b"kept"
    ready = client.get("/health/ready").json()
    assert ready["discovery"]["state"] == "degraded"
    assert ready["discovery"]["last_error"] == "the Docker daemon cannot be reached"


def test_no_known_nodes_gives_503(client: TestClient, harness: Harness) -> None:
    harness.discovery.nodes = []
    harness.refresh(client)
    response = client.put("/object/abc", content=b"x")
    assert response.status_code == 503
    assert response.json()["error"] == "no_nodes_available"


def test_unknown_routes_answer_with_the_same_json_error_shape(client: TestClient) -> None:
    response = client.get("/nothing/here")
    assert response.status_code == 404
    assert set(response.json()) == {"error", "detail"}
    response = client.patch("/object/abc")
    assert response.status_code == 405
    assert set(response.json()) == {"error", "detail"}


def test_bodies_over_10_mb_are_accepted_by_default(client: TestClient) -> None:
    body = b"x" * (11 * 1024 * 1024)
    assert client.put("/object/big", content=body).status_code == 201
    assert client.get("/object/big").content == body


def test_a_configured_maximum_body_size_answers_413() -> None:
    harness = Harness(Settings(virtual_nodes=64, max_body_bytes=10))
    with TestClient(create_app(harness.container)) as client:
        assert client.put("/object/small", content=b"x" * 10).status_code == 201
        response = client.put("/object/big", content=b"x" * 11)
        assert response.status_code == 413
        assert set(response.json()) == {"error", "detail"}
    assert harness.storage.node_of("big") == []


@pytest.mark.parametrize(
    "path", ["/object/abc/", "/object//abc", "/object/abc/def", "/object/%61bc"]
)
def test_path_aliases_of_an_id_are_400_not_served_as_the_id(client: TestClient, path: str) -> None:
    assert client.put("/object/abc", content=b"x").status_code == 201
    response = client.get(path)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_object_id"


def test_a_path_that_only_starts_like_the_object_route_is_404(client: TestClient) -> None:
    response = client.get("/objectsx/abc")
    assert response.status_code == 404
    assert set(response.json()) == {"error", "detail"}


def test_options_lists_every_method_of_an_object(client: TestClient) -> None:
    response = client.options("/object/abc")
    assert response.status_code == 204
    assert {m.strip() for m in response.headers["allow"].split(",")} >= {
        "GET",
        "HEAD",
        "PUT",
        "OPTIONS",
    }


def test_an_unsupported_method_is_405_with_allow(client: TestClient) -> None:
    response = client.patch("/object/abc", content=b"x")
    assert response.status_code == 405
    assert "GET" in response.headers["allow"]
    assert response.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize(
    "content_type",
    ["text", "text/", "/plain", "text/plain;charset", "a b/c", 'text/plain; x="unclosed'],
)
def test_a_malformed_content_type_is_400_invalid_request(
    client: TestClient, harness: Harness, content_type: str
) -> None:
    response = client.put("/object/abc", content=b"x", headers={"Content-Type": content_type})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert harness.storage.node_of("abc") == []


def test_a_content_type_longer_than_256_characters_is_400(client: TestClient) -> None:
    response = client.put(
        "/object/abc", content=b"x", headers={"Content-Type": "text/" + "x" * 252}
    )
    assert response.status_code == 400
    assert "256" in response.json()["detail"]


@pytest.mark.parametrize(
    "content_type", ["text/plain", 'text/plain; charset="utf-8"', "application/vnd.a+json;v=2"]
)
def test_the_stored_content_type_comes_back_verbatim(client: TestClient, content_type: str) -> None:
    client.put("/object/abc", content=b"x", headers={"Content-Type": content_type})
    assert client.get("/object/abc").headers["content-type"] == content_type


def test_runs_of_whitespace_in_the_content_type_are_stored_as_one_space(
    client: TestClient,
) -> None:
    client.put("/object/abc", content=b"x", headers={"Content-Type": "text/plain;\t  charset=a"})
    assert client.get("/object/abc").headers["content-type"] == "text/plain; charset=a"


def test_a_non_numeric_content_length_is_400(client: TestClient) -> None:
    response = client.put("/object/abc", content=b"x", headers={"Content-Length": "1x"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
