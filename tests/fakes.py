"""In-memory fakes of the domain ports, for tests that must not touch Docker or a node."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from domain.auth import Keyring
from domain.errors import (
    CredentialsUnreadable,
    DiscoveryUnavailable,
    GatewayError,
    IncompleteBody,
    NodeUnreachable,
    ObjectNotFound,
    PreconditionFailed,
    RangeNotSatisfiable,
)
from domain.node import Credentials, DrainState, Node, NodeState
from domain.object_id import ObjectId
from domain.objects import ByteRange, ListedObject, ObjectInfo, StoredObject, WriteCondition
from domain.versions import Version

DRAIN_MARK = ".gateway/draining"


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
class _Stored:
    data: bytes
    content_type: str
    last_modified: datetime
    version: Version | None = None
    deleted: bool = False

    @property
    def info(self) -> ObjectInfo:
        return ObjectInfo(
            size=len(self.data),
            content_type=self.content_type,
            etag=hashlib.md5(self.data).hexdigest(),
            last_modified=self.last_modified,
            version=self.version,
            deleted=self.deleted,
        )


@dataclass
class InMemoryObjectStorage:
    objects: dict[tuple[str, str], _Stored] = field(default_factory=dict)
    unreachable_nodes: set[str] = field(default_factory=set)
    open_reads: int = 0
    # When set, HEAD waits for it: lets a test hold the existence check of a PUT.
    head_released: asyncio.Event | None = None
    # When set, writes fail as if the node refused something in the request.
    refuse_writes_with: GatewayError | None = None
    events: list[str] = field(default_factory=list)
    # Nodes that ignore If-None-Match / If-Match (as the stand-in does); others honour them.
    ignores_conditions: bool = False
    # Each write is stamped one second after the previous: Last-Modified orders them.
    clock: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    # Called before a write commits, to let a test interleave another writer.
    before_commit: Callable[[str, str], Awaitable[None]] | None = None
    # Nodes marked to be drained (the DrainMarks port).
    marks: dict[str, DrainState] = field(default_factory=dict)
    # Nodes whose writes fail (unreachable) after taking this many chunks of the body.
    fail_after_chunks: dict[str, int] = field(default_factory=dict)
    # Requests made, as "METHOD node id": which nodes a use case asked.
    requests: list[str] = field(default_factory=list)
    # Nodes listed (one entry per listing opened), and nodes whose listing fails after starting.
    listings: list[str] = field(default_factory=list)
    unlistable_after: set[str] = field(default_factory=set)

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
        """Place an object directly, as if written there earlier (a misplaced copy, say); without
        ``version``, as an object written before versions."""
        self.clock += timedelta(seconds=1)
        self.objects[(node, object_id)] = _Stored(data, content_type, self.clock, version, deleted)

    async def head(self, node: Node, object_id: ObjectId) -> ObjectInfo:
        self._check_reachable(node)
        self.requests.append(f"HEAD {node.name} {object_id.value}")
        if self.head_released is not None:
            await self.head_released.wait()
        self.events.append(f"head {object_id.value}")
        stored = self.objects.get((node.name, object_id.value))
        if stored is None:
            raise ObjectNotFound("no object is stored under this ID")
        return stored.info

    async def put(
        self,
        node: Node,
        object_id: ObjectId,
        body: AsyncIterator[bytes],
        length: int | None,
        content_type: str,
        *,
        version: Version,
        deleted: bool = False,
        condition: WriteCondition | None = None,
    ) -> ObjectInfo:
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
        if self.before_commit is not None:
            await self.before_commit(node.name, object_id.value)
        current = self.objects.get((node.name, object_id.value))
        if condition is not None and not self.ignores_conditions:
            if condition.only_if_absent and current is not None:
                raise PreconditionFailed("the object exists")
            if condition.only_if_etag is not None and (
                current is None or current.info.etag != condition.only_if_etag
            ):
                raise PreconditionFailed("the object changed")
        self.store(node.name, object_id.value, data, content_type, version=version, deleted=deleted)
        return self.objects[(node.name, object_id.value)].info

    async def delete(self, node: Node, object_id: ObjectId) -> None:
        self._check_reachable(node)
        self.events.append(f"delete {node.name} {object_id.value}")
        self.objects.pop((node.name, object_id.value), None)

    async def list_objects(
        self, node: Node, *, prefix: str = "", start_after: str = ""
    ) -> AsyncIterator[ListedObject]:
        self._check_reachable(node)
        listed = [
            ListedObject(name, stored.info.size, stored.info.etag, stored.info.last_modified)
            for (holder, name), stored in self.objects.items()
            if holder == node.name
        ]
        if node.name in self.marks:
            listed.append(ListedObject(DRAIN_MARK, 10, "mark", None))
        self.listings.append(node.name)
        for entry in sorted(listed, key=lambda entry: entry.name):
            if entry.name.startswith(prefix) and entry.name > start_after:
                if node.name in self.unlistable_after:
                    raise NodeUnreachable(node.name, "the listing was cut")
                yield entry

    async def drain_state(self, node: Node) -> DrainState | None:
        self._check_reachable(node)
        return self.marks.get(node.name)

    async def mark(self, node: Node, state: DrainState, note: str) -> None:
        self._check_reachable(node)
        self.marks[node.name] = state

    async def unmark(self, node: Node) -> None:
        self._check_reachable(node)
        self.marks.pop(node.name, None)

    async def get(
        self, node: Node, object_id: ObjectId, byte_range: ByteRange | None = None
    ) -> StoredObject:
        self._check_reachable(node)
        self.requests.append(f"GET {node.name} {object_id.value}")
        stored = self.objects.get((node.name, object_id.value))
        if stored is None:
            raise ObjectNotFound("no object is stored under this ID")
        content_range = None
        # As the S3 adapter reads one: a tombstone's metadata, none of its bytes.
        data = b"" if stored.deleted else stored.data
        if byte_range is not None and not stored.deleted:
            content_range = byte_range.resolve(len(data))
            if content_range is None:
                raise RangeNotSatisfiable("beyond the object", len(data))
            data = data[content_range[0] : content_range[1] + 1]
        self.open_reads += 1

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(data), 4096):
                yield data[start : start + 4096]

        async def close() -> None:
            self.open_reads -= 1

        return StoredObject(
            info=stored.info, chunks=chunks(), close=close, content_range=content_range
        )

    async def aclose(self) -> None:
        self.events.append("closed")

    def node_of(self, object_id: str) -> list[str]:
        return [name for name, stored_id in self.objects if stored_id == object_id]

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
