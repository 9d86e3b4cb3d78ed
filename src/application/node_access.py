from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from domain.circuit_breaker import NodeBreakers
from domain.errors import GatewayError, NodeOverloaded, NodeUnavailable, NodeUnreachable
from domain.in_flight import InFlightLimits
from domain.node import Node

__all__ = ["NodeAccess"]

_T = TypeVar("_T")


class NodeAccess:
    """Admission to a node, and what its answers teach its breaker.

    A request is refused at once (503) when the node's breaker is open or when the node already has
    its cap of requests in flight; otherwise it takes a slot until ``release`` is called. Only a
    node that could not be reached (or timed out) counts against its breaker; any answer, even an
    error, shows it is alive.
    """

    def __init__(self, breakers: NodeBreakers, limits: InFlightLimits) -> None:
        self.breakers = breakers
        self.limits = limits

    def enter(self, node: Node) -> Callable[[], None]:
        """Take a slot on ``node``; the function returned gives it back (twice is harmless)."""
        retry_after = self.breakers.admit(node.name)
        if retry_after is not None:
            raise NodeUnavailable(
                node.name, "it failed repeatedly and is resting", retry_after_seconds=retry_after
            )
        if not self.limits.try_enter(node.name):
            raise NodeOverloaded(
                node.name,
                f"it already has {self.limits.max_per_node} requests in flight",
                retry_after_seconds=1,
            )
        return _Slot(self.limits, node.name).release

    async def observe(self, node: Node, operation: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``operation`` against ``node`` and tell its breaker how it went."""
        try:
            result = await operation()
        except NodeUnreachable as exc:
            exc.node_name = node.name
            self.breakers.record_failure(node.name)
            raise
        except GatewayError as exc:
            # The node did answer (not found, a refused header, ...). A cancelled request says
            # nothing either way; a probe it was leaves the breaker to its own timeout.
            exc.node_name = node.name
            self.breakers.record_success(node.name)
            raise
        self.breakers.record_success(node.name)
        return result

    async def call(self, node: Node, operation: Callable[[], Awaitable[_T]]) -> _T:
        """``operation`` on ``node`` within a slot that is given back when it returns."""
        release = self.enter(node)
        try:
            return await self.observe(node, operation)
        finally:
            release()


class _Slot:
    """One request's place in its node's cap, given back once however often it is released."""

    __slots__ = ("_limits", "_node_name")

    def __init__(self, limits: InFlightLimits, node_name: str) -> None:
        self._limits: InFlightLimits | None = limits
        self._node_name = node_name

    def release(self) -> None:
        if self._limits is not None:
            self._limits.leave(self._node_name)
            self._limits = None
