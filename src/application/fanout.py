"""One body read once and written to several nodes at the same time, at the slowest one's pace."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

__all__ = ["Fanout"]


class Fanout:
    """Hands each chunk of ``source`` to every branch; the next chunk is read only once every
    branch still going has taken this one, so memory is one chunk whatever the body's size, and
    the client's socket is read at the pace of the slowest node. A branch whose consumer gave up
    (its node failed) is dropped, and no longer holds the others back. A failure of the source
    (the client's body) reaches every branch.

    The source is read by a task of its own, so that a branch cancelled while it waits (its node
    timed out) never cuts the body short for the others.
    """

    def __init__(self, source: AsyncIterator[bytes], branches: int) -> None:
        self._source = source
        self._chunk = b""
        self._index = -1  # of the chunk held
        self._taken = [-1] * branches  # the last chunk each branch took
        self._alive = [True] * branches
        self._ended = False
        self._error: BaseException | None = None
        self._reader: asyncio.Future[None] | None = None
        self._changed = asyncio.Event()

    def branch(self, index: int) -> AsyncIterator[bytes]:
        return self._branch(index)

    def drop(self, index: int) -> None:
        """The branch's consumer stopped: the others go on without it."""
        if self._alive[index]:
            self._alive[index] = False
            self._announce()

    def fail(self, error: BaseException) -> None:
        """Every branch still going fails with ``error`` at its next chunk (and none gets the last
        one): a write that can no longer reach its quorum stops everywhere before it commits."""
        if self._error is None:
            self._error = error
            self._announce()

    async def _branch(self, index: int) -> AsyncIterator[bytes]:
        try:
            while (chunk := await self._next(index)) is not None:
                yield chunk
        finally:
            self.drop(index)

    async def _next(self, index: int) -> bytes | None:
        wanted = self._taken[index] + 1
        while True:
            if self._error is not None:
                raise self._error
            if wanted == self._index:
                self._taken[index] = wanted
                self._announce()
                return self._chunk
            if self._ended:
                return None
            if self._reader is None and self._everyone_took_the_chunk():
                self._reader = asyncio.ensure_future(self._read())
            if self._reader is not None:
                await asyncio.shield(self._reader)
            else:
                await self._changed.wait()

    def _everyone_took_the_chunk(self) -> bool:
        return all(
            taken == self._index
            for taken, alive in zip(self._taken, self._alive, strict=True)
            if alive
        )

    async def _read(self) -> None:
        try:
            chunk = await anext(self._source, None)
        except BaseException as exc:  # the client's failure: every branch gets it
            self._error = exc
        else:
            if chunk is None:
                self._ended = True
            else:
                self._chunk, self._index = chunk, self._index + 1
        finally:
            self._reader = None
            self._announce()

    def _announce(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
