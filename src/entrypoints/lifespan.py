"""What runs while the gateway serves, and what it lets go of when it stops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from application.background import Background
from application.fleet_watcher import FleetWatcher
from application.writes import VersionWrites
from domain.ports import ObjectStorage

__all__ = ["GatewayLifespan"]


class GatewayLifespan:
    """Keeps the fleet current while the app serves; on stop, stops the copies still going in
    the background (read repairs, removals, copies slower than their write's quorum), closes the
    storage's connections (they belong to the server's event loop) and releases the container's
    resources."""

    def __init__(
        self,
        watcher: FleetWatcher,
        storage: ObjectStorage,
        background: list[Background],
        writes: VersionWrites,
        release_resources: Callable[[], object],
    ) -> None:
        self._watcher = watcher
        self._storage = storage
        self._background = background
        self._writes = writes
        self._release_resources = release_resources

    @contextlib.asynccontextmanager
    async def __call__(self, _: object) -> AsyncIterator[None]:
        watching = asyncio.create_task(self._watcher.run(), name="fleet-watcher")
        try:
            yield
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
            for work in self._background:
                await work.aclose()
            await self._writes.aclose()
            await self._storage.aclose()
            self._release_resources()
