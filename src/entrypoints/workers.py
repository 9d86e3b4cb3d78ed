"""Several worker processes serving one port: a supervisor that forks them, replaces one that dies,
and passes a stop on.

Each worker is a whole gateway (its own event loop, fleet view, breakers, caps, clock) on the same
listening sockets, which the supervisor opened before forking: the kernel hands each connection
to one of them. What must hold across workers already holds across gateways, since it lives on
the nodes (versions, drain marks, the job lease); what a worker keeps to itself is only an
optimisation. A worker that dies costs its own connections; the supervisor starts another.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from types import FrameType

__all__ = ["supervise"]

logger = logging.getLogger(__name__)

# A worker that dies this soon after it started is failing to start, not crashing under load: after
# this many in a row the supervisor gives up rather than fork for ever.
_QUICK_DEATH_SECONDS = 2.0
_QUICK_DEATHS_TOLERATED = 5
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def supervise(count: int, work: Callable[[int], None]) -> int:
    """Run ``work(index)`` in ``count`` forked processes until told to stop; the exit status.

    Call it before any thread or event loop exists in this process: only the calling thread
    survives a fork.
    """
    children: dict[int, tuple[int, float]] = {}  # pid -> (index, started)
    stopping: list[int] = []

    def start(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            for number in _SIGNALS:
                signal.signal(number, signal.SIG_DFL)
            status = 0
            try:
                work(index)
            except BaseException:  # its own error, reported before the process goes
                logger.exception("worker %d failed", index)
                status = 1
            finally:
                logging.shutdown()
                os._exit(status)
        children[pid] = (index, time.monotonic())

    def stop(number: int, _: FrameType | None) -> None:
        stopping.append(number)
        for pid in list(children):
            _signal(pid, signal.SIGTERM if number != signal.SIGQUIT else signal.SIGQUIT)

    for number in _SIGNALS:
        signal.signal(number, stop)
    for index in range(count):
        start(index)
    logger.info("%d worker processes serving", count)
    quick_deaths = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index, started = children.pop(pid, (-1, 0.0))
        if stopping or index < 0:
            continue
        quick_deaths = quick_deaths + 1 if time.monotonic() - started < _QUICK_DEATH_SECONDS else 0
        logger.warning(
            "worker %d (pid %d) ended (%s): starting another", index, pid, _describe(status)
        )
        if quick_deaths >= _QUICK_DEATHS_TOLERATED:
            logger.error("workers keep failing to start: stopping")
            stop(signal.SIGTERM, None)
            return 1
        start(index)
    return 0


def _signal(pid: int, number: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, number)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"status {os.WEXITSTATUS(status)}"
