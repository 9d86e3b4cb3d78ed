"""A deadline that moves often and costs an assignment each time, with one timer behind it.

Used where a deadline moves on every step: the edge's time limit for a request head (moved per
request of a kept-alive connection), and a node request whose body moves it as bytes go out.
Re-arming a timer on every move would cost a heap operation each time; instead the one timer
armed re-arms itself when it fires before the deadline, and calls ``on_expiry`` once it has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

__all__ = ["MovableDeadline", "TaskDeadline"]


class MovableDeadline:
    """Calls ``on_expiry`` once the deadline set last has passed (unless cleared first)."""

    __slots__ = ("_expires", "_handle", "_loop", "_on_expiry")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_expiry: Callable[[], None]) -> None:
        self._loop = loop
        self._on_expiry = on_expiry
        self._expires: float | None = None
        self._handle: asyncio.TimerHandle | None = None

    def set(self, seconds: float) -> None:
        self._expires = self._loop.time() + seconds
        if self._handle is None:
            self._handle = self._loop.call_at(self._expires, self._check)

    def clear(self) -> None:
        """No deadline until the next ``set``; the timer stays armed and finds nothing to do."""
        self._expires = None

    def cancel(self) -> None:
        """No deadline, and no timer: for good (or until the next ``set``)."""
        self._expires = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        expires = self._expires
        if expires is None:
            return
        if self._loop.time() < expires:
            self._handle = self._loop.call_at(expires, self._check)
            return
        self._expires = None
        self._on_expiry()


class TaskDeadline:
    """A movable deadline around the current task: when it passes, the task is cancelled, and
    ``running`` turns that cancellation into ``TimeoutError``. Moving it after the block ended
    (a node may answer before the request's body is done) does nothing."""

    __slots__ = ("_deadline", "_fired", "_task")

    def __init__(self) -> None:
        self._deadline: MovableDeadline | None = None
        self._task: asyncio.Task[object] | None = None
        self._fired = False

    @contextlib.asynccontextmanager
    async def running(self, initial_seconds: float) -> AsyncIterator[None]:
        task = self._task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        self._deadline = MovableDeadline(asyncio.get_running_loop(), self._expire)
        self._deadline.set(initial_seconds)
        try:
            yield
        except asyncio.CancelledError:
            if self._fired and task.uncancel() <= cancelling:
                raise TimeoutError from None
            raise
        finally:
            self._task = None
            self._deadline.cancel()
            self._deadline = None

    def set(self, seconds: float) -> None:
        if self._deadline is not None:
            self._deadline.set(seconds)

    def clear(self) -> None:
        if self._deadline is not None:
            self._deadline.clear()

    def _expire(self) -> None:
        if self._task is not None:
            self._fired = True
            self._task.cancel()
