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
    """Admission to a node, its cap of requests waiting for it, and what its answers teach its
    breaker.

    A request is refused at once (503) when the node's breaker is open or when the node already has
    its cap of requests waiting for an answer. The cap counts requests waiting for the node (from
    sending a request, or the end of an upload's body, to the node's response headers), not bytes
    moving at a client's pace: a slow client must not use up the node for everyone else, and a node
    that stalls mid-body is cut off by the idle timeout instead. Only a node that could not be
    reached (or timed out) counts against its breaker; any answer, even an error, shows it is
    alive.
    """

    def __init__(self, breakers: NodeBreakers, limits: InFlightLimits) -> None:
        self.breakers = breakers
        self.limits = limits

    def admit(self, node: Node) -> None:
        """Refuse at once a request the node cannot take now (resting, or at its cap)."""
        retry_after = self.breakers.admit(node.name)
        if retry_after is not None:
            raise NodeUnavailable(
                node.name, "it failed repeatedly and is resting", retry_after_seconds=retry_after
            )
        if self.limits.in_flight(node.name) >= self.limits.max_per_node:
            raise self._overloaded(node)

    def available(self, node: Node) -> bool:
        """Whether the node is running, not resting and under its cap (asks nothing, starts no
        probe): where a replicated write or read may go."""
        return (
            node.is_up
            and not self.breakers.resting(node.name)
            and self.limits.in_flight(node.name) < self.limits.max_per_node
        )

    def hold(self, node: Node) -> Callable[[], None]:
        """Take a place in ``node``'s cap; the function returned gives it back (twice is harmless).

        For a request already admitted: the breaker is not asked again (it may be the one probe).
        """
        if not self.limits.try_enter(node.name):
            raise self._overloaded(node)
        return _Slot(self.limits, node.name).release

    async def observe(self, node: Node, operation: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``operation`` against ``node`` and tell its breaker how it went."""
        try:
            result = await operation()
        except NodeUnreachable:
            self.breakers.record_failure(node.name)
            raise
        except GatewayError:
            # The node did answer (not found, a refused header, ...). A cancelled request says
            # nothing either way; a probe it was leaves the breaker to its own timeout.
            self.breakers.record_success(node.name)
            raise
        self.breakers.record_success(node.name)
        return result

    async def call(self, node: Node, operation: Callable[[], Awaitable[_T]]) -> _T:
        """``operation`` on ``node``, admitted and holding a place in its cap until it returns."""
        self.admit(node)
        release = self.hold(node)
        try:
            return await self.observe(node, operation)
        finally:
            release()

    def _overloaded(self, node: Node) -> NodeOverloaded:
        return NodeOverloaded(
            node.name,
            f"it already has {self.limits.max_per_node} requests waiting for it",
            retry_after_seconds=1,
        )


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
