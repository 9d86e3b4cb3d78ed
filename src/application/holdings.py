"""What nodes hold of an ID, and which of it is current: the values reads, writes and their upkeep
share."""

from __future__ import annotations

from dataclasses import dataclass

from domain.node import Node
from domain.object_id import ObjectId
from domain.objects import StoredVersion, newest_committed
from domain.versions import Version

__all__ = ["Current", "Holding"]


@dataclass(frozen=True, slots=True)
class Holding:
    """What one node holds of an ID."""

    node: Node
    versions: list[StoredVersion]

    @property
    def newest(self) -> StoredVersion | None:
        return newest_committed(self.versions)

    def before(self, version: Version) -> Holding:
        """This holding as it was before ``version`` was written."""
        return Holding(self.node, [v for v in self.versions if v.version < version])


@dataclass(frozen=True, slots=True)
class Current:
    """The newest committed version among the nodes asked (a tombstone too; None: none), where
    it is, and what each node asked holds."""

    object_id: ObjectId
    replicas: list[Node]
    holdings: list[Holding]
    answered: int  # replicas that answered
    newest: StoredVersion | None

    @property
    def primary(self) -> Node:
        """The ID's first replica: it answers for the ID in logs."""
        return self.replicas[0]

    @property
    def live(self) -> StoredVersion | None:
        """The current version unless it is a tombstone."""
        return None if self.newest is None or self.newest.deleted else self.newest

    def holders(self) -> list[tuple[Node, StoredVersion]]:
        """The nodes that hold the current version (as data or tombstone, not merely pending),
        replicas first, each with its own record of it (under its own key, or the old layout's)."""
        newest = self.newest
        if newest is None:
            return []
        found = []
        for holding in self.holdings:
            record = next(
                (
                    v
                    for v in holding.versions
                    if v.version == newest.version and v.kind is newest.kind
                ),
                None,
            )
            if record is not None:
                found.append((holding.node, record))
        return found
