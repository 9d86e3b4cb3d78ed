from __future__ import annotations

import bisect
import hashlib
import struct
from array import array
from collections.abc import Iterable, Iterator

from domain.errors import NoNodesAvailable
from domain.object_id import ObjectId

__all__ = ["DEFAULT_VIRTUAL_NODES", "HashRing", "ring_fingerprint"]

# Chosen by measurement (tests/unit/test_hash_ring.py): random points balance slowly, and with fewer
# than a few thousand per node the max/mean load of 3-16 nodes exceeds 1.05 (200 points: 1.16 for
# 16 nodes; 1,000: 1.10; 4,096: 1.048; 8,192: 1.03). Positions live in compact arrays (16 nodes:
# about 1.3 MB, built in about 0.2 s, only when membership changes); a lookup is one bisect.
DEFAULT_VIRTUAL_NODES = 8192


_POSITIONS_PER_DIGEST = 8
_POSITION = struct.Struct(">Q")
_POSITIONS = struct.Struct(f">{_POSITIONS_PER_DIGEST}Q")


def _position(key: str) -> int:
    # blake2b, not hash(): Python salts str hashes per process; all gateway replicas must agree.
    return int(_POSITION.unpack(hashlib.blake2b(key.encode(), digest_size=8).digest())[0])


def _virtual_node_positions(name: str, count: int) -> list[int]:
    # One 64-byte digest yields eight 64-bit positions: building a ring of thousands of points per
    # node costs an eighth of the hashing.
    positions: list[int] = []
    for block in range(-(-count // _POSITIONS_PER_DIGEST)):
        digest = hashlib.blake2b(f"{name}#{block}".encode(), digest_size=64).digest()
        positions.extend(_POSITIONS.unpack(digest))
    return positions[:count]


class HashRing:
    """Consistent hashing of object IDs onto node names, with virtual nodes.

    The ring depends only on the *set* of names, never on the order they were discovered in, so
    every gateway instance places an ID on the same node. Adding a node moves only the IDs it now
    owns; removing one moves only the IDs it owned.
    """

    __slots__ = ("_names", "_node_at", "_positions", "_sorted_names", "_virtual_nodes")

    def __init__(
        self, node_names: Iterable[str], virtual_nodes: int = DEFAULT_VIRTUAL_NODES
    ) -> None:
        if virtual_nodes < 1:
            raise ValueError("virtual_nodes must be at least 1")
        self._virtual_nodes = virtual_nodes
        self._names = frozenset(node_names)
        self._sorted_names = sorted(self._names)
        points = sorted(
            (position, index)
            for index, name in enumerate(self._sorted_names)
            for position in _virtual_node_positions(name, virtual_nodes)
        )
        self._positions = array("Q", (position for position, _ in points))
        self._node_at = array("I", (index for _, index in points))

    @property
    def virtual_nodes(self) -> int:
        return self._virtual_nodes

    @property
    def node_names(self) -> frozenset[str]:
        return self._names

    def owner(self, object_id: ObjectId) -> str:
        """The name of the node that holds ``object_id``."""
        # The first step of ``_walk``, without a generator: this runs on every request.
        if not self._positions:
            raise NoNodesAvailable("no storage nodes are known")
        start = bisect.bisect_right(self._positions, _position(object_id.value))
        return self._sorted_names[self._node_at[start % len(self._positions)]]

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
            yield self._sorted_names[self._node_at[(start + offset) % size]]


def ring_fingerprint(node_names: Iterable[str], replicas: int) -> str:
    """What places IDs, in a few characters: the ring's node names and the copies per ID. Two
    gateways with the same fingerprint place every ID on the same nodes."""
    text = "\n".join(sorted(node_names)) + f"\nreplicas={replicas}"
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
