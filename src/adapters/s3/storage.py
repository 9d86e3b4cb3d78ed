"""The ``ObjectStorage`` port on MinIO (S3) nodes: each method one node request (or a few).

Bodies stream between the client's socket and the node's with backpressure both ways; a small
object is read in one go and sent in one piece. How a write goes up depends on what is known of
its length (``uploads``, ``multipart``); every failure reaches the caller as a domain error.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import replace

from minio.datatypes import Object as S3Object
from minio.xml import findall, findtext
from opentelemetry.trace import Tracer

from adapters.s3.buckets import Buckets
from adapters.s3.multipart import MultipartUploads
from adapters.s3.responses import (
    DELETED_HEADER,
    VERSION_HEADER,
    NoSuchBucket,
    ResponseBody,
    content_range_of,
    info_from,
    raise_for,
    read_document,
)
from adapters.s3.transport import MinioSettings, S3Transport, map_errors
from adapters.s3.upload_budget import PartSpool
from adapters.s3.uploads import SMALL_BODY_BYTES, Uploads, condition_headers
from domain.errors import NodeUnavailable, ObjectNotFound, RangeNotSatisfiable
from domain.node import DrainState, Node
from domain.object_id import ObjectId
from domain.objects import (
    ByteRange,
    ListedObject,
    ObjectInfo,
    StoredObject,
    WriteCondition,
    unquoted_etag,
)
from domain.versions import Version

__all__ = ["DRAIN_MARK_KEY", "MinioObjectStorage"]

_LIST_PAGE_SIZE = 1000
# Where a node's drain mark is kept: in its own bucket, under a key no object ID can take.
DRAIN_MARK_KEY = ".gateway/draining"
_DRAIN_STATE_HEADER = "x-amz-meta-gateway-drain"


class MinioObjectStorage:
    """The ``ObjectStorage`` and ``DrainMarks`` ports on MinIO nodes, over one pooled aiohttp
    session."""

    def __init__(
        self, settings: MinioSettings, part_spool: PartSpool, tracer: Tracer | None = None
    ) -> None:
        self._settings = settings
        self._transport = S3Transport(settings, tracer)
        self._buckets = Buckets(self._transport)
        self._uploads = Uploads(self._transport, self._buckets)
        self._multipart = MultipartUploads(
            self._transport, self._buckets, self._uploads, part_spool
        )

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def head(self, node: Node, object_id: ObjectId) -> ObjectInfo:
        response = await self._transport.request(node, "HEAD", object_id.value)
        async with response:
            if response.status != 200:
                await raise_for(node, response, self._settings.first_byte_timeout_seconds)
            return info_from(response.headers)

    async def get(
        self, node: Node, object_id: ObjectId, byte_range: ByteRange | None = None
    ) -> StoredObject:
        settings = self._settings
        headers = None if byte_range is None else {"Range": byte_range.header_value()}
        response = await self._transport.request(node, "GET", object_id.value, headers=headers)
        # Nodes answer a range three ways: 206 with Content-Range (MinIO), 200 with Content-Range
        # and only those bytes (rclone), or 200 with the whole object (servers that ignore Range),
        # which is then cut here.
        skip, keep = 0, -1
        try:
            if response.status == 416:
                response.close()
                stored = await self.head(node, object_id)
                if stored.deleted:
                    return _tombstone(stored)
                raise RangeNotSatisfiable(
                    _beyond(byte_range, stored.size), stored.size, node_name=node.name
                )
            if response.status not in (200, 206):
                await raise_for(node, response, settings.first_byte_timeout_seconds)
            info = info_from(response.headers)
            if info.deleted:
                response.close()
                return _tombstone(info)
            sent = info.size  # what the node's body holds
            content_range: tuple[int, int] | None = None
            if byte_range is not None and "Content-Range" in response.headers:
                start, end, total = content_range_of(node, response.headers["Content-Range"])
                # The whole object's size; its version stays (copies are compared by it).
                info = replace(info, size=total)
                content_range = (start, end)
            elif byte_range is not None:
                content_range = byte_range.resolve(info.size)
                if content_range is None:
                    response.close()
                    raise RangeNotSatisfiable(
                        _beyond(byte_range, info.size), info.size, node_name=node.name
                    )
                skip, keep = content_range[0], content_range[1] - content_range[0] + 1
            if sent <= settings.download_chunk_bytes:
                # Bounded by the session's read timeout, as the headers were.
                with map_errors(node, "sending the object"):
                    whole = await response.read()
                response.release()
                if keep >= 0:
                    whole = whole[skip : skip + keep]
                return StoredObject(info, _single(whole), _nothing, whole, content_range)
        except BaseException:
            response.close()
            raise

        # From here on the body streams: the node may pause up to the idle timeout between reads.
        if response.connection is not None and response.connection.protocol is not None:
            response.connection.protocol.read_timeout = settings.idle_timeout_seconds
        body = ResponseBody(
            response,
            node,
            chunk_bytes=settings.download_chunk_bytes,
            expected_bytes=sent,
            skip=skip,
            keep=keep,
        )
        return StoredObject(info, body.chunks(), body.close, content_range=content_range)

    async def put(
        self,
        node: Node,
        object_id: ObjectId,
        body: AsyncIterator[bytes],
        length: int | None,
        content_type: str,
        *,
        version: Version,
        deleted: bool = False,
        condition: WriteCondition | None = None,
    ) -> ObjectInfo:
        await self._buckets.ensure(node)
        metadata = {VERSION_HEADER: str(version)}
        if deleted:
            metadata[DELETED_HEADER] = "true"
        conditions = condition_headers(condition)
        key = object_id.value
        try:
            if length is not None and length <= SMALL_BODY_BYTES:
                info = await self._uploads.put_small(
                    node, key, body, length, content_type, {**metadata, **conditions}
                )
            elif length is not None and length <= self._settings.max_single_put_bytes:
                info = await self._uploads.put_streamed(
                    node, key, body, length, content_type, {**metadata, **conditions}
                )
            else:
                info = await self._multipart.put(
                    node, key, body, length, content_type, metadata, conditions
                )
        except NoSuchBucket:
            # Its bucket went after it was made (the node was recreated on an empty volume, say),
            # and a body that is streamed cannot be sent twice: the bucket is made again now, and
            # the client asked to retry.
            await self._buckets.ensure(node, again=True)
            raise NodeUnavailable(
                node.name,
                "its bucket was missing and has been created again; retry",
                retry_after_seconds=1,
            ) from None
        return replace(info, version=version, deleted=deleted)

    async def delete(self, node: Node, object_id: ObjectId) -> None:
        response = await self._transport.request(node, "DELETE", object_id.value)
        async with response:
            if response.status not in (200, 204):
                try:
                    await raise_for(node, response, self._settings.first_byte_timeout_seconds)
                except ObjectNotFound:
                    return  # no bucket yet: nothing to delete

    async def list_objects(
        self, node: Node, *, prefix: str = "", start_after: str = ""
    ) -> AsyncIterator[ListedObject]:
        timeout = self._settings.idle_timeout_seconds
        token: str | None = None
        while True:
            query = {"list-type": "2", "max-keys": str(_LIST_PAGE_SIZE)}
            if prefix:
                query["prefix"] = prefix
            if start_after:
                query["start-after"] = start_after
            if token:
                query["continuation-token"] = token
            response = await self._transport.request(
                node, "GET", None, query=query, timeout=timeout
            )
            async with response:
                if response.status == 404:
                    return  # no bucket: the node holds nothing
                if response.status != 200:
                    await raise_for(node, response, self._settings.first_byte_timeout_seconds)
                document = await read_document(node, response, timeout)
            try:
                element = ET.fromstring(document)  # noqa: S314 - a node's own answer
                page = [
                    S3Object.fromxml(entry, self._settings.bucket)
                    for entry in findall(element, "Contents")
                ]
            except (ET.ParseError, ValueError, TypeError, AttributeError) as exc:
                raise NodeUnavailable(
                    node.name, f"it answered a listing it cannot read ({exc})"
                ) from exc
            for listed in page:
                yield ListedObject(
                    name=listed.object_name or "",
                    size=listed.size or 0,
                    etag=unquoted_etag(listed.etag or ""),
                    last_modified=listed.last_modified,
                )
            token = findtext(element, "NextContinuationToken")
            if (findtext(element, "IsTruncated") or "").lower() != "true" or not token:
                return

    # -- drain marks ------------------------------------------------------------------------

    async def drain_state(self, node: Node) -> DrainState | None:
        response = await self._transport.request(node, "HEAD", DRAIN_MARK_KEY)
        async with response:
            if response.status == 200:
                state = response.headers.get(_DRAIN_STATE_HEADER, "")
                drained = state == DrainState.DRAINED.value
                return DrainState.DRAINED if drained else DrainState.DRAINING
            if response.status == 404:
                return None
            await raise_for(node, response, self._settings.first_byte_timeout_seconds)

    async def mark(self, node: Node, state: DrainState, note: str) -> None:
        await self._buckets.ensure(node)
        data = note.encode()
        await self._buckets.retrying(
            node,
            lambda: self._uploads.put_bytes(
                node,
                DRAIN_MARK_KEY,
                len(data),
                data,
                "text/plain",
                headers={_DRAIN_STATE_HEADER: state.value},
                from_client=False,
            ),
        )

    async def unmark(self, node: Node) -> None:
        response = await self._transport.request(node, "DELETE", DRAIN_MARK_KEY)
        async with response:
            if response.status not in (200, 204, 404):
                await raise_for(node, response, self._settings.first_byte_timeout_seconds)


def _tombstone(info: ObjectInfo) -> StoredObject:
    """A tombstone as read: its metadata, and none of its bytes (a read of it is a 404)."""
    return StoredObject(info, _single(b""), _nothing, b"")


def _beyond(byte_range: ByteRange | None, size: int) -> str:
    shown = byte_range.header_value() if byte_range is not None else "the range"
    return f"{shown} lies beyond the object's {size} bytes"


async def _single(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data


async def _nothing() -> None:
    return None
