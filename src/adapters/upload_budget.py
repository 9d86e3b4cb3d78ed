from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["UploadBudget"]


class UploadBudget:
    """A process-wide limit on the bytes that multipart uploads may hold in memory at once.

    Uploads of unknown length (or over 5 GiB) go up in parts, each held whole while it is filled and
    sent. An upload reserves a part's worth before filling one and gives it back once the part is
    sent; uploads beyond the budget wait here, and their clients wait on TCP backpressure. Waiters
    are served first come, first served, so a large reservation is never starved.
    """

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 1:
            raise ValueError("capacity_bytes must be positive")
        self._capacity = capacity_bytes
        self._available = capacity_bytes
        self._condition = asyncio.Condition()
        self._queue: list[object] = []

    @property
    def available_bytes(self) -> int:
        return self._available

    @asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[None]:
        # A reservation larger than the whole budget would wait forever; it takes the whole budget.
        size = min(max(size, 1), self._capacity)
        ticket = object()
        async with self._condition:
            self._queue.append(ticket)
            try:
                await self._condition.wait_for(
                    lambda: self._queue[0] is ticket and self._available >= size
                )
            finally:
                self._queue.remove(ticket)
                self._condition.notify_all()
            self._available -= size
        try:
            yield
        finally:
            async with self._condition:
                self._available += size
                self._condition.notify_all()
