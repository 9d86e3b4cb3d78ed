"""The ASGI messages of one exchange: the request body as it comes, and the answer as it goes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from litestar.types import Receive, Scope, Send

from domain.errors import BodyTooLarge, BodyTooSlow, GatewayError, IncompleteBody
from entrypoints.http.errors import error_body, headers_for, status_for

__all__ = [
    "RESET_EXTENSION",
    "MinDataRate",
    "Response",
    "disconnected",
    "request_body",
    "reset_of",
    "send_error",
]

_JSON = b"application/json"
# The ASGI scope extension (``scope["extensions"][RESET_EXTENSION]["reset"]``, set by the edge in
# entrypoints.edge) with which an app that gives up on its client (one reading too slowly) resets
# the connection: at once, and without uvicorn logging the response it cut short as an error.
RESET_EXTENSION = "gateway.reset"


def reset_of(scope: Scope) -> Callable[[], None] | None:
    """The connection's reset, when the server offers one (the edge does; test clients do not)."""
    reset = ((scope.get("extensions") or {}).get(RESET_EXTENSION) or {}).get("reset")
    return reset if callable(reset) else None


@dataclass(frozen=True, slots=True)
class MinDataRate:
    """Kestrel's MinDataRate: once the gateway has waited ``grace_seconds`` for a client, the
    client must have moved ``bytes_per_second`` on average over the time it was waited for.

    Only time spent waiting for the client counts: not the time the gateway itself (or a node)
    took, so backpressure from a slow node is never held against the client.
    """

    bytes_per_second: int
    grace_seconds: float

    @classmethod
    def of(cls, bytes_per_second: int, grace_seconds: float) -> MinDataRate | None:
        """The rate, or None (no minimum) when ``bytes_per_second`` is 0."""
        return cls(bytes_per_second, grace_seconds) if bytes_per_second > 0 else None

    def allowance(self, moved: int) -> float:
        """How long a client that has moved ``moved`` bytes may have been waited for in all."""
        return max(self.grace_seconds, moved / self.bytes_per_second)


class Response:
    """Tracks whether the answer has started, so an error after that cuts the connection."""

    __slots__ = ("_send", "started")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def start(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        self.started = True
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def send_more(self, body: bytes) -> None:
        await self._send({"type": "http.response.body", "body": body, "more_body": True})

    async def finish(self, body: bytes) -> None:
        await self._send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(response: Response, error: GatewayError) -> None:
    body = error_body(error.code, error.detail)
    await response.start(
        status_for(error),
        [
            (b"content-type", _JSON),
            (b"content-length", b"%d" % len(body)),
            *(
                (name.lower().encode(), value.encode())
                for name, value in headers_for(error).items()
            ),
        ],
    )
    await response.finish(body)


async def request_body(
    receive: Receive,
    timeout_seconds: float,
    max_bytes: int | None,
    min_rate: MinDataRate | None = None,
) -> AsyncIterator[bytes]:
    """The request body as the server hands it over, with the client's failures as domain errors:
    silent for ``timeout_seconds``, or (after its grace) slower than ``min_rate``."""
    received = 0
    waited = 0.0
    clock = asyncio.get_running_loop().time
    while True:
        limit = timeout_seconds
        too_slow = False
        if min_rate is not None:
            # The moment the average would fall under the minimum, unless more arrives first.
            left = min_rate.allowance(received) - waited
            if left < limit:
                limit, too_slow = max(left, 0.0), True
        started = clock()
        try:
            async with asyncio.timeout(limit):
                message = await receive()
        except TimeoutError:
            if too_slow and min_rate is not None:
                waited += clock() - started
                rate = received / waited if waited > 0 else 0.0
                raise BodyTooSlow(
                    f"the body arrived at {rate:.0f} bytes/s over {waited:.1f} s; "
                    f"the minimum is {min_rate.bytes_per_second} bytes/s"
                ) from None
            raise IncompleteBody(
                f"the client sent no data for {timeout_seconds:g} seconds"
            ) from None
        waited += clock() - started
        if message["type"] == "http.disconnect":
            raise IncompleteBody("the client disconnected before sending the whole body")
        chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
        if chunk:
            received += len(chunk)
            if max_bytes is not None and received > max_bytes:
                raise BodyTooLarge(f"the body exceeds the maximum of {max_bytes} bytes")
            yield chunk
        if not message.get("more_body", False):
            return


async def disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
