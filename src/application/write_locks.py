from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

__all__ = ["WriteLocks"]


class WriteLocks:
    """Writes to one ID take turns within this gateway: a client's commit, a delete, a move.

    S3 nodes order writes to a key by arrival and nothing else. A rebalance that checked the owner
    and then copies an older version onto it would overwrite a client write landing in between,
    on nodes that ignore conditional writes. Within one gateway, taking turns rules that out;
    between gateways, MinIO's conditional writes (which every move also carries) do. A lock exists
    only while someone holds or waits for it.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    async def acquire(self, object_id: str) -> Callable[[], None]:
        """Wait for the ID's turn; the function returned ends it (twice is harmless)."""
        entry = self._locks.get(object_id)
        if entry is None:
            entry = self._locks[object_id] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            await lock.acquire()
        except BaseException:
            self._leave(object_id, entry)
            raise
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                lock.release()
                self._leave(object_id, entry)

        return release

    @contextlib.asynccontextmanager
    async def held(self, object_id: str) -> AsyncIterator[None]:
        release = await self.acquire(object_id)
        try:
            yield
        finally:
            release()

    def in_use(self) -> int:
        return len(self._locks)

    def _leave(self, object_id: str, entry: tuple[asyncio.Lock, list[int]]) -> None:
        users = entry[1]
        users[0] -= 1
        if users[0] == 0 and self._locks.get(object_id) is entry:
            del self._locks[object_id]
