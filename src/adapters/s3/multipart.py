"""Bodies of unknown length (or over S3's 5 GiB single-PUT limit) as multipart uploads.

The body is cut into parts (at least 5 MiB), each held in a ``PartBuffer`` while it fills and is
sent, one part per upload at a time; a body that ends within its first part becomes one PUT.
Nothing of an unfinished upload is ever visible: a failure aborts it on the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Mapping

from minio.helpers import md5sum_hash
from minio.xml import Element, SubElement, getbytes

from adapters.s3.buckets import Buckets
from adapters.s3.responses import error_for, etag_of, raise_for, read_document, xml_text
from adapters.s3.transport import S3Transport
from adapters.s3.upload_budget import PartBuffer, PartSpool
from adapters.s3.uploads import Uploads, check_length
from domain.errors import GatewayError, NodeUnavailable
from domain.node import Node
from domain.objects import ObjectInfo, quoted_etag, unquoted_etag

__all__ = ["MultipartUploads"]


class MultipartUploads:
    def __init__(
        self, transport: S3Transport, buckets: Buckets, uploads: Uploads, spool: PartSpool
    ) -> None:
        self._transport = transport
        self._buckets = buckets
        self._uploads = uploads
        self._spool = spool

    async def put(
        self,
        node: Node,
        key: str,
        body: AsyncIterator[bytes],
        length: int | None,
        content_type: str,
    ) -> ObjectInfo:
        """A multipart upload, one part at a time; one PUT if the body fits in one part. Each
        part carries its checksum (Content-MD5), which the node checks."""
        parts = _Parts(body, self._transport.settings.part_size_bytes)
        upload_id: str | None = None
        etags: list[str] = []
        try:
            while True:
                # A part is made once bytes of it are here: a client that has not started holds
                # nothing, and one that trickles holds only what it sent.
                await parts.wait_for_data()
                part = self._spool.new_part()
                try:
                    await parts.fill(part)
                    if parts.ended and upload_id is None:
                        # The whole body fits in one part: one ordinary PUT, no multipart.
                        check_length(parts.total, length)
                        etag = await self._put_part(node, key, part, content_type)
                        return ObjectInfo(size=part.size, content_type=content_type, etag=etag)
                    if upload_id is None:
                        upload_id = await self._buckets.retrying(
                            node, lambda: self._create(node, key, content_type)
                        )
                    if part.size or not etags:
                        number = str(len(etags) + 1)
                        etags.append(
                            await self._put_part(
                                node,
                                key,
                                part,
                                content_type=None,
                                query={"partNumber": number, "uploadId": upload_id},
                            )
                        )
                finally:
                    await part.close()
                if parts.ended:
                    break
            check_length(parts.total, length)
            etag = await self._complete(node, key, upload_id, etags)
        except BaseException:
            if upload_id is not None:
                # Aborting frees the node's space for the parts. Shielded: a cancelled request
                # still cleans up.
                with contextlib.suppress(GatewayError, asyncio.CancelledError):
                    await asyncio.shield(self._abort(node, key, upload_id))
            raise
        return ObjectInfo(size=parts.total, content_type=content_type, etag=etag)

    async def _put_part(
        self,
        node: Node,
        key: str,
        part: PartBuffer,
        content_type: str | None,
        *,
        query: Mapping[str, str] | None = None,
    ) -> str:
        whole = part.whole()
        return await self._buckets.retrying(
            node,
            lambda: self._uploads.put_bytes(
                node,
                key,
                part.size,
                part.slices() if whole is None else whole,
                content_type,
                query=query,
                headers={"Content-MD5": part.md5()},
            ),
        )

    async def _create(self, node: Node, key: str, content_type: str) -> str:
        timeout = self._transport.settings.first_byte_timeout_seconds
        response = await self._transport.request(
            node,
            "POST",
            key,
            query={"uploads": ""},
            headers={"Content-Type": content_type},
        )
        async with response:
            if response.status != 200:
                await raise_for(node, response, timeout, from_client=True)
            upload_id = xml_text(await read_document(node, response, timeout), "UploadId")
        if not upload_id:
            raise NodeUnavailable(node.name, "it started a multipart upload without an ID")
        return upload_id

    async def _complete(
        self,
        node: Node,
        key: str,
        upload_id: str,
        etags: list[str],
    ) -> str:
        element = Element("CompleteMultipartUpload")
        for number, etag in enumerate(etags, start=1):
            part = SubElement(element, "Part")
            SubElement(part, "PartNumber", str(number))
            SubElement(part, "ETag", quoted_etag(etag))
        document = getbytes(element)
        headers = {
            "Content-Type": "application/xml",
            "Content-MD5": md5sum_hash(document) or "",
        }
        # Assembling a large upload takes the node a while before it answers.
        timeout = self._transport.settings.idle_timeout_seconds
        response = await self._transport.request(
            node,
            "POST",
            key,
            timeout=timeout,
            query={"uploadId": upload_id},
            headers=headers,
            data=document,
            payload_hash=hashlib.sha256(document).hexdigest(),
        )
        async with response:
            answer = await read_document(node, response, timeout)
            # S3 may report a failed completion with 200 and an <Error> document.
            if response.status != 200 or xml_text(answer, "Code"):
                raise error_for(node, response.status, answer, from_client=True)
            etag = unquoted_etag(xml_text(answer, "ETag") or "")
        return etag or etag_of(response)

    async def _abort(self, node: Node, key: str, upload_id: str) -> None:
        response = await self._transport.request(node, "DELETE", key, query={"uploadId": upload_id})
        async with response:
            if response.status not in (200, 204, 404):
                await raise_for(node, response, self._transport.settings.first_byte_timeout_seconds)


class _Parts:
    """Cuts an async body into parts of ``part_size`` bytes, one part at a time."""

    def __init__(self, body: AsyncIterator[bytes], part_size: int) -> None:
        self._body = body
        self._part_size = part_size
        self._carry = b""
        self.total = 0
        self.ended = False

    async def wait_for_data(self) -> None:
        if not self._carry and not self.ended:
            chunk = await anext(self._body, None)
            if chunk is None:
                self.ended = True
            else:
                self._carry = chunk

    async def fill(self, part: PartBuffer) -> None:
        """Fill ``part`` up to the part size (less when the body ends first)."""
        carry, self._carry = self._carry[: self._part_size], self._carry[self._part_size :]
        await part.append(carry)
        while part.size < self._part_size and not self.ended:
            chunk = await anext(self._body, None)
            if chunk is None:
                self.ended = True
                break
            room = self._part_size - part.size
            if len(chunk) > room:
                self._carry = chunk[room:]
                chunk = chunk[:room]
            await part.append(chunk)
        self.total += part.size
