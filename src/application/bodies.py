"""A write's body on its way to the nodes: gathered whole when small, and held at its last chunk
until the write may commit."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from application.node_access import NodeAccess
from domain.errors import IncompleteBody, NodeUnavailable, UploadTooSlow
from domain.node import Node

__all__ = ["CommitGate", "gathered", "single"]


class CommitGate:
    """A write's body, whose last chunk waits for a place in each target's cap (so that a slow
    client never holds one) and is refused when the write has taken longer than any may."""

    def __init__(
        self,
        access: NodeAccess,
        targets: list[Node],
        started: float,
        max_seconds: float,
        monotonic: Callable[[], float],
    ) -> None:
        self._access = access
        self._targets = targets
        self._deadline = started + max_seconds
        self._max_seconds = max_seconds
        self._monotonic = monotonic
        self._releases: list[Callable[[], None]] = []
        # Released: the write is over (refused, or done); a body read to its end after that (its
        # reader may outlive the write) takes no place in any cap.
        self._released = False

    async def body(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        held: bytes | None = None
        async for chunk in body:
            if held is not None:
                yield held
            held = chunk
        if self._monotonic() > self._deadline:
            # A write this old could land after a tombstone it precedes was purged.
            raise UploadTooSlow(
                f"the upload took longer than the {self._max_seconds:g} s a write may take "
                "(GATEWAY_MAX_WRITE_SECONDS)"
            )
        if self._released:
            return
        for node in self._targets:
            with contextlib.suppress(NodeUnavailable):
                self._releases.append(self._access.hold(node))
        if held is not None:
            yield held

    def release(self) -> None:
        self._released = True
        while self._releases:
            self._releases.pop()()


async def gathered(body: AsyncIterator[bytes], length: int) -> bytes:
    data = bytearray()
    async for chunk in body:
        data += chunk
        if len(data) > length:
            raise IncompleteBody("the body is longer than its Content-Length")
    if len(data) != length:
        raise IncompleteBody(f"the body ended after {len(data)} of {length} bytes")
    return bytes(data)


async def single(data: bytes) -> AsyncIterator[bytes]:
    yield data
