from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Iterator

from domain.errors import NoNodesAvailable
from domain.object_id import ObjectId

__all__ = ["DEFAULT_VIRTUAL_NODES", "HashRing"]

# Chosen by measurement (tests/unit/test_hash_ring.py): with 200 points per node, max/mean load over
# 100,000 IDs stays under 1.05 for 3-16 nodes, and a lookup is one bisect over n*200 integers.
DEFAULT_VIRTUAL_NODES = 200


def _position(key: str) -> int:
    # blake2b, not hash(): Python salts str hashes per process; all gateway replicas must agree.
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


class HashRing:
    """Consistent hashing of object IDs onto node names, with virtual nodes.

    The ring depends only on the *set* of names, never on the order they were discovered in, so
    every gateway instance places an ID on the same node. Adding a node moves only the IDs it now
    owns; removing one moves only the IDs it owned.
    """

    __slots__ = ("_names", "_node_at", "_positions")

    def __init__(
        self, node_names: Iterable[str], virtual_nodes: int = DEFAULT_VIRTUAL_NODES
    ) -> None:
        if virtual_nodes < 1:
            raise ValueError("virtual_nodes must be at least 1")
        self._names = frozenset(node_names)
        points = sorted(
            (_position(f"{name}#{replica}"), name)
            for name in self._names
            for replica in range(virtual_nodes)
        )
        self._positions = [position for position, _ in points]
        self._node_at = [name for _, name in points]

    @property
    def node_names(self) -> frozenset[str]:
        return self._names

    def __len__(self) -> int:
        return len(self._names)

    def owner(self, object_id: ObjectId) -> str:
        """The name of the node that holds ``object_id``."""
        for name in self._walk(object_id):
            return name
        raise AssertionError("unreachable: _walk yields at least one name")

    def preference_list(self, object_id: ObjectId, count: int | None = None) -> list[str]:
        """Distinct node names in ring order: the owner first, then its successors.

        Fallback reads, replication and rebalancing are built on this order.
        """
        wanted = len(self._names) if count is None else min(count, len(self._names))
        preferred: list[str] = []
        for name in self._walk(object_id):
            if name not in preferred:
                preferred.append(name)
                if len(preferred) == wanted:
                    break
        return preferred

    def _walk(self, object_id: ObjectId) -> Iterator[str]:
        if not self._positions:
            raise NoNodesAvailable("no storage nodes are known")
        start = bisect.bisect_right(self._positions, _position(object_id.value))
        size = len(self._positions)
        for offset in range(size):
            yield self._node_at[(start + offset) % size]
