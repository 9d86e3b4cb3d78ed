"""One consistent view of the fleet: the members, their marks, and the rings built from them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from domain.errors import NoNodesAvailable
from domain.hash_ring import HashRing
from domain.node import Node
from domain.object_id import ObjectId

__all__ = ["Membership"]


@dataclass(frozen=True, slots=True)
class Membership:
    """The nodes by name, which of them are draining or drained, and the rings of those names.

    ``ring`` places IDs on every member but the drained ones (which hold nothing): where an ID may
    sit. ``write_ring`` leaves the draining nodes out too: where writes go, so that a draining
    node takes no new object. ``migrated``: the members known to hold nothing under the layout
    from before versions had keys of their own (reads there need not look for it). ``settled``:
    every ID's newest version is on its replicas by the write ring (reads look nowhere else).
    """

    nodes: Mapping[str, Node]
    ring: HashRing
    write_ring: HashRing
    draining: frozenset[str] = frozenset()
    drained: frozenset[str] = frozenset()
    migrated: frozenset[str] = frozenset()
    # What places IDs now (domain.hash_ring.ring_fingerprint of the write ring), and whether every
    # member is marked settled by it: a rebalance found every ID placed by it, and no change since.
    fingerprint: str = ""
    settled: bool = False

    def owner_of(self, object_id: ObjectId) -> Node:
        """The node that takes the ID's writes, and answers for it first."""
        if not self.write_ring.node_names and self.ring.node_names:
            raise NoNodesAvailable("every storage node is draining")
        return self.nodes[self.write_ring.owner(object_id)]

    def write_walk(self, object_id: ObjectId, count: int) -> list[Node]:
        """The first ``count`` distinct nodes of the ID's walk on the write ring: its replicas,
        then the nodes a write hands off to when one of them cannot take it."""
        if not self.write_ring.node_names and self.ring.node_names:
            raise NoNodesAvailable("every storage node is draining")
        return [self.nodes[name] for name in self.write_ring.preference_list(object_id, count)]

    def preference_of(self, object_id: ObjectId, count: int) -> list[Node]:
        """Where the ID may be stored: its owner, then up to ``count - 1`` distinct successors on
        the write ring, then any node of the first ``count`` on the whole ring not yet named (a
        draining node holds what it was written before its drain)."""
        names = self.write_ring.preference_list(object_id, count)
        if self.draining:
            names += [
                name for name in self.ring.preference_list(object_id, count) if name not in names
            ]
        return [self.nodes[name] for name in names]

    def holds_legacy(self, node: Node) -> bool:
        """Whether the node may still hold objects under the layout before versions had keys."""
        return node.name not in self.migrated

    def all_names(self) -> list[str]:
        return sorted(self.nodes)
