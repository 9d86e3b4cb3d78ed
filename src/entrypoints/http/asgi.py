"""The ASGI messages of one exchange: the request body as it comes, and the answer as it goes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from litestar.types import Receive, Send

from domain.errors import BodyTooLarge, GatewayError, IncompleteBody
from entrypoints.http.errors import error_body, headers_for, status_for

__all__ = ["Response", "disconnected", "request_body", "send_error"]

_JSON = b"application/json"


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
    receive: Receive, timeout_seconds: float, max_bytes: int | None
) -> AsyncIterator[bytes]:
    """The request body as the server hands it over, with the client's failures as domain errors."""
    received = 0
    while True:
        try:
            async with asyncio.timeout(timeout_seconds):
                message = await receive()
        except TimeoutError:
            raise IncompleteBody(
                f"the client sent no data for {timeout_seconds:g} seconds"
            ) from None
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
