"""GATEWAY_REPLICAS and its quorums: checked at start-up, wired through the app, and visible in
readiness, metrics and the access log."""

import json
import logging
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from domain.node import NodeState
from domain.replication import ReplicationPolicy
from entrypoints.http.app import create_app
from entrypoints.observability.log_output import JsonLogFormatter
from entrypoints.settings import Settings
from tests.fakes import make_node
from tests.unit.conftest import Harness
from tests.unit.test_operability import metric


def test_one_copy_per_id_is_the_default() -> None:
    settings = Settings.from_environ({})
    assert settings.replication == ReplicationPolicy(1, 1, 1)
    assert not settings.replicated


@pytest.mark.parametrize(
    ("replicas", "write", "read"), [(2, 2, 1), (3, 2, 2), (4, 3, 2), (5, 3, 3)]
)
def test_the_quorums_default_to_a_majority_and_what_meets_it(
    replicas: int, write: int, read: int
) -> None:
    settings = Settings.from_environ({"GATEWAY_REPLICAS": str(replicas)})
    assert settings.replication == ReplicationPolicy(replicas, write, read)


def test_given_quorums_are_taken_as_given() -> None:
    settings = Settings.from_environ(
        {"GATEWAY_REPLICAS": "3", "GATEWAY_WRITE_QUORUM": "3", "GATEWAY_READ_QUORUM": "1"}
    )
    assert settings.replication == ReplicationPolicy(3, 3, 1)


@pytest.mark.parametrize(
    ("environ", "complaint"),
    [
        ({"GATEWAY_REPLICAS": "0"}, "replicas must be at least 1"),
        ({"GATEWAY_REPLICAS": "3", "GATEWAY_WRITE_QUORUM": "4"}, "write quorum must be between"),
        ({"GATEWAY_REPLICAS": "3", "GATEWAY_READ_QUORUM": "0"}, "read quorum must be between"),
        (
            {"GATEWAY_REPLICAS": "3", "GATEWAY_WRITE_QUORUM": "1", "GATEWAY_READ_QUORUM": "1"},
            "could miss the last acknowledged write",
        ),
    ],
)
def test_impossible_combinations_are_refused_at_start_up_naming_the_variables(
    environ: dict[str, str], complaint: str
) -> None:
    with pytest.raises(ValueError, match="GATEWAY_REPLICAS=") as refused:
        Settings.from_environ(environ)
    assert complaint in str(refused.value)


@pytest.fixture
def replicated() -> Harness:
    return Harness(Settings(virtual_nodes=64, replicas=3))


@pytest.fixture
def replicated_client(replicated: Harness) -> Iterator[TestClient]:
    with TestClient(create_app(replicated.container)) as test_client:
        yield test_client


def test_through_the_app_an_object_lands_on_three_nodes_and_one_down_costs_nothing(
    replicated_client: TestClient, replicated: Harness
) -> None:
    client = replicated_client
    assert client.put("/object/abc", content=b"hello").status_code == 201
    assert len(replicated.storage.node_of("abc")) == 3
    replicated.discovery.nodes = [
        make_node(n.name, NodeState.DOWN) if n.name == "node-2" else n
        for n in replicated.discovery.nodes
    ]
    replicated.storage.unreachable_nodes = {"node-2"}
    replicated.refresh(client)

    assert client.get("/object/abc").content == b"hello"
    assert client.put("/object/abc", content=b"again").status_code == 200
    assert client.delete("/object/abc").status_code == 204
    assert client.get("/object/abc").status_code == 404
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["replication"] == {
        "replicas": 3,
        "write_quorum": 2,
        "read_quorum": 2,
        "nodes_needed": 2,
    }


def test_two_nodes_down_of_three_is_a_503_naming_the_quorum_and_the_gateway_is_not_ready(
    replicated_client: TestClient, replicated: Harness
) -> None:
    client = replicated_client
    replicated.discovery.nodes = [
        make_node(n.name, NodeState.DOWN) if n.name != "node-1" else n
        for n in replicated.discovery.nodes
    ]
    replicated.refresh(client)

    response = client.put("/object/abc", content=b"x")

    assert response.status_code == 503
    assert response.json()["error"] == "quorum_unavailable"
    assert replicated.storage.node_of("abc") == []
    assert client.get("/object/abc").json()["error"] == "quorum_unavailable"
    assert client.get("/health/ready").status_code == 503
    text = client.get("/metrics").text
    assert metric(text, "gateway_quorum_refusals_total") == 2


def test_metrics_and_the_access_log_say_how_many_replicas_each_answer_had(
    replicated_client: TestClient, replicated: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    client = replicated_client
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        client.put("/object/abc", content=b"x")
        client.get("/object/abc")
    put_line, get_line = (
        json.loads(JsonLogFormatter().format(r))
        for r in caplog.records
        if r.name == "gateway.access"
    )
    assert put_line["replicas"] == 3
    assert get_line["replicas"] == 2

    # Two replicas lose their copy: whichever two a read asks, one of them is repaired.
    del replicated.storage.records[("node-1", "abc")]
    del replicated.storage.records[("node-2", "abc")]
    assert client.get("/object/abc").content == b"x"
    text = client.get("/metrics").text
    assert metric(text, "gateway_read_repairs_total", outcome="scheduled") == 1
    for name in (
        "gateway_degraded_writes_total",
        "gateway_handoff_copies_total",
        "gateway_rehomed_writes_total",
    ):
        assert metric(text, name) == 0, name


def test_with_one_copy_per_id_log_lines_carry_no_replica_count(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        client.put("/object/abc", content=b"x")
    (record,) = [r for r in caplog.records if r.name == "gateway.access"]
    assert "replicas" not in json.loads(JsonLogFormatter().format(record))
