"""Work a request leaves behind for later: repairing a stale replica, removing versions a newer
one made useless, finishing copies past their write's quorum. Bounded, and let go at shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from domain.errors import GatewayError

__all__ = ["Background", "BackgroundCounts"]

logger = logging.getLogger(__name__)


@dataclass
class BackgroundCounts:
    scheduled: int = 0
    done: int = 0
    failed: int = 0
    # Not scheduled: too many already waiting (the repair command catches what they would do).
    dropped: int = 0


class Background:
    """At most ``concurrency`` jobs run at once and ``backlog`` wait; more are dropped. A job is
    known by a key: one already waiting under the same key is not scheduled twice."""

    def __init__(self, *, concurrency: int = 4, backlog: int = 256) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._backlog = backlog
        self._pending: dict[str, asyncio.Task[None]] = {}
        self.counts = BackgroundCounts()

    def submit(self, key: str, job: Callable[[], Awaitable[None]]) -> bool:
        """Run ``job`` later; False when it was not scheduled (already waiting, or no room)."""
        if key in self._pending:
            return False
        if len(self._pending) >= self._backlog:
            self.counts.dropped += 1
            return False
        self.counts.scheduled += 1
        task = asyncio.get_running_loop().create_task(self._run(key, job))
        self._pending[key] = task
        task.add_done_callback(lambda _: self._pending.pop(key, None))
        return True

    async def _run(self, key: str, job: Callable[[], Awaitable[None]]) -> None:
        async with self._slots:
            try:
                await job()
            except GatewayError as exc:
                self.counts.failed += 1
                logger.info("%s: %s", key, exc.detail)
            except Exception:
                # A bug, not a node's failure: told loudly, and it stops nothing else.
                self.counts.failed += 1
                logger.exception("%s failed", key)
            else:
                self.counts.done += 1

    @property
    def waiting(self) -> int:
        return len(self._pending)

    async def idle(self) -> None:
        """Until every job scheduled so far (and any they schedule) has finished."""
        while self._pending:
            await asyncio.gather(*self._pending.values(), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._pending.values()):
            task.cancel()
        await asyncio.gather(*self._pending.values(), return_exceptions=True)
