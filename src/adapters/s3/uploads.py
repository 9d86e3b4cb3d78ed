"""Writing an object in one PUT: a body already in hand, or the client's body streamed through.

- a small body (socket-sized) is gathered and sent in one piece, which costs far less per request
  than a streamed body;
- a body with a known length up to S3's 5 GiB single-PUT limit is one streamed PUT
  (``UNSIGNED-PAYLOAD``) that holds nothing beyond socket-sized chunks, with backpressure both
  ways: the client's socket is read only as fast as the node's accepts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from adapters.deadline import TaskDeadline
from adapters.s3.buckets import Buckets
from adapters.s3.responses import etag_of, raise_for
from adapters.s3.transport import UNSIGNED_PAYLOAD, RequestBody, S3Transport
from domain.errors import IncompleteBody, NodeUnreachable
from domain.node import Node
from domain.objects import ObjectInfo
from domain.sizes import SMALL_OBJECT_BYTES, MiB

__all__ = ["SMALL_BODY_BYTES", "Uploads", "check_length"]

SMALL_BODY_BYTES = SMALL_OBJECT_BYTES
# A buffered body goes out at the node's pace; its time to first byte allows for a modest rate.
_ASSUMED_NODE_BYTES_PER_SECOND = 10 * MiB


def check_length(received: int, announced: int | None) -> None:
    if announced is not None and received != announced:
        raise IncompleteBody(f"the body had {received} bytes, not the {announced} announced")


class Uploads:
    """PUTs of whole objects (and of parts, whose bytes are in hand as well)."""

    def __init__(self, transport: S3Transport, buckets: Buckets) -> None:
        self._transport = transport
        self._buckets = buckets

    async def put_bytes(
        self,
        node: Node,
        key: str,
        size: int,
        data: RequestBody,
        content_type: str | None,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        from_client: bool = True,
    ) -> str:
        """PUT a body whose size is known and that is in hand; its ETag."""
        request_headers = {"Content-Length": str(size), **(headers or {})}
        if content_type is not None:
            request_headers["Content-Type"] = content_type
        settings = self._transport.settings
        response = await self._transport.request(
            node,
            "PUT",
            key,
            timeout=settings.first_byte_timeout_seconds + size / _ASSUMED_NODE_BYTES_PER_SECOND,
            query=query,
            headers=request_headers,
            data=data,
            payload_hash=UNSIGNED_PAYLOAD,
        )
        async with response:
            if response.status != 200:
                await raise_for(
                    node, response, settings.first_byte_timeout_seconds, from_client=from_client
                )
            return etag_of(response)

    async def put_small(  # noqa: PLR0917 - private to the storage, called from one place
        self,
        node: Node,
        key: str,
        body: AsyncIterator[bytes],
        length: int,
        content_type: str,
        headers: Mapping[str, str],
    ) -> ObjectInfo:
        """``headers``: the object's metadata and checksum."""
        data = bytes(await _gathered(body, length))
        etag = await self._buckets.retrying(
            node,
            lambda: self.put_bytes(node, key, length, data, content_type, headers=headers),
        )
        return ObjectInfo(size=length, content_type=content_type, etag=etag)

    async def put_streamed(  # noqa: PLR0917 - private to the storage, called from one place
        self,
        node: Node,
        key: str,
        body: AsyncIterator[bytes],
        length: int,
        content_type: str,
        headers: Mapping[str, str],
    ) -> ObjectInfo:
        """One PUT whose body is the client's, chunk by chunk, as the node accepts it.

        ``headers``: the object's metadata and checksum.
        """
        settings = self._transport.settings
        sent = 0
        body_failure: BaseException | None = None
        deadline = TaskDeadline()

        async def relayed() -> AsyncIterator[bytes]:
            nonlocal sent, body_failure
            try:
                while True:
                    # While the client is sending, its own timeout applies, not the node's.
                    deadline.clear()
                    chunk = await anext(body, None)
                    if chunk is None:
                        break
                    sent += len(chunk)
                    if sent > length:
                        raise IncompleteBody("the body is longer than its Content-Length")
                    deadline.set(settings.idle_timeout_seconds)
                    yield chunk
                if sent != length:
                    raise IncompleteBody(f"the body ended after {sent} of {length} bytes")
            except BaseException as exc:
                # Raised here, aiohttp aborts the request before the node has the whole body, so
                # the node stores nothing; the cause is re-raised by send().
                body_failure = exc
                raise
            deadline.set(settings.first_byte_timeout_seconds)

        try:
            async with deadline.running(settings.first_byte_timeout_seconds):
                response = await self._transport.send(
                    node,
                    "PUT",
                    key,
                    headers={
                        "Content-Type": content_type,
                        "Content-Length": str(length),
                        **headers,
                    },
                    data=relayed() if length else b"",
                    payload_hash=UNSIGNED_PAYLOAD,
                    body_failure=lambda: body_failure,
                    bounded_by_caller=True,
                )
        except TimeoutError:
            raise NodeUnreachable(node.name, "it stopped accepting the upload") from None
        async with response:
            if response.status != 200:
                await raise_for(
                    node, response, settings.first_byte_timeout_seconds, from_client=True
                )
            return ObjectInfo(size=sent, content_type=content_type, etag=etag_of(response))


async def _gathered(body: AsyncIterator[bytes], length: int) -> bytearray:
    data = bytearray()
    async for chunk in body:
        data += chunk
        if len(data) > length:
            raise IncompleteBody("the body is longer than its Content-Length")
    check_length(len(data), length)
    return data
