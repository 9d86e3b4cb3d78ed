"""Every node's bucket, made on first use and again when a node says it has none."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from adapters.s3.keys import MIGRATED_MARK_KEY
from adapters.s3.responses import NoSuchBucket, error_for, raise_for, read_document, xml_text
from adapters.s3.transport import S3Transport
from domain.node import Node

__all__ = ["Buckets"]

_T = TypeVar("_T")
_BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})


@dataclass(frozen=True, slots=True)
class _NodeKey:
    """A node as far as its bucket goes: a node recreated elsewhere or with other keys is new."""

    endpoint: str
    access_key: str
    # Kept out of repr, as in Credentials: logging a key must never leak the secret.
    secret_key: str = field(repr=False)

    @classmethod
    def of(cls, node: Node) -> _NodeKey:
        credentials = node.credentials
        return cls(node.endpoint or "", credentials.access_key, credentials.secret_key)


class Buckets:
    """Knows which nodes have the bucket, and makes it where they do not (any more)."""

    def __init__(self, transport: S3Transport) -> None:
        self._transport = transport
        self._ready: set[_NodeKey] = set()

    async def ensure(self, node: Node, *, again: bool = False) -> None:
        """Make the node's bucket unless it is known to exist (``again``: known no longer)."""
        key = _NodeKey.of(node)
        if again:
            self._ready.discard(key)
        if key in self._ready:
            return
        timeout = self._transport.settings.first_byte_timeout_seconds
        response = await self._transport.request(node, "HEAD", None)
        async with response:
            exists = response.status == 200
            if not exists and response.status != 404:
                await raise_for(node, response, timeout)
        if not exists:
            response = await self._transport.request(node, "PUT", None)
            async with response:
                document = await read_document(node, response, timeout)
                # 409: another request or gateway replica created it first.
                if response.status not in (200, 409):
                    raise error_for(node, response.status, document)
                if response.status == 409 and xml_text(document, "Code") not in (
                    _BUCKET_EXISTS_CODES | {None}
                ):
                    raise error_for(node, response.status, document)
            if response.status == 200:
                await self._mark_migrated(node)
        self._ready.add(key)

    async def _mark_migrated(self, node: Node) -> None:
        """A bucket this gateway made never held an object under the layout before versions had
        keys of their own: reads there need not look for one."""
        note = b"made with versions under by-id/"
        response = await self._transport.request(
            node,
            "PUT",
            MIGRATED_MARK_KEY,
            headers={"Content-Length": str(len(note)), "Content-Type": "text/plain"},
            data=note,
            payload_hash=hashlib.sha256(note).hexdigest(),
        )
        async with response:
            if response.status != 200:
                await raise_for(node, response, self._transport.settings.first_byte_timeout_seconds)

    async def retrying(self, node: Node, operation: Callable[[], Awaitable[_T]]) -> _T:
        """``operation``, made once more (after making the bucket) if the node says it has none."""
        try:
            return await operation()
        except NoSuchBucket:
            await self.ensure(node, again=True)
            return await operation()
