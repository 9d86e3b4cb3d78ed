"""Health, readiness, metrics, request IDs, access logs and the OpenAPI schema, against fakes."""

import json
import logging

import pytest
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from domain.node import NodeState
from entrypoints.observability.log_output import JsonLogFormatter
from tests.fakes import make_node
from tests.unit.conftest import Harness


def test_liveness_answers_while_the_process_runs(client: TestClient) -> None:
    assert client.get("/health/live").status_code == 200


def test_readiness_lists_every_node_and_the_discovery_state_without_keys(
    client: TestClient,
) -> None:
    response = client.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    assert body["discovery"]["state"] == "ok"
    assert [node["name"] for node in body["nodes"]] == ["node-1", "node-2", "node-3"]
    assert all(node["state"] == "up" and node["address"] for node in body["nodes"])
    assert "secret" not in response.text
    assert "access" not in response.text


def test_readiness_fails_when_no_node_can_serve(client: TestClient, harness: Harness) -> None:
    harness.discovery.nodes = [make_node(n.name, NodeState.DOWN) for n in harness.discovery.nodes]
    harness.refresh(client)
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert {node["state"] for node in response.json()["nodes"]} == {"down"}


def test_readiness_shows_a_resting_node(client: TestClient, harness: Harness) -> None:
    # Unreachable, as a resting node is: the fleet's periodic probe, which closes the breaker of
    # a node that answers, must not find it well in between.
    harness.storage.unreachable_nodes = {"node-2"}
    breakers = harness.container.breakers()
    for _ in range(harness.container.settings().breaker_failure_threshold):
        breakers.record_failure("node-2")
    states = {n["name"]: n["state"] for n in client.get("/health/ready").json()["nodes"]}
    assert states == {"node-1": "up", "node-2": "resting", "node-3": "up"}


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def test_metrics_count_requests_bytes_and_nodes(client: TestClient) -> None:
    before = client.get("/metrics").text
    client.put("/object/abc", content=b"12345")
    client.get("/object/abc")
    client.get("/object/nothing")
    after = client.get("/metrics").text
    route = "/object/{object_id}"
    assert (
        metric(after, "gateway_http_requests_total", route=route, method="PUT", status="201") == 1
    )
    assert (
        metric(after, "gateway_http_requests_total", route=route, method="GET", status="404") == 1
    )
    assert (
        metric(after, "gateway_http_request_bytes_total")
        - metric(before, "gateway_http_request_bytes_total")
        == 5
    )
    assert (
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in after.splitlines()
            if line.startswith("gateway_node_requests_total{")
        )
        == 3
    )
    assert metric(after, "gateway_known_nodes", state="up") == 3
    assert metric(after, "gateway_discovery_refreshes_total") >= 1
    assert "gateway_http_request_duration_seconds_bucket" in after


def test_a_given_request_id_is_echoed_and_one_is_made_up_otherwise(client: TestClient) -> None:
    given = client.get("/object/nothing", headers={"X-Request-ID": "trace-123"})
    assert given.headers["x-request-id"] == "trace-123"
    made_up = client.get("/object/nothing")
    assert len(made_up.headers["x-request-id"]) == 32
    assert client.get("/no/such/route").headers["x-request-id"]


def test_each_request_logs_one_json_line_with_its_facts(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        client.put("/object/abc", content=b"12345", headers={"X-Request-ID": "req-42"})
    (record,) = [r for r in caplog.records if r.name == "gateway.access"]
    line = json.loads(JsonLogFormatter().format(record))
    assert line["request_id"] == "req-42"
    assert line["method"] == "PUT"
    assert line["path"] == "/object/abc"
    assert line["message"] == "PUT /object/abc 201"
    assert line["object_id"] == "abc"
    assert line["node"] in {"node-1", "node-2", "node-3"}
    assert line["status"] == 201
    assert line["bytes_in"] == 5
    assert line["duration_ms"] >= 0


def test_no_log_line_or_error_body_carries_a_secret(
    client: TestClient, harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.storage.unreachable_nodes = {n.name for n in harness.discovery.nodes}
    with caplog.at_level(logging.DEBUG):
        response = client.get("/object/abc")
    assert "secret-key-value" not in response.text
    assert all("secret-key-value" not in r.getMessage() for r in caplog.records)


def test_the_openapi_schema_documents_every_route_status_and_error_body(
    client: TestClient,
) -> None:
    schema = client.get("/schema/openapi.json").json()
    paths = schema["paths"]
    object_path = paths["/object/{object_id}"]
    assert set(object_path["put"]["responses"]) >= {"200", "201", "400", "413", "503"}
    assert set(object_path["get"]["responses"]) >= {"200", "400", "404", "503"}
    assert {"/health/live", "/health/ready", "/metrics"} <= set(paths)
    error_ref = object_path["get"]["responses"]["404"]["content"]["application/json"]["schema"]
    error_schema = schema["components"]["schemas"][error_ref["$ref"].rsplit("/", 1)[1]]
    assert set(error_schema["properties"]) == {"error", "detail"}
