"""In-memory fakes of the domain ports, for tests that must not touch Docker or a node."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from domain.auth import Keyring
from domain.errors import (
    CopyMismatch,
    CredentialsUnreadable,
    DiscoveryUnavailable,
    GatewayError,
    IncompleteBody,
    NodeUnreachable,
    ObjectNotFound,
    RangeNotSatisfiable,
)
from domain.leases import LeaseClaim
from domain.node import Credentials, DrainState, Node, NodeMarks, NodeState
from domain.object_id import ObjectId
from domain.objects import (
    ByteRange,
    ObjectInfo,
    StoredObject,
    StoredVersion,
    VersionKind,
    moment_of,
)
from domain.versions import Version


def make_node(name: str, state: NodeState = NodeState.UP, host: str | None = "10.0.0.1") -> Node:
    return Node(
        name=name,
        host=host if state is NodeState.UP else None,
        port=9000,
        credentials=Credentials(access_key="access", secret_key="secret-key-value"),
        state=state,
    )


class FakeChangeFeed:
    """Changes arrive when a test calls ``announce`` (or ``break_feed``), on the feed's own loop."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self.broken: DiscoveryUnavailable | None = None
        self.closed = False

    def announce(self) -> None:
        self._loop.call_soon_threadsafe(self._changed.set)

    def break_feed(self, error: DiscoveryUnavailable) -> None:
        self.broken = error
        self.announce()

    async def next_change(self, timeout_seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._changed.wait(), timeout_seconds)
        except TimeoutError:
            return False
        self._changed.clear()
        if self.broken is not None:
            raise self.broken
        return True

    async def close(self) -> None:
        self.closed = True


@dataclass
class FakeNodeDiscovery:
    nodes: list[Node] = field(default_factory=list)
    failure: DiscoveryUnavailable | None = None
    calls: int = 0
    feeds: list[FakeChangeFeed] = field(default_factory=list)

    async def discover(self) -> Sequence[Node]:
        self.calls += 1
        if self.failure is not None:
            raise self.failure
        return list(self.nodes)

    async def watch(self) -> FakeChangeFeed:
        if self.failure is not None:
            raise self.failure
        feed = FakeChangeFeed()
        self.feeds.append(feed)
        return feed


@dataclass
class _Record:
    """One version of an ID on one node."""

    data: bytes
    content_type: str
    version: Version
    kind: VersionKind
    stored_at: datetime
    legacy: bool = False

    @property
    def deleted(self) -> bool:
        return self.kind is VersionKind.TOMBSTONE

    @property
    def etag(self) -> str:
        return hashlib.md5(self.data).hexdigest()

    @property
    def stored(self) -> StoredVersion:
        return self.listed_at(self.stored_at)

    def listed_at(self, now: datetime) -> StoredVersion:
        """As a listing at ``now`` (the node's clock) shows it."""
        return StoredVersion(
            self.version,
            self.kind,
            len(self.data),
            self.etag,
            legacy=self.legacy,
            age_seconds=(now - self.stored_at).total_seconds(),
        )

    @property
    def info(self) -> ObjectInfo:
        return ObjectInfo(
            size=len(self.data),
            content_type=self.content_type,
            etag=self.etag,
            last_modified=moment_of(self.version),
            version=self.version,
            deleted=self.deleted,
        )


