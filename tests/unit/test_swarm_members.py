"""The Swarm adapter's mapping, on API payloads recorded from a single-node swarm (stack "rec")."""

import json
from pathlib import Path
from typing import Any

import pytest

from adapters.docker.swarm_members import not_a_manager, swarm_members
from domain.node import Node, NodeState

PAYLOADS = Path(__file__).parent / "payloads"
MARKER = "amazin-object-storage-node"
# The gateway's own networks, by name and by ID, as discovery reads them from its container.
OWN = frozenset({"rec_storage", "qjv9teibjvu9zbrce62mbb05h"})


def recorded(name: str) -> dict[str, Any]:
    return json.loads((PAYLOADS / f"swarm_{name}.json").read_text())


def members(name: str, own_networks: frozenset[str] | None = OWN, **kwargs: Any) -> dict[str, Node]:
    payload = recorded(name)
    return {
        node.name: node
        for node in swarm_members(
            payload["services"],
            payload["tasks"],
            name_marker=MARKER,
            node_port=9000,
            own_networks=own_networks,
            **kwargs,
        )
    }


def test_each_replicated_service_is_a_member_named_after_its_service_and_slot() -> None:
    found = members("steady")
    assert set(found) == {f"rec_amazin-object-storage-node-{i}.1" for i in (1, 2, 3)}
    assert all(node.state is NodeState.UP for node in found.values())
    assert all(node.host and node.host.startswith("10.0.1.") for node in found.values())
    assert all(node.port == 9000 for node in found.values())


def test_keys_come_from_the_service_spec_in_either_spelling() -> None:
    found = members("steady")
    assert found["rec_amazin-object-storage-node-1.1"].credentials.access_key == "node1admin"
    legacy = found["rec_amazin-object-storage-node-3.1"].credentials
    assert (legacy.access_key, legacy.secret_key) == ("node3admin", "node3-secret-key")


def test_a_replaced_task_keeps_the_members_name_and_takes_the_new_address() -> None:
    before, after = members("steady"), members("replaced")
    assert set(after) == set(before)
    replaced = "rec_amazin-object-storage-node-2.1"
    assert after[replaced].state is NodeState.UP
    assert after[replaced].host != before[replaced].host
    payload = recorded("replaced")
    running = [
        t
        for t in payload["tasks"]
        if t["DesiredState"] == "running"
        and t["Slot"] == 1
        and any(
            a["Addresses"][0].split("/")[0] == after[replaced].host
            for a in t["NetworksAttachments"]
        )
    ]
    assert len(running) == 1


def test_a_service_scaled_to_zero_stays_a_member_that_is_down() -> None:
    found = members("scaled0")
    scaled = found["rec_amazin-object-storage-node-3.1"]
    assert scaled.state is NodeState.DOWN
    assert scaled.host is None
    assert len(found) == 3


def test_a_global_service_is_a_member_per_node_and_a_keyless_one_is_skipped() -> None:
    warnings: list[str] = []
    found = members("global", warn=warnings.append)
    global_members = [name for name in found if name.startswith("rec-global-")]
    (node_id,) = {t["NodeID"] for t in recorded("global")["tasks"]}
    assert global_members == [f"rec-global-amazin-object-storage-node.{node_id}"]
    assert not [name for name in found if "nokeys" in name]
    assert any("rec-nokeys-amazin-object-storage-node" in warning for warning in warnings)


def test_services_on_no_network_the_gateway_shares_are_not_members() -> None:
    assert members("steady", own_networks=frozenset({"another_stack_storage"})) == {}


def test_outside_a_container_any_non_ingress_address_is_used() -> None:
    found = members("steady", own_networks=None)
    assert all(node.is_up for node in found.values())


@pytest.mark.parametrize(
    ("swarm", "problem"),
    [
        ({"LocalNodeState": "inactive", "ControlAvailable": False}, "not part of a swarm"),
        ({"LocalNodeState": "active", "ControlAvailable": False}, "worker, not a manager"),
        ({"LocalNodeState": "active", "ControlAvailable": True}, None),
    ],
)
def test_only_a_swarm_manager_can_discover(swarm: dict[str, Any], problem: str | None) -> None:
    found = not_a_manager({"Swarm": swarm})
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


def test_a_global_services_member_stays_on_the_ring_down_while_swarm_restarts_its_task() -> None:
    # Killed, the task is replaced by one that Swarm holds in "ready" for the restart delay.
    payload = recorded("global_restarting")
    (node_id,) = {t["NodeID"] for t in payload["tasks"]}
    assert {t["DesiredState"] for t in payload["tasks"]} == {"ready", "shutdown"}
    found = members("global_restarting", own_networks=frozenset(payload["own_networks"]))
    restarting = found[f"rec-global-amazin-object-storage-node.{node_id}"]
    assert restarting.state is NodeState.DOWN
    assert restarting.host is None
