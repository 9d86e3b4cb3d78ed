"""Walking what the fleet stores: every node's listing merged as it streams, one ID at a time.

S3 lists a bucket's keys in order, page by page, and a node keeps an ID's versions together, so
the fleet's walk is a k-way merge of the nodes' walks: memory is a page per node, however many
objects there are, and each ID comes up once with what every node holds of it.
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence

from domain.errors import GatewayError, NodeUnavailable
from domain.node import Node
from domain.objects import StoredVersion
from domain.ports import ObjectStorage

__all__ = ["Held", "merged_walk"]

# What each node holds of one ID, in the nodes' order.
Held = list[tuple[Node, list[StoredVersion]]]


async def merged_walk(
    storage: ObjectStorage,
    nodes: Sequence[Node],
    unlisted: dict[str, str] | None = None,
    *,
    legacy_on: Callable[[Node], bool] = lambda _: True,
    prefix: str = "",
    start_after: str = "",
) -> AsyncGenerator[tuple[str, Held], None]:
    """Every ID held by any of ``nodes`` (under ``prefix``, after ``start_after``), in ID order,
    with what each node holds of it (``legacy_on``: nodes whose walk includes objects under the
    layout from before versions had keys).

    A node whose walk fails (or comes out of order) is recorded in ``unlisted`` and left out from
    there on; without ``unlisted``, its error is raised.
    """
    walks = [
        _by_id(
            storage.walk(node, prefix=prefix, start_after=start_after, legacy=legacy_on(node)),
            node,
        )
        for node in nodes
    ]
    heap: list[tuple[str, int, list[StoredVersion]]] = []

    async def advance(index: int) -> None:
        node = nodes[index]
        try:
            entry = await anext(walks[index], None)
        except GatewayError as exc:
            if unlisted is None:
                raise
            unlisted[node.name] = exc.detail
            return
        if entry is not None:
            heapq.heappush(heap, (entry[0], index, entry[1]))

    try:
        for index in range(len(nodes)):
            await advance(index)
        while heap:
            raw_id = heap[0][0]
            held: Held = []
            while heap and heap[0][0] == raw_id:
                _, index, versions = heapq.heappop(heap)
                held.append((nodes[index], versions))
                await advance(index)
            # Popped by (ID, index): in the nodes' order.
            yield raw_id, held
    finally:
        # A walk left mid-way holds its node's connection until closed.
        for walk in walks:
            await walk.aclose()


async def _by_id(
    walk: AsyncIterator[tuple[str, StoredVersion]], node: Node
) -> AsyncGenerator[tuple[str, list[StoredVersion]], None]:
    """A node's walk, an ID at a time; a node that lists out of order fails."""
    current: str | None = None
    versions: list[StoredVersion] = []
    try:
        async for raw_id, stored in walk:
            if raw_id == current:
                versions.append(stored)
                continue
            if current is not None:
                if raw_id < current:
                    raise NodeUnavailable(node.name, "it lists its keys out of order")
                yield current, versions
            current, versions = raw_id, [stored]
        if current is not None:
            yield current, versions
    finally:
        close = getattr(walk, "aclose", None)
        if close is not None:
            await close()