@dataclass
class InMemoryObjectStorage:
    """Nodes' buckets in memory: every version of an ID a record of its own, as on real nodes."""

    # (node, ID) -> the records of that ID on that node.
    records: dict[tuple[str, str], list[_Record]] = field(default_factory=dict)
    unreachable_nodes: set[str] = field(default_factory=set)
    open_reads: int = 0
    # When set, listings of an ID's versions wait for it: lets a test hold a PUT's lookup.
    head_released: asyncio.Event | None = None
    # When set, writes fail as if the node refused something in the request.
    refuse_writes_with: GatewayError | None = None
    events: list[str] = field(default_factory=list)
    # Each write is stamped one second after the previous (when the node stored it).
    clock: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    # Called before a write commits, to let a test interleave another writer.
    before_commit: Callable[[str, str], Awaitable[None]] | None = None
    # Nodes marked to be drained, and nodes known to hold nothing under the old layout.
    drain_marks: dict[str, DrainState] = field(default_factory=dict)
    migrated: set[str] = field(default_factory=set)
    # Ring marks by node: (fingerprint, settled).
    rings: dict[str, tuple[str, bool]] = field(default_factory=dict)
    # Whether a node that holds nothing says so (as a real node without a bucket does): then a
    # gateway that finds the whole fleet empty marks it settled. Off, the fleet is as after
    # changes: unsettled until a rebalance settles it.
    report_fresh: bool = False
    # Claims on leases, by (node, lease).
    claims_held: dict[tuple[str, str], list[LeaseClaim]] = field(default_factory=dict)
    # Nodes whose writes fail (unreachable) after taking this many chunks of the body.
    fail_after_chunks: dict[str, int] = field(default_factory=dict)
    # Requests made, as "METHOD node id": which nodes a use case asked.
    requests: list[str] = field(default_factory=list)
    # Nodes walked (one entry per walk opened), and nodes whose walk fails after starting.
    listings: list[str] = field(default_factory=list)
    unlistable_after: set[str] = field(default_factory=set)
    # Called before a delete (node, ID) and before a read is opened (node, ID): a test interleaves
    # another gateway's work there.
    before_delete: Callable[[str, str], Awaitable[None]] | None = None
    before_get: Callable[[str, str], Awaitable[None]] | None = None
    # Nodes whose reads hand over damaged bytes (a flipped bit on the way), and nodes whose drain
    # marks cannot be read (the mark's request times out) while everything else works.
    corrupt_reads: set[str] = field(default_factory=set)
    marks_unreadable: set[str] = field(default_factory=set)

    # -- what tests set up and look at ------------------------------------------------------

    def store(
        self,
        node: str,
        object_id: str,
        data: bytes,
        content_type: str = "text/plain",
        *,
        version: Version | None = None,
        deleted: bool = False,
    ) -> None:
        """Place a version directly, as if written there earlier (a misplaced copy, say);
        without ``version``, as an object written under the old layout, before versions."""
        self.clock += timedelta(seconds=1)
        legacy = version is None
        if version is None:
            version = Version.of_unversioned(self.clock)
            # The old layout kept one object per ID: it replaces the one there.
            self.records[(node, object_id)] = [
                r for r in self.records.get((node, object_id), []) if not r.legacy
            ]
        kind = VersionKind.TOMBSTONE if deleted else VersionKind.DATA
        record = _Record(data, content_type, version, kind, self.clock, legacy)
        self._keep(node, object_id, record)

    @property
    def objects(self) -> dict[tuple[str, str], _Record]:
        """What each node holds of each ID as a read sees it: its newest committed version."""
        current: dict[tuple[str, str], _Record] = {}
        for key, records in self.records.items():
            committed = [r for r in records if r.kind is not VersionKind.PENDING]
            if committed:
                current[key] = max(committed, key=lambda record: record.version)
        return current

    def versions_of(self, node: str, object_id: str) -> list[StoredVersion]:
        return sorted(
            record.listed_at(self.clock) for record in self.records.get((node, object_id), [])
        )

    def node_of(self, object_id: str) -> list[str]:
        """The nodes that hold something committed of the ID."""
        return sorted(name for name, stored_id in self.objects if stored_id == object_id)

    def _keep(self, node: str, object_id: str, record: _Record) -> None:
        records = self.records.setdefault((node, object_id), [])
        records[:] = [
            r for r in records if not (r.version == record.version and r.kind is record.kind)
        ]
        records.append(record)
        records.sort(key=lambda r: (r.version, r.kind))

    def _find(self, node: str, object_id: str, stored: StoredVersion) -> _Record | None:
        for record in self.records.get((node, object_id), []):
            if (
                record.version == stored.version
                and record.kind is stored.kind
                and record.legacy == stored.legacy
            ):
                return record
        return None

    # -- the ObjectStorage port -------------------------------------------------------------

    async def versions(
        self, node: Node, object_id: ObjectId, *, legacy: bool = False
    ) -> list[StoredVersion]:
        self._check_reachable(node)
        self.requests.append(f"LIST {node.name} {object_id.value}")
        if self.head_released is not None:
            await self.head_released.wait()
        self.events.append(f"list {object_id.value}")
        return [
            stored
            for stored in self.versions_of(node.name, object_id.value)
            if legacy or not stored.legacy
        ]

    async def head(self, node: Node, object_id: ObjectId, stored: StoredVersion) -> ObjectInfo:
        self._check_reachable(node)
        self.requests.append(f"HEAD {node.name} {object_id.value}")
        record = self._find(node.name, object_id.value, stored)
        if record is None:
            raise ObjectNotFound("no such version")
        return record.info

    async def open(
        self,
        node: Node,
        object_id: ObjectId,
        stored: StoredVersion,
        byte_range: ByteRange | None = None,
    ) -> StoredObject:
        self._check_reachable(node)
        self.requests.append(f"GET {node.name} {object_id.value}")
        if self.before_get is not None:
            await self.before_get(node.name, object_id.value)
        record = self._find(node.name, object_id.value, stored)
        if record is None:
            raise ObjectNotFound("no such version")
        data = record.data
        content_range = None
        if byte_range is not None:
            content_range = byte_range.resolve(len(data))
            if content_range is None:
                raise RangeNotSatisfiable("beyond the object", len(data))
            data = data[content_range[0] : content_range[1] + 1]
        if node.name in self.corrupt_reads and data:
            data = bytes([data[0] ^ 1]) + data[1:]
        self.open_reads += 1

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(data), 4096):
                yield data[start : start + 4096]

        async def close() -> None:
            self.open_reads -= 1

        return StoredObject(
            info=record.info, chunks=chunks(), close=close, content_range=content_range
        )

    async def put(
        self,
        node: Node,
        object_id: ObjectId,
        version: Version,
        kind: VersionKind,
        body: AsyncIterator[bytes],
        length: int | None,
        content_type: str,
        *,
        content_md5: str | None = None,
    ) -> StoredVersion:
        self._check_reachable(node)
        if self.refuse_writes_with is not None:
            raise self.refuse_writes_with
        self.requests.append(f"PUT {node.name} {object_id.value}")
        chunks = []
        async for chunk in body:
            if len(chunks) == self.fail_after_chunks.get(node.name, -1):
                raise NodeUnreachable(node.name, "it went away mid-body (fake)")
            self.events.append(f"chunk {len(chunk)}")
            chunks.append(chunk)
        data = b"".join(chunks)
        if length is not None and len(data) != length:
            raise IncompleteBody(f"the body ended after {len(data)} of {length} bytes")
        if content_md5 is not None and hashlib.md5(data).hexdigest() != content_md5:
            raise CopyMismatch("the bytes do not match their checksum (fake)")
        if self.before_commit is not None:
            await self.before_commit(node.name, object_id.value)
        self._check_reachable(node)
        self.clock += timedelta(seconds=1)
        record = _Record(data, content_type, version, kind, self.clock)
        self._keep(node.name, object_id.value, record)
        return record.stored

    async def promote(
        self, node: Node, object_id: ObjectId, pending: StoredVersion
    ) -> StoredVersion:
        self._check_reachable(node)
        self.requests.append(f"COPY {node.name} {object_id.value}")
        record = self._find(node.name, object_id.value, pending)
        if record is None:
            raise ObjectNotFound("no such pending version")
        self.clock += timedelta(seconds=1)
        data = _Record(
            record.data, record.content_type, record.version, VersionKind.DATA, self.clock
        )
        self._keep(node.name, object_id.value, data)
        return data.stored

    async def remove(self, node: Node, object_id: ObjectId, stored: StoredVersion) -> None:
        self._check_reachable(node)
        if self.before_delete is not None:
            await self.before_delete(node.name, object_id.value)
        self.events.append(f"delete {node.name} {object_id.value}")
        self.requests.append(f"DELETE {node.name} {object_id.value}")
        records = self.records.get((node.name, object_id.value), [])
        records[:] = [
            r
            for r in records
            if not (
                r.version == stored.version and r.kind is stored.kind and r.legacy == stored.legacy
            )
        ]
        if not records:
            self.records.pop((node.name, object_id.value), None)

    async def remove_many(
        self, node: Node, versions: Sequence[tuple[ObjectId, StoredVersion]]
    ) -> int:
        # One request to the node for them all; each removal as ``remove`` makes it.
        self._check_reachable(node)
        self.requests.append(f"DELETE many {node.name} {len(versions)}")
        for object_id, stored in versions:
            await self.remove(node, object_id, stored)
            self.requests.pop()
        return 0

    async def walk(
        self, node: Node, *, prefix: str = "", start_after: str = "", legacy: bool = False
    ) -> AsyncIterator[tuple[str, StoredVersion]]:
        self._check_reachable(node)
        self.listings.append(node.name)
        held = sorted(
            (object_id, record.listed_at(self.clock))
            for (holder, object_id), records in self.records.items()
            if holder == node.name
            for record in records
            if legacy or not record.legacy
        )
        for object_id, stored in held:
            if object_id.startswith(prefix) and object_id > start_after:
                if node.name in self.unlistable_after:
                    raise NodeUnreachable(node.name, "the listing was cut")
                yield object_id, stored

    async def aclose(self) -> None:
        self.events.append("closed")

    # -- the NodeMarking and Leases ports ---------------------------------------------------

    async def marks(self, node: Node) -> NodeMarks:
        self._check_reachable(node)
        if node.name in self.marks_unreadable:
            raise NodeUnreachable(node.name, "its marks cannot be read (fake)")
        ring = self.rings.get(node.name)
        fresh = (
            self.report_fresh
            and not any(holder == node.name for holder, _ in self.records)
            and node.name not in self.drain_marks
            and ring is None
        )
        return NodeMarks(
            self.marks_of(node.name),
            node.name in self.migrated,
            settled=ring[0] if ring is not None and ring[1] else None,
            settling=ring[0] if ring is not None and not ring[1] else None,
            fresh=fresh,
        )

    def marks_of(self, name: str) -> DrainState | None:
        return self.drain_marks.get(name)

    async def mark(self, node: Node, state: DrainState, note: str) -> None:
        self._check_reachable(node)
        self.drain_marks[node.name] = state

    async def unmark(self, node: Node) -> None:
        self._check_reachable(node)
        self.drain_marks.pop(node.name, None)

    async def mark_migrated(self, node: Node) -> None:
        self._check_reachable(node)
        self.migrated.add(node.name)

    async def mark_ring(self, node: Node, fingerprint: str, *, settled: bool) -> None:
        self._check_reachable(node)
        self.rings[node.name] = (fingerprint, settled)

    async def unmark_ring(self, node: Node) -> None:
        self._check_reachable(node)
        self.rings.pop(node.name, None)

    async def claims(self, node: Node, lease: str) -> list[LeaseClaim]:
        self._check_reachable(node)
        return list(self.claims_held.get((node.name, lease), []))

    async def claim(self, node: Node, lease: str, claim: LeaseClaim) -> None:
        self._check_reachable(node)
        self.claims_held.setdefault((node.name, lease), []).append(claim)

    async def drop(self, node: Node, lease: str, claim: LeaseClaim) -> None:
        self._check_reachable(node)
        held = self.claims_held.get((node.name, lease), [])
        held[:] = [c for c in held if c.version != claim.version]

    def _check_reachable(self, node: Node) -> None:
        if node.name in self.unreachable_nodes:
            raise NodeUnreachable(node.name, "it cannot be reached (fake)")


@dataclass
class FakeClock:
    """Wall-clock seconds that move only when a test says so."""

    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class InMemoryCredentialStore:
    """The CredentialStore port in memory: every update is a new revision (its stamp)."""

    keyring: Keyring = field(default_factory=Keyring)
    revision: int = 0
    # When set, load() fails as an unparsable file would.
    unreadable: CredentialsUnreadable | None = None
    loads: int = 0

    def stamp(self) -> Hashable:
        return self.revision

    def load(self) -> Keyring:
        self.loads += 1
        if self.unreadable is not None:
            raise self.unreadable
        return self.keyring

    def update(self, change: Callable[[Keyring], Keyring]) -> Keyring:
        self.keyring = change(self.load())
        self.revision += 1
        return self.keyring
