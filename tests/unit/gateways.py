"""A gateway's application layer over in-memory fakes of the ports, for the use-case tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from application.background import Background
from application.conditional import ConditionalWrites
from application.fleet import Fleet
from application.node_access import NodeAccess
from application.objects import DeleteObject, GetObject, HeadObject, PutObject
from application.reads import VersionReads
from application.rebalance import Rebalance
from application.tidying import Tidying
from application.upkeep import Upkeep
from application.writes import VersionWrites
from domain.circuit_breaker import NodeBreakers
from domain.hash_ring import HashRing
from domain.in_flight import InFlightLimits
from domain.node import NodeState
from domain.object_id import ObjectId
from domain.replication import ReplicationPolicy
from domain.versions import Version, VersionClock
from tests.fakes import FakeNodeDiscovery, InMemoryObjectStorage, make_node

RING_SIZE = 64


async def body_of(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def v(seconds: float, counter: int = 1, writer: str = "a" * 16) -> Version:
    """A version at ``seconds`` after the epoch (long ago: older than any write a test makes)."""
    return Version(int(seconds * 1e9), writer, counter)


class Gateway:
    """Use cases wired as the container wires them, over ``storage`` and ``node_count`` nodes."""

    def __init__(
        self,
        node_count: int = 3,
        *,
        replicas: int = 1,
        write_quorum: int | None = None,
        read_quorum: int | None = None,
        storage: InMemoryObjectStorage | None = None,
        discovery: FakeNodeDiscovery | None = None,
        breaker_threshold: int = 2,
        max_per_node: int = 4,
        fallback_nodes: int = 2,
        first_node: int = 0,
        max_write_seconds: float = 3600.0,
    ) -> None:
        self.discovery = discovery or FakeNodeDiscovery(
            nodes=[make_node(f"node-{i}") for i in range(first_node, first_node + node_count)]
        )
        self.storage = storage or InMemoryObjectStorage()
        self.fleet = Fleet(self.discovery, self.storage, virtual_nodes=RING_SIZE, replicas=replicas)
        self.breakers = NodeBreakers(failure_threshold=breaker_threshold, cooldown_seconds=60)
        self.limits = InFlightLimits(max_per_node=max_per_node)
        self.access = NodeAccess(self.breakers, self.limits)
        self.clock = VersionClock()
        self.policy = ReplicationPolicy.of(replicas, write_quorum, read_quorum)
        self.repairs = Background()
        self.tidying = Tidying(self.storage, self.access)
        self.upkeep = Upkeep(self.fleet, self.storage, self.access, self.repairs, self.tidying)
        self.reads = VersionReads(
            self.fleet,
            self.storage,
            self.access,
            self.clock,
            self.policy,
            self.upkeep,
            fallback_nodes=fallback_nodes,
        )
        self.writes = VersionWrites(self.reads, max_write_seconds=max_write_seconds)
        self.conditional = ConditionalWrites(self.reads, self.writes)
        self.put = PutObject(self.writes, self.conditional)
        self.get = GetObject(self.reads)
        self.head = HeadObject(self.reads)
        self.delete = DeleteObject(self.writes)

    @property
    def names(self) -> list[str]:
        return [node.name for node in self.discovery.nodes]

    def walk(self, raw_id: str, names: list[str] | None = None) -> list[str]:
        return HashRing(names or self.names, RING_SIZE).preference_list(ObjectId(raw_id))

    def owner(self, raw_id: str, names: list[str] | None = None) -> str:
        return self.walk(raw_id, names)[0]

    def rebalance(self, **options: Any) -> Rebalance:
        return Rebalance(
            self.fleet,
            self.storage,
            self.access,
            self.storage,
            replicas=self.policy.replicas,
            **options,
        )

    async def mark_settled(self) -> None:
        """As a rebalance leaves the fleet when it found every ID in place: marked settled by
        the ring it has now."""
        await self.fleet.refresh()
        membership = await self.fleet.membership()
        for name in membership.nodes:
            self.storage.rings[name] = (membership.fingerprint, True)
        await self.fleet.refresh()

    async def read(self, raw_id: str) -> bytes:
        retrieved = await self.get(raw_id)
        try:
            return b"".join([chunk async for chunk in retrieved.stored.chunks])
        finally:
            await retrieved.stored.close()

    async def settle(self) -> None:
        """Let the read repairs and removals scheduled so far finish."""
        await self.repairs.idle()
        await self.tidying.idle()

    def holders(self, raw_id: str) -> dict[str, bytes]:
        """The nodes whose newest version of the ID is live data, and that data."""
        return {
            node: record.data
            for (node, object_id), record in self.storage.objects.items()
            if object_id == raw_id and not record.deleted
        }

    async def take_down(self, *names: str) -> None:
        self.discovery.nodes = [
            make_node(node.name, NodeState.DOWN) if node.name in names else node
            for node in self.discovery.nodes
        ]
        self.storage.unreachable_nodes |= set(names)
        if self.fleet.current is not None:
            await self.fleet.refresh()
