"""The admin API (rebalance, drain, undrain) against in-memory fakes, and the command's verdicts."""

import json
from typing import Any

import pytest
from litestar.testing import TestClient

from domain.hash_ring import HashRing
from domain.object_id import ObjectId
from entrypoints.cli import EXIT_NOT_DONE, EXIT_OK, EXIT_USAGE, _follow
from entrypoints.http.app import create_app
from entrypoints.settings import Settings
from tests.unit.conftest import Harness

# Litestar's test client says it came in on port 80: here, that is the admin listener's.
ADMIN = Settings(virtual_nodes=64, admin_port=80, drain_check_seconds=0.05)


def events(response: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


@pytest.fixture
def admin() -> tuple[Harness, TestClient]:  # type: ignore[misc]
    harness = Harness(ADMIN)
    with TestClient(create_app(harness.container)) as client:
        yield harness, client


def owner(raw_id: str, names: list[str]) -> str:
    return HashRing(names, 64).owner(ObjectId(raw_id))


def test_a_dry_run_says_what_would_move_and_moves_nothing(
    admin: tuple[Harness, TestClient],
) -> None:
    harness, client = admin
    names = [node.name for node in harness.discovery.nodes]
    misplaced = next(f"id{i}" for i in range(50) if owner(f"id{i}", names) != "node-1")
    harness.storage.store("node-1", misplaced, b"x")
    before = dict(harness.storage.objects)
    answer = events(client.post("/admin/rebalance?dry_run=true"))
    assert [event["event"] for event in answer] == ["would_move", "survey", "dry_run"]
    assert answer[0] == {
        "event": "would_move",
        "id": misplaced,
        "holders": ["node-1"],
        "owner": owner(misplaced, names),
        "size": 1,
    }
    assert harness.storage.objects == before
    assert _follow(iter(answer), _Quiet()) == EXIT_NOT_DONE


def test_a_rebalance_streams_its_steps_and_a_summary(admin: tuple[Harness, TestClient]) -> None:
    harness, client = admin
    names = [node.name for node in harness.discovery.nodes]
    misplaced = next(f"id{i}" for i in range(50) if owner(f"id{i}", names) != "node-1")
    harness.storage.store("node-1", misplaced, b"x")
    answer = events(client.post("/admin/rebalance"))
    assert [event["event"] for event in answer] == ["survey", "step", "summary", "ring"]
    assert answer[1]["outcome"] == "moved"
    assert answer[2]["everything_in_place"] is True
    # Everything in place: the fleet is marked settled by its ring (reads ask replicas only).
    assert answer[3]["settled"] is True
    assert {ring for ring, _ in harness.storage.rings.values()} == {answer[3]["fingerprint"]}
    assert harness.storage.node_of(misplaced) == [owner(misplaced, names)]
    assert _follow(iter(answer), _Quiet()) == EXIT_OK


def test_a_drain_marks_the_node_empties_it_and_says_it_is_safe_to_remove(
    admin: tuple[Harness, TestClient],
) -> None:
    harness, client = admin
    for i in range(30):
        assert client.put(f"/object/drained{i}", content=b"x").status_code == 201
    assert any(holder == "node-2" for holder, _ in harness.storage.objects)
    answer = events(client.post("/admin/drain/node-2"))
    kinds = [event["event"] for event in answer]
    assert kinds[:2] == ["marked", "waiting"]
    assert answer[0] == {"event": "marked", "node": "node-2", "state": "draining"}
    assert {"event": "marked", "node": "node-2", "state": "drained"} in answer
    assert answer[-1] == {"event": "drained", "node": "node-2", "empty": True}
    assert not any(holder == "node-2" for holder, _ in harness.storage.objects)
    ready = client.get("/health/ready").json()
    assert {n["name"]: n["state"] for n in ready["nodes"]}["node-2"] == "drained"
    # New writes go elsewhere; every object still reads back.
    assert client.put("/object/afterdrain", content=b"y").status_code == 201
    assert "node-2" not in harness.storage.node_of("afterdrain")
    for i in range(30):
        assert client.get(f"/object/drained{i}").content == b"x"
    assert _follow(iter(answer), _Quiet()) == EXIT_OK
    assert client.post("/admin/undrain/node-2").json() == {"event": "undrained", "node": "node-2"}
    ready = client.get("/health/ready").json()
    assert {n["name"]: n["state"] for n in ready["nodes"]}["node-2"] == "up"


def test_draining_an_unknown_node_or_the_last_one_is_refused(
    admin: tuple[Harness, TestClient],
) -> None:
    _, client = admin
    unknown = events(client.post("/admin/drain/node-9"))
    assert unknown[-1]["event"] == "error"
    assert "not a member" in unknown[-1]["detail"]
    for name in ("node-1", "node-2"):
        harness_events = events(client.post(f"/admin/drain/{name}"))
        assert harness_events[-1]["event"] == "drained"
    last = events(client.post("/admin/drain/node-3"))
    assert last[-1]["event"] == "error"
    assert "every node" in last[-1]["detail"]
    assert _follow(iter(last), _Quiet()) == EXIT_USAGE


def test_the_admin_routes_do_not_exist_on_the_public_listener() -> None:
    harness = Harness(Settings(virtual_nodes=64, admin_port=3001))
    with TestClient(create_app(harness.container)) as client:
        for path in ("/admin/rebalance", "/admin/drain/node-1", "/admin/undrain/node-1"):
            assert client.post(path).status_code == 404


def test_a_second_job_while_one_runs_is_refused_with_409(admin: tuple[Harness, TestClient]) -> None:
    harness, client = admin
    jobs = harness.container.admin_jobs()
    client.blocking_portal.call(jobs._busy.acquire)
    try:
        response = client.post("/admin/rebalance")
    finally:
        jobs._busy.release()
    assert response.status_code == 409
    assert response.json()["error"] == "admin_busy"


class _Quiet:
    def event(self, event: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass
