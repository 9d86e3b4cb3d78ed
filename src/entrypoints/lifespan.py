"""What runs while the gateway serves, and what it lets go of when it stops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from application.auth import AccessControl
from application.background import Background
from application.fleet_watcher import FleetWatcher
from application.tidying import Tidying
from application.writes import VersionWrites
from domain.ports import ObjectStorage
from entrypoints.observability.metrics import GatewayMetrics

__all__ = ["GatewayLifespan"]


class GatewayLifespan:
    """Keeps the fleet (and, with auth on, the tokens) current while the app serves; on stop,
    stops the copies still going in the background (read repairs, removals, copies slower than
    their write's quorum), closes the storage's connections (they belong to the server's event
    loop) and releases the container's resources."""

    def __init__(
        self,
        watcher: FleetWatcher,
        storage: ObjectStorage,
        background: list[Background | Tidying],
        writes: VersionWrites,
        release_resources: Callable[[], object],
        *,
        access: AccessControl | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self._watcher = watcher
        self._storage = storage
        self._background = background
        self._writes = writes
        self._release_resources = release_resources
        self._access = access
        self._metrics = metrics

    @contextlib.asynccontextmanager
    async def __call__(self, _: object) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(self._watcher.run(), name="fleet-watcher")]
        if self._access is not None:
            # With auth on: the tokens file's changes take effect without a restart.
            tasks.append(asyncio.create_task(self._access.follow(), name="tokens-file"))
        if self._metrics is not None and self._metrics.several_processes:
            # Every process's counts, in the one answer any of them gives to /metrics.
            tasks.append(asyncio.create_task(self._metrics.keep_publishing(), name="metrics"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for work in self._background:
                await work.aclose()
            await self._writes.aclose()
            await self._storage.aclose()
            self._release_resources()
