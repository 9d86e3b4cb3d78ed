from __future__ import annotations

__all__ = ["InFlightLimits"]


class InFlightLimits:
    """A cap on the requests that may wait for each node's answer at once.

    A node that stops answering would otherwise collect every request for its IDs until they time
    out; with the cap, requests beyond it are refused at once and the rest of the gateway is not
    held hostage. Requests enter and leave on one event loop, so plain counters suffice.
    """

    def __init__(self, max_per_node: int) -> None:
        if max_per_node < 1:
            raise ValueError("max_per_node must be at least 1")
        self._max = max_per_node
        self._counts: dict[str, int] = {}

    @property
    def max_per_node(self) -> int:
        return self._max

    def try_enter(self, node_name: str) -> bool:
        count = self._counts.get(node_name, 0)
        if count >= self._max:
            return False
        self._counts[node_name] = count + 1
        return True

    def leave(self, node_name: str) -> None:
        count = self._counts.get(node_name, 0) - 1
        if count > 0:
            self._counts[node_name] = count
        else:
            self._counts.pop(node_name, None)

    def in_flight(self, node_name: str) -> int:
        return self._counts.get(node_name, 0)
