from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BreakerState", "NodeBreakers"]


@dataclass
class _Breaker:
    consecutive_failures: int = 0
    opened_at: float | None = None
    probe_started_at: float | None = None


@dataclass(frozen=True, slots=True)
class BreakerState:
    open: bool
    consecutive_failures: int


class NodeBreakers:
    """One circuit breaker per node, so a dead node fails fast instead of timing out every time.

    Closed: requests flow, and ``failure_threshold`` consecutive connection failures open it.
    Open: requests are refused at once for ``cooldown_seconds``. Then one request at a time probes
    the node (half-open): success closes the breaker, failure opens it for another cool-down.
    A probe that never reports back stops blocking others after one more cool-down.
    """

    def __init__(
        self,
        failure_threshold: int,
        cooldown_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self._threshold = failure_threshold
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._breakers: dict[str, _Breaker] = {}

    def admit(self, node_name: str) -> float | None:
        """None when a request may go to the node; else the seconds until it may be tried again."""
        breaker = self._breakers.get(node_name)
        if breaker is None or breaker.opened_at is None:
            return None
        now = self._clock()
        reopens_at = breaker.opened_at + self._cooldown
        if now < reopens_at:
            return reopens_at - now
        probe_started_at = breaker.probe_started_at
        if probe_started_at is not None and now < probe_started_at + self._cooldown:
            return self._cooldown
        breaker.probe_started_at = now
        return None

    def resting(self, node_name: str) -> bool:
        """Whether ``admit`` would refuse now (it may instead start a probe); asks nothing."""
        breaker = self._breakers.get(node_name)
        if breaker is None or breaker.opened_at is None:
            return False
        now = self._clock()
        if now < breaker.opened_at + self._cooldown:
            return True
        probe = breaker.probe_started_at
        return probe is not None and now < probe + self._cooldown

    def record_success(self, node_name: str) -> None:
        self._breakers.pop(node_name, None)

    def record_failure(self, node_name: str) -> None:
        breaker = self._breakers.setdefault(node_name, _Breaker())
        breaker.consecutive_failures += 1
        breaker.probe_started_at = None
        if breaker.opened_at is not None or breaker.consecutive_failures >= self._threshold:
            breaker.opened_at = self._clock()

    def state(self, node_name: str) -> BreakerState:
        breaker = self._breakers.get(node_name)
        if breaker is None:
            return BreakerState(open=False, consecutive_failures=0)
        return BreakerState(breaker.opened_at is not None, breaker.consecutive_failures)
