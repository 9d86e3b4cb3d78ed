from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from application.fleet import Fleet
from domain.errors import DiscoveryUnavailable
from domain.ports import NodeDiscovery

__all__ = ["FleetWatcher"]

logger = logging.getLogger(__name__)


class FleetWatcher:
    """Keeps the fleet current from discovery's change feed, in the background.

    Every (re)connection starts with a full re-listing, as changes may have been missed while
    disconnected; after that, each change triggers one, and so does every ``resync_seconds`` of
    quiet, as a safety net. When discovery breaks, the fleet keeps its last view and the watcher
    reconnects with exponential backoff. Beside it, the nodes' drain marks are read every
    ``drain_check_seconds``.
    """

    def __init__(
        self,
        fleet: Fleet,
        discovery: NodeDiscovery,
        *,
        resync_seconds: float,
        drain_check_seconds: float = 2.0,
        initial_backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._fleet = fleet
        self._discovery = discovery
        self._resync_seconds = resync_seconds
        self._drain_check_seconds = drain_check_seconds
        self._initial_backoff = initial_backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._sleep = sleep
        self._backoff = initial_backoff_seconds

    async def run(self) -> None:
        """Run until cancelled."""
        await asyncio.gather(self._follow_changes(), self._read_drain_marks())

    async def _read_drain_marks(self) -> None:
        # A drain is marked on the node, which the discovery feed does not report.
        while True:
            await asyncio.sleep(self._drain_check_seconds)
            try:
                await self._fleet.refresh_drain_marks()
            except Exception:
                logger.exception("reading the drain marks failed; trying again")

    async def _follow_changes(self) -> None:
        while True:
            try:
                await self._follow()
            except DiscoveryUnavailable as exc:
                self._fleet.record_failure(exc)
            except Exception:
                # A bug here must not stop the fleet from ever being refreshed again.
                logger.exception("the fleet watcher failed; restarting it")
            self._fleet.record_reconnect()
            await self._sleep(self._backoff)
            self._backoff = min(self._backoff * 2, self._max_backoff)

    async def _follow(self) -> None:
        feed = await self._discovery.watch()
        try:
            await self._fleet.refresh()
            self._backoff = self._initial_backoff
            while True:
                await feed.next_change(self._resync_seconds)
                await self._fleet.refresh()
        finally:
            await feed.close()
