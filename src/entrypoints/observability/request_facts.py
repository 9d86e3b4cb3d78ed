"""What a handler learned about a request, for its log line and its metrics."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

__all__ = ["RequestFacts"]


class RequestFacts:
    """What a handler learned about a request (object ID, node), for its log line and metrics.

    Kept in the ASGI scope's state so the handlers and the wrapper share it without globals.
    """

    KEY = "gateway_request_facts"

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.object_id: str | None = None
        self.node: str | None = None
        self.node_failed = False
        # Set by routes that Litestar does not template (the object routes are a mount).
        self.route: str | None = None
        # The client went away (or stopped reading) before the whole answer was sent.
        self.client_closed = False
        # The object was found on a node other than its owner (not rebalanced yet).
        self.from_fallback = False
        # Replicated IDs only: the copies a write reached, or the replicas a read compared.
        self.replicas: int | None = None
        # With tracing on: the request's trace, for its log line.
        self.trace_id: str | None = None
        # With auth on: whose credential allowed the request ("token <id>", "signed <key id>");
        # public IDs only, never a token or a signature.
        self.principal: str | None = None

    @classmethod
    def of(cls, state: MutableMapping[str, Any]) -> RequestFacts | None:
        facts = state.get(cls.KEY)
        return facts if isinstance(facts, RequestFacts) else None
