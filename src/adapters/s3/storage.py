"""The ``ObjectStorage`` port on MinIO (S3) nodes: each version of an ID a key of its own
(``keys``), written once and never changed, only removed.

Bodies stream between the client's socket and the node's with backpressure both ways; a small
object is read in one go and sent in one piece. How a write goes up depends on what is known of
its length (``uploads``, ``multipart``); every failure reaches the caller as a domain error.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from urllib.parse import quote

from minio.deleteobjects import DeleteObject, DeleteRequest, DeleteResult
from minio.helpers import md5sum_hash
from minio.xml import marshal
from opentelemetry.trace import Tracer

from adapters.s3.buckets import Buckets
from adapters.s3.keys import (
    id_prefix,
    legacy_key,
    version_key,
    version_of,
)
from adapters.s3.listings import list_keys
from adapters.s3.marks import NodeMarksOnS3
from adapters.s3.multipart import MultipartUploads
from adapters.s3.responses import (
    NoSuchBucket,
    ResponseBody,
    content_range_of,
    error_for,
    info_from,
    raise_for,
    read_document,
    xml_text,
)
from adapters.s3.transport import MinioSettings, S3Transport, map_errors
from adapters.s3.upload_budget import PartSpool
from adapters.s3.uploads import SMALL_BODY_BYTES, Uploads
from adapters.s3.walks import legacy_version, walk
from domain.errors import CopyMismatch, NodeUnavailable, RangeNotSatisfiable
from domain.node import Node
from domain.object_id import ObjectId
from domain.objects import (
    ByteRange,
    ObjectInfo,
    StoredObject,
    StoredVersion,
    VersionKind,
    moment_of,
    unquoted_etag,
)
from domain.versions import Version

__all__ = ["MinioObjectStorage"]

# An ID rarely has more than two versions at once: one page of this many holds them all.
_VERSIONS_PAGE = 100
# The most keys S3's DeleteObjects takes in one request.
_KEYS_PER_DELETE = 1000


class MinioObjectStorage(NodeMarksOnS3):
    """The ``ObjectStorage``, ``NodeMarking`` and ``Leases`` ports on MinIO nodes, over one pooled
    aiohttp session."""

    def __init__(
        self, settings: MinioSettings, part_spool: PartSpool, tracer: Tracer | None = None
    ) -> None:
        self._settings = settings
        transport = S3Transport(settings, tracer)
        buckets = Buckets(transport)
        uploads = Uploads(transport, buckets)
        super().__init__(transport, buckets, uploads)
        self._multipart = MultipartUploads(transport, buckets, uploads, part_spool)

    async def aclose(self) -> None:
        await self._transport.aclose()

    def walk(
        self, node: Node, *, prefix: str = "", start_after: str = "", legacy: bool = False
    ) -> AsyncIterator[tuple[str, StoredVersion]]:
        return walk(self._transport, node, prefix=prefix, start_after=start_after, legacy=legacy)

    # -- reading ----------------------------------------------------------------------------

    async def versions(
        self, node: Node, object_id: ObjectId, *, legacy: bool = False
    ) -> list[StoredVersion]:
        listing = self._listed_versions(node, object_id.value)
        if not legacy:
            return await listing
        listed, old = await _both(listing, legacy_version(self._transport, node, object_id.value))
        return sorted([*listed, old]) if old is not None else listed

    async def _listed_versions(self, node: Node, raw_id: str) -> list[StoredVersion]:
        found = []
        async for listed in list_keys(
            self._transport, node, prefix=id_prefix(raw_id), page_size=_VERSIONS_PAGE
        ):
            parsed = version_of(listed.key)
            if parsed is not None and parsed[0] == raw_id:
                found.append(
                    StoredVersion(
                        parsed[1],
                        parsed[2],
                        listed.size,
                        listed.etag,
                        age_seconds=listed.age_seconds,
                    )
                )
        return found

    async def head(self, node: Node, object_id: ObjectId, stored: StoredVersion) -> ObjectInfo:
        response = await self._transport.request(node, "HEAD", _key_of(object_id, stored))
        async with response:
            if response.status != 200:
                await raise_for(node, response, self._settings.first_byte_timeout_seconds)
            return _served(info_from(response.headers), stored)

    async def open(
        self,
        node: Node,
        object_id: ObjectId,
        stored: StoredVersion,
        byte_range: ByteRange | None = None,
    ) -> StoredObject:
        settings = self._settings
        headers = None if byte_range is None else {"Range": byte_range.header_value()}
        response = await self._transport.request(
            node, "GET", _key_of(object_id, stored), headers=headers
        )
        # Nodes answer a range three ways: 206 with Content-Range (MinIO), 200 with Content-Range
        # and only those bytes (rclone), or 200 with the whole object (servers that ignore Range),
        # which is then cut here.
        skip, keep = 0, -1
        try:
            if response.status == 416:
                response.close()
                raise RangeNotSatisfiable(
                    _beyond(byte_range, stored.size), stored.size, node_name=node.name
                )
            if response.status not in (200, 206):
                await raise_for(node, response, settings.first_byte_timeout_seconds)
            info = _served(info_from(response.headers), stored)
            sent = info.size  # what the node's body holds
            content_range: tuple[int, int] | None = None
            if byte_range is not None and "Content-Range" in response.headers:
                start, end, total = content_range_of(node, response.headers["Content-Range"])
                info = ObjectInfo(
                    total, info.content_type, info.etag, info.last_modified, info.version
                )
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

    # -- writing ----------------------------------------------------------------------------

    async def put(  # noqa: PLR0917 - the port's signature
        self,
        node: Node,
        object_id: ObjectId,
        version: Version,
        kind: VersionKind,
        body: AsyncIterator[bytes],
        length: int | None,
        content_type: str,
        *,
        content_md5: str | None = None,
    ) -> StoredVersion:
        await self._buckets.ensure(node)
        key = version_key(object_id.value, version, kind)
        headers = {}
        if content_md5 is not None:
            # The node checks the bytes it received against it, and stores nothing if they differ.
            headers["Content-MD5"] = base64.b64encode(bytes.fromhex(content_md5)).decode()
        try:
            if length is not None and length <= SMALL_BODY_BYTES:
                info = await self._uploads.put_small(node, key, body, length, content_type, headers)
            elif length is not None and length <= self._settings.max_single_put_bytes:
                info = await self._uploads.put_streamed(
                    node, key, body, length, content_type, headers
                )
            else:
                digest = hashlib.md5(usedforsecurity=False)
                info = await self._multipart.put(
                    node, key, _digesting(body, digest.update), length, content_type
                )
                if content_md5 is not None and digest.hexdigest() != content_md5:
                    # Parts were checked one by one; the whole is checked here, and undone.
                    await self._remove_key(node, key)
                    raise CopyMismatch(
                        f"the copy's bytes hash to {digest.hexdigest()}, not {content_md5}",
                        node_name=node.name,
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
        return StoredVersion(version, kind, info.size, info.etag)

    async def promote(
        self, node: Node, object_id: ObjectId, pending: StoredVersion
    ) -> StoredVersion:
        raw_id, version = object_id.value, pending.version
        source = f"/{self._settings.bucket}/{version_key(raw_id, version, VersionKind.PENDING)}"
        timeout = self._settings.idle_timeout_seconds
        response = await self._transport.request(
            node,
            "PUT",
            version_key(raw_id, version, VersionKind.DATA),
            timeout=timeout,
            headers={"x-amz-copy-source": quote(source)},
        )
        async with response:
            answer = await read_document(node, response, timeout)
            # S3 may report a failed copy with 200 and an <Error> document.
            if response.status != 200 or xml_text(answer, "Code"):
                raise error_for(node, response.status, answer)
        etag = unquoted_etag(xml_text(answer, "ETag") or "") or pending.etag
        return StoredVersion(version, VersionKind.DATA, pending.size, etag)

    async def remove(self, node: Node, object_id: ObjectId, stored: StoredVersion) -> None:
        await self._remove_key(node, _key_of(object_id, stored))

    async def remove_many(
        self, node: Node, versions: Sequence[tuple[ObjectId, StoredVersion]]
    ) -> int:
        refused = 0
        for start in range(0, len(versions), _KEYS_PER_DELETE):
            keys = [
                _key_of(object_id, stored)
                for object_id, stored in versions[start : start + _KEYS_PER_DELETE]
            ]
            refused += await self._remove_keys(node, keys)
        return refused

    async def _remove_keys(self, node: Node, keys: list[str]) -> int:
        """One DeleteObjects request (quiet: the answer lists only the keys it refused)."""
        document = marshal(DeleteRequest([DeleteObject(key) for key in keys], quiet=True))
        timeout = self._settings.idle_timeout_seconds
        response = await self._transport.request(
            node,
            "POST",
            None,
            timeout=timeout,
            query={"delete": ""},
            headers={"Content-Type": "application/xml", "Content-MD5": md5sum_hash(document) or ""},
            data=document,
            payload_hash=hashlib.sha256(document).hexdigest(),
        )
        async with response:
            if response.status == 404:
                return 0  # no bucket: nothing to remove
            answer = await read_document(node, response, timeout)
            if response.status != 200:
                raise error_for(node, response.status, answer)
        try:
            result = DeleteResult.fromxml(ET.fromstring(answer))  # noqa: S314 - a node's answer
        except (ET.ParseError, ValueError, TypeError, AttributeError) as exc:
            raise NodeUnavailable(
                node.name, f"it answered a removal it cannot read ({exc})"
            ) from exc
        return sum(1 for error in result.error_list if error.code != "NoSuchKey")

    async def _remove_key(self, node: Node, key: str) -> None:
        response = await self._transport.request(node, "DELETE", key)
        async with response:
            if response.status not in (200, 204, 404):
                await raise_for(node, response, self._settings.first_byte_timeout_seconds)


def _key_of(object_id: ObjectId, stored: StoredVersion) -> str:
    if stored.legacy:
        return legacy_key(object_id.value)
    return version_key(object_id.value, stored.version, stored.kind)


def _served(info: ObjectInfo, stored: StoredVersion) -> ObjectInfo:
    """What a node answered for a version, as it is served: dated by its version."""
    if stored.legacy and info.version is None:
        return ObjectInfo(info.size, info.content_type, info.etag, info.last_modified)
    return ObjectInfo(
        info.size,
        info.content_type,
        info.etag,
        moment_of(stored.version),
        stored.version,
        stored.deleted,
    )


async def _both(
    first: Awaitable[list[StoredVersion]], second: Awaitable[StoredVersion | None]
) -> tuple[list[StoredVersion], StoredVersion | None]:
    """Both answers, asked at once; the first failure, once both are done."""
    one, two = await asyncio.gather(first, second, return_exceptions=True)
    if isinstance(one, BaseException):
        raise one
    if isinstance(two, BaseException):
        raise two
    return one, two


async def _digesting(
    body: AsyncIterator[bytes], update: Callable[[bytes], object]
) -> AsyncIterator[bytes]:
    async for chunk in body:
        update(chunk)
        yield chunk


def _beyond(byte_range: ByteRange | None, size: int) -> str:
    shown = byte_range.header_value() if byte_range is not None else "the range"
    return f"{shown} lies beyond the object's {size} bytes"


async def _single(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data


async def _nothing() -> None:
    return None
