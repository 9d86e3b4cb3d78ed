"""Swarm's services and tasks as members of the fleet (pure: tested on recorded API payloads).

Under plain Docker a node's identity is its container name. Under Swarm a replaced task (removed,
crashed, or its host gone) gets a new container, so a new name; the identity has to be what Swarm
keeps: ``<service name>.<slot>`` for a replicated service, ``<service name>.<node id>`` for a global
one. A manager's API sees every service and task of the swarm, on every host.

Membership: for each service whose name contains the marker, its slots ``1..replicas`` (a service
scaled to 0 keeps slot 1, down, the way a stopped container stays a member: its IDs answer 503,
not another node's 404), or for a global service each node it runs (or is restarting) a task on.
A member is up when the task Swarm wants running in its place is running and has an address on an
overlay network the gateway shares. Keys come from the service's container spec, read as MinIO
reads them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from adapters.docker.keys import credentials_from_env
from domain.node import Node, NodeState

__all__ = ["not_a_manager", "swarm_fingerprint", "swarm_members"]

logger = logging.getLogger(__name__)

_WANTED_STATES = frozenset({"running", "ready"})


def swarm_members(
    services: Iterable[Mapping[str, Any]],
    tasks: Iterable[Mapping[str, Any]],
    *,
    name_marker: str,
    node_port: int,
    own_networks: frozenset[str] | None,
    warn: Callable[[str], None] = logger.warning,
) -> list[Node]:
    """The fleet's members from the API's service and task listings (pure: tested on recordings).

    ``own_networks`` are the names of the networks the gateway's own container is on (None when it
    does not run in a container: then any non-ingress address will do).
    """
    tasks_by_service: dict[str, list[Mapping[str, Any]]] = {}
    for task in tasks:
        tasks_by_service.setdefault(str(task.get("ServiceID")), []).append(task)
    members: list[Node] = []
    for service in sorted(services, key=lambda s: str(s["Spec"]["Name"])):
        spec = service["Spec"]
        name = str(spec["Name"])
        if name_marker not in name:
            continue
        if own_networks is not None and not _attached_to(spec) & own_networks:
            continue  # not on a network the gateway shares: another stack's, unreachable anyway
        container_spec = spec.get("TaskTemplate", {}).get("ContainerSpec", {})
        credentials = credentials_from_env(container_spec.get("Env"))
        if credentials is None:
            warn(f"skipping service {name}: it sets no MinIO keys")
            continue
        # Swarm's restart supervisor (and a rolling update) holds a replacement task in "ready"
        # for the restart delay: its place stays a member, down, until the task runs.
        wanted = [
            task
            for task in tasks_by_service.get(str(service["ID"]), [])
            if task.get("DesiredState") in _WANTED_STATES
        ]
        mode = spec.get("Mode", {})
        if "Global" in mode:
            places = {str(task.get("NodeID")): f"{name}.{task.get('NodeID')}" for task in wanted}
            key = "NodeID"
        else:
            replicas = int(mode.get("Replicated", {}).get("Replicas", 1) or 0)
            places = {str(slot): f"{name}.{slot}" for slot in range(1, max(replicas, 1) + 1)}
            key = "Slot"
        for place, identity in sorted(places.items()):
            candidates = [task for task in wanted if str(task.get(key)) == place]
            current = max(candidates, key=_version) if candidates else None
            host = _address(current, own_networks) if current is not None else None
            running = (
                current is not None
                and current.get("DesiredState") == "running"
                and current.get("Status", {}).get("State") == "running"
            )
            up = running and host is not None
            members.append(
                Node(
                    name=identity,
                    host=host if up else None,
                    port=node_port,
                    credentials=credentials,
                    state=NodeState.UP if up else NodeState.DOWN,
                )
            )
    return members


def _attached_to(spec: Mapping[str, Any]) -> set[str]:
    networks = [
        *(spec.get("TaskTemplate", {}).get("Networks") or ()),
        *(spec.get("Networks") or ()),
    ]
    return {str(network.get("Target")) for network in networks}


def _version(task: Mapping[str, Any]) -> int:
    return int(task.get("Version", {}).get("Index", 0))


def _address(task: Mapping[str, Any], own_networks: frozenset[str] | None) -> str | None:
    for attachment in task.get("NetworksAttachments") or ():
        network = attachment.get("Network", {})
        network_name = network.get("Spec", {}).get("Name", "")
        if own_networks is None:
            if network.get("Spec", {}).get("Ingress"):
                continue
        elif network_name not in own_networks and network.get("ID") not in own_networks:
            continue
        for address in attachment.get("Addresses") or ():
            return str(address).split("/", 1)[0]
    return None


def not_a_manager(info: Mapping[str, Any]) -> str | None:
    """Why a daemon (its ``docker info``) cannot serve swarm discovery; None when it can."""
    swarm = info.get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active":
        return (
            "GATEWAY_DISCOVERY=swarm, but this Docker daemon is not part of a swarm "
            "(docker swarm init, or run the gateway on a manager)"
        )
    if not swarm.get("ControlAvailable"):
        return (
            "GATEWAY_DISCOVERY=swarm, but this Docker daemon is a swarm worker, not a manager: "
            "only managers see every service and task (place the gateway on managers)"
        )
    return None


def swarm_fingerprint(
    services: Sequence[Mapping[str, Any]], tasks: Sequence[Mapping[str, Any]]
) -> str:
    # What the members depend on; a change in it is a change of the fleet.
    summary = sorted(
        [("service", s["ID"], s.get("Version", {}).get("Index")) for s in services]
        + [
            (
                "task",
                t["ID"],
                t.get("DesiredState"),
                t.get("Status", {}).get("State"),
                json.dumps(t.get("NetworksAttachments") or [], sort_keys=True, default=str),
            )
            for t in tasks
        ],
        key=str,
    )
    return hashlib.sha256(json.dumps(summary, default=str).encode()).hexdigest()
