"""Objects on MinIO (S3) nodes: requests signed by minio-py, carried by aiohttp on the event loop.

minio-py is the authority on S3 here (its SigV4 signer, its XML helpers and error codes), but its
client is synchronous; running it in threads made every request cross into a worker thread and
back, and let one frozen node hold every thread. So each node request is a coroutine on one shared
``aiohttp.ClientSession`` (pooled keep-alive connections, bounded per node), and bodies stream
between the client's socket and the node's with backpressure both ways:

- a PUT with a known length up to S3's 5 GiB single-PUT limit is one streamed PUT
  (``UNSIGNED-PAYLOAD``), holding nothing beyond socket-sized chunks;
- a PUT of unknown length, or above that limit, is a multipart upload whose parts are held in
  memory while the process-wide budget has room, else in temporary files (``PartSpool``), one
  part per upload at a time (a body that ends within its first part becomes one PUT);
- a GET streams node to client; a small object is read in one go and sent in one piece.

Every aiohttp error and every refusal of a node is translated into a domain error here; none
crosses this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NoReturn, TypeVar
from urllib.parse import SplitResult

import aiohttp
from minio.datatypes import Object as S3Object
from minio.helpers import md5sum_hash, queryencode
from minio.time import from_http_header
from minio.xml import Element, SubElement, findall, findtext, getbytes
from yarl import URL

from adapters.s3_signing import signed_headers
from adapters.upload_budget import PartBuffer, PartSpool
from domain.errors import (
    GatewayError,
    IncompleteBody,
    NodeUnavailable,
    NodeUnreachable,
    ObjectNotFound,
    PreconditionFailed,
    RangeNotSatisfiable,
    RefusedByNode,
)
from domain.node import Node
from domain.object_id import ObjectId
from domain.ports import ByteRange, ListedObject, ObjectInfo, StoredObject, WriteCondition

__all__ = ["MAX_SINGLE_PUT_BYTES", "MinioObjectStorage", "MinioSettings"]

_T = TypeVar("_T")
MiB = 1024 * 1024
# S3 refuses a single PUT above 5 GiB; beyond it only multipart uploads work.
MAX_SINGLE_PUT_BYTES = 5 * 1024 * MiB
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_MAX_ERROR_BODY_BYTES = 64 * 1024
# A listing page of 1,000 keys is a few hundred KiB.
_MAX_DOCUMENT_BYTES = 8 * MiB
_SMALL_BODY_BYTES = 64 * 1024
_LIST_PAGE_SIZE = 1000
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject", "NoSuchUpload"})
_BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})
# 4xx answers that are about the gateway's own keys or set-up, not about what the client sent.
_NODE_SETUP_CODES = frozenset(
    {
        "AccessDenied",
        "AuthorizationHeaderMalformed",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "RequestTimeTooSkewed",
        "SignatureDoesNotMatch",
        "XAmzContentSHA256Mismatch",
    }
)
_CLIENT_ERROR_STATUSES = frozenset({400, 411, 413, 414, 431})


@dataclass(frozen=True, slots=True)
class MinioSettings:
    bucket: str
    connect_timeout_seconds: float
    # From the request (or the end of its body) to the node's response headers.
    first_byte_timeout_seconds: float
    # The longest a streaming body may go without the node sending or accepting a byte.
    idle_timeout_seconds: float
    # Multipart parts are at least 5 MiB; each is held in memory while it is filled and sent.
    part_size_bytes: int
    # Objects up to this size are read whole and sent in one piece; larger ones stream in chunks
    # of about this size.
    download_chunk_bytes: int
    max_single_put_bytes: int = MAX_SINGLE_PUT_BYTES


@dataclass(frozen=True, slots=True)
class _NodeKey:
    endpoint: str
    access_key: str
    # Kept out of repr, as in Credentials: logging a key must never leak the secret.
    secret_key: str = field(repr=False)


class MinioObjectStorage:
    """The ``ObjectStorage`` port on MinIO nodes, over one pooled aiohttp session."""

    def __init__(self, settings: MinioSettings, part_spool: PartSpool) -> None:
        self._settings = settings
        self._part_spool = part_spool
        self._session: aiohttp.ClientSession | None = None
        self._buckets_ready: set[_NodeKey] = set()
        # Built once: aiohttp's read timeout covers the wait for the first byte and each read.
        self._first_byte_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.connect_timeout_seconds,
            sock_connect=settings.connect_timeout_seconds,
            sock_read=settings.first_byte_timeout_seconds,
        )
        # For requests that a deadline of their own bounds (streamed uploads, long completions).
        self._no_read_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.connect_timeout_seconds,
            sock_connect=settings.connect_timeout_seconds,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the port ---------------------------------------------------------------------------

    async def head(self, node: Node, object_id: ObjectId) -> ObjectInfo:
        response = await self._request(node, "HEAD", object_id.value)
        async with response:
            if response.status != 200:
                await self._raise_for(node, response)
            return _info_from(response.headers)

    async def get(
        self, node: Node, object_id: ObjectId, byte_range: ByteRange | None = None
    ) -> StoredObject:
        settings = self._settings
        headers = None if byte_range is None else {"Range": byte_range.header_value()}
        response = await self._request(node, "GET", object_id.value, headers=headers)
        # Nodes answer a range three ways: 206 with Content-Range (MinIO), 200 with Content-Range
        # and only those bytes (rclone), or 200 with the whole object (servers that ignore Range),
        # which is then cut here.
        skip, keep = 0, -1
        try:
            if response.status == 416:
                response.close()
                size = (await self.head(node, object_id)).size
                raise RangeNotSatisfiable(_beyond(byte_range, size), size)
            if response.status not in (200, 206):
                await self._raise_for(node, response)
            info = _info_from(response.headers)
            sent = info.size  # what the node's body holds
            content_range: tuple[int, int] | None = None
            if byte_range is not None and "Content-Range" in response.headers:
                start, end, total = _content_range(node, response.headers["Content-Range"])
                info = ObjectInfo(total, info.content_type, info.etag, info.last_modified)
                content_range = (start, end)
            elif byte_range is not None:
                content_range = byte_range.resolve(info.size)
                if content_range is None:
                    response.close()
                    raise RangeNotSatisfiable(_beyond(byte_range, info.size), info.size)
                skip, keep = content_range[0], content_range[1] - content_range[0] + 1
            if sent <= settings.download_chunk_bytes:
                # Bounded by the session's read timeout, as the headers were.
                whole = await response.read()
                response.release()
                if keep >= 0:
                    whole = whole[skip : skip + keep]
                return StoredObject(info, _single(whole), _nothing, whole, content_range)
        except TimeoutError:
            response.close()
            raise NodeUnreachable(node.name, "it stopped sending the object") from None
        except (aiohttp.ClientError, OSError) as exc:
            response.close()
            raise NodeUnreachable(node.name, f"the connection failed ({exc!r})") from exc
        except BaseException:
            response.close()
            raise

        # From here on the body streams: the node may pause up to the idle timeout between reads.
        if response.connection is not None and response.connection.protocol is not None:
            response.connection.protocol.read_timeout = settings.idle_timeout_seconds

        return StoredObject(
            info,
            _body_chunks(response, node, settings.download_chunk_bytes, skip, keep),
            functools.partial(_release_or_drop, response),
            content_range=content_range,
        )

    async def put(
        self,
        node: Node,
        object_id: ObjectId,
        body: AsyncIterator[bytes],
        length: int | None,
        content_type: str,
        *,
        condition: WriteCondition | None = None,
    ) -> ObjectInfo:
        await self._ensure_bucket(node)
        conditions = _condition_headers(condition)
        try:
            if length is not None and length <= self._settings.max_single_put_bytes:
                return await self._put_streamed(
                    node, object_id.value, body, length, content_type, conditions
                )
            return await self._put_in_parts(
                node, object_id.value, body, length, content_type, conditions
            )
        except _NoSuchBucket:
            # Its bucket went after it was made (the node was recreated on an empty volume, say),
            # and a body that is streamed cannot be sent twice: the bucket is made again now, and
            # the client asked to retry.
            await self._ensure_bucket(node, again=True)
            raise NodeUnavailable(
                node.name,
                "its bucket was missing and has been created again; retry",
                retry_after_seconds=1,
            ) from None

    async def delete(self, node: Node, object_id: ObjectId) -> None:
        response = await self._request(node, "DELETE", object_id.value)
        async with response:
            if response.status not in (200, 204):
                try:
                    await self._raise_for(node, response)
                except ObjectNotFound:
                    return  # no bucket yet: nothing to delete

    async def list_objects(self, node: Node) -> AsyncIterator[ListedObject]:
        token: str | None = None
        while True:
            query = {"list-type": "2", "max-keys": str(_LIST_PAGE_SIZE)}
            if token:
                query["continuation-token"] = token
            response = await self._request(
                node, "GET", None, query=query, timeout=self._settings.idle_timeout_seconds
            )
            async with response:
                if response.status == 404:
                    return  # no bucket: the node holds nothing
                if response.status != 200:
                    await self._raise_for(node, response)
                document = await self._read_document(node, response)
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
                    etag=(listed.etag or "").strip('"'),
                    last_modified=listed.last_modified,
                )
            token = findtext(element, "NextContinuationToken")
            if (findtext(element, "IsTruncated") or "").lower() != "true" or not token:
                return

    # -- uploads ----------------------------------------------------------------------------

    async def _put_streamed(  # noqa: PLR0917 - private, called from one place
        self,
        node: Node,
        key: str,
        body: AsyncIterator[bytes],
        length: int,
        content_type: str,
        conditions: Mapping[str, str],
    ) -> ObjectInfo:
        """One PUT whose body is the client's, chunk by chunk, as the node accepts it."""
        if length <= _SMALL_BODY_BYTES:
            # Socket-sized: gathered first and sent in one piece, which costs far less per request
            # than a streamed body (no writer generator, one write).
            data = bytes(await _gathered(body, length))
            etag = await self._with_bucket(
                node,
                lambda: self._put_bytes(node, key, length, data, content_type, headers=conditions),
            )
            return ObjectInfo(size=length, content_type=content_type, etag=etag)
        settings = self._settings
        sent = 0
        body_failure: BaseException | None = None
        deadline = _Deadline()

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
                # the node stores nothing; the cause is re-raised by _send.
                body_failure = exc
                raise
            deadline.set(settings.first_byte_timeout_seconds)

        try:
            async with deadline.running(settings.first_byte_timeout_seconds):
                response = await self._send(
                    node,
                    "PUT",
                    key,
                    headers={
                        "Content-Type": content_type,
                        "Content-Length": str(length),
                        **conditions,
                    },
                    data=relayed() if length else b"",
                    payload_hash=_UNSIGNED_PAYLOAD,
                    body_failure=lambda: body_failure,
                    timeout=self._no_read_timeout,
                )
        except TimeoutError:
            raise NodeUnreachable(node.name, "it stopped accepting the upload") from None
        async with response:
            if response.status != 200:
                await self._raise_for(node, response, from_client=True)
            return ObjectInfo(size=sent, content_type=content_type, etag=_etag_of(response))

    async def _put_in_parts(  # noqa: PLR0917 - private, called from one place
        self,
        node: Node,
        key: str,
        body: AsyncIterator[bytes],
        length: int | None,
        content_type: str,
        conditions: Mapping[str, str],
    ) -> ObjectInfo:
        """A multipart upload, one budgeted part in memory at a time; one PUT if it fits in one."""
        parts = _Parts(body, self._settings.part_size_bytes)
        upload_id: str | None = None
        etags: list[str] = []
        try:
            while True:
                # A part is made once bytes of it are here: a client that has not started holds
                # nothing, and one that trickles holds only what it sent.
                await parts.wait_for_data()
                part = self._part_spool.new_part()
                try:
                    await parts.fill(part)
                    if parts.ended and upload_id is None:
                        # The whole body fits in one part: one ordinary PUT, no multipart.
                        _check_length(parts.total, length)
                        etag = await self._put_part(
                            node, key, part, content_type, headers=conditions
                        )
                        return ObjectInfo(size=part.size, content_type=content_type, etag=etag)
                    if upload_id is None:
                        upload_id = await self._with_bucket(
                            node, lambda: self._create_upload(node, key, content_type)
                        )
                    if part.size or not etags:
                        etags.append(
                            await self._put_part(
                                node,
                                key,
                                part,
                                content_type=None,
                                query={"partNumber": str(len(etags) + 1), "uploadId": upload_id},
                            )
                        )
                finally:
                    await part.close()
                if parts.ended:
                    break
            _check_length(parts.total, length)
            etag = await self._complete_upload(node, key, upload_id, etags, conditions)
        except BaseException:
            if upload_id is not None:
                # Nothing of an unfinished multipart upload is ever visible; aborting frees the
                # node's space for the parts. Shielded: a cancelled request still cleans up.
                with contextlib.suppress(GatewayError, asyncio.CancelledError):
                    await asyncio.shield(self._abort_upload(node, key, upload_id))
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
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """PUT a buffered body (an object or one part of a multipart upload); its ETag."""
        whole = part.whole()
        return await self._with_bucket(
            node,
            lambda: self._put_bytes(
                node,
                key,
                part.size,
                part.slices() if whole is None else whole,
                content_type,
                query=query,
                headers=headers,
            ),
        )

    async def _put_bytes(
        self,
        node: Node,
        key: str,
        size: int,
        data: bytes | bytearray | AsyncIterator[bytes],
        content_type: str | None,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """PUT a body whose size is known and that is already here; its ETag."""
        request_headers = {"Content-Length": str(size), **(headers or {})}
        if content_type is not None:
            request_headers["Content-Type"] = content_type
        response = await self._request(
            node,
            "PUT",
            key,
            timeout=self._first_byte_after_sending(size),
            query=query,
            headers=request_headers,
            data=data,
            payload_hash=_UNSIGNED_PAYLOAD,
        )
        async with response:
            if response.status != 200:
                await self._raise_for(node, response, from_client=True)
            return _etag_of(response)

    def _first_byte_after_sending(self, size: int) -> float:
        # A buffered body goes out at the node's pace; allow for it at a modest 10 MiB/s.
        return self._settings.first_byte_timeout_seconds + size / (10 * MiB)

    async def _create_upload(self, node: Node, key: str, content_type: str) -> str:
        response = await self._request(
            node, "POST", key, query={"uploads": ""}, headers={"Content-Type": content_type}
        )
        async with response:
            if response.status != 200:
                await self._raise_for(node, response, from_client=True)
            upload_id = _xml_text(await self._read_document(node, response), "UploadId")
        if not upload_id:
            raise NodeUnavailable(node.name, "it started a multipart upload without an ID")
        return upload_id

    async def _complete_upload(
        self,
        node: Node,
        key: str,
        upload_id: str,
        etags: list[str],
        conditions: Mapping[str, str],
    ) -> str:
        element = Element("CompleteMultipartUpload")
        for number, etag in enumerate(etags, start=1):
            part = SubElement(element, "Part")
            SubElement(part, "PartNumber", str(number))
            SubElement(part, "ETag", f'"{etag}"')
        document = getbytes(element)
        headers = {
            "Content-Type": "application/xml",
            "Content-MD5": md5sum_hash(document) or "",
            **conditions,
        }
        response = await self._request(
            node,
            "POST",
            key,
            # Assembling a large upload takes the node a while before it answers.
            timeout=self._settings.idle_timeout_seconds,
            query={"uploadId": upload_id},
            headers=headers,
            data=document,
            payload_hash=hashlib.sha256(document).hexdigest(),
        )
        async with response:
            document = await self._read_document(node, response)
            # S3 may report a failed completion with 200 and an <Error> document.
            if response.status != 200 or _xml_text(document, "Code"):
                raise _error_for(node, response.status, document, from_client=True)
            etag = (_xml_text(document, "ETag") or "").strip('"')
        return etag or _etag_of(response)

    async def _abort_upload(self, node: Node, key: str, upload_id: str) -> None:
        response = await self._request(node, "DELETE", key, query={"uploadId": upload_id})
        async with response:
            if response.status not in (200, 204, 404):
                await self._raise_for(node, response)

    async def _with_bucket(self, node: Node, operation: Callable[[], Awaitable[_T]]) -> _T:
        """``operation``, made once more (after making the bucket) if the node says it has none."""
        try:
            return await operation()
        except _NoSuchBucket:
            await self._ensure_bucket(node, again=True)
            return await operation()

    async def _ensure_bucket(self, node: Node, *, again: bool = False) -> None:
        """Make the node's bucket unless it is known to exist (``again``: known no longer)."""
        key = _node_key(node)
        if again:
            self._buckets_ready.discard(key)
        if key in self._buckets_ready:
            return
        response = await self._request(node, "HEAD", None)
        async with response:
            exists = response.status == 200
            if not exists and response.status != 404:
                await self._raise_for(node, response)
        if not exists:
            response = await self._request(node, "PUT", None)
            async with response:
                document = await self._read_document(node, response)
                # 409: another request or gateway replica created it first.
                if response.status not in (200, 409):
                    raise _error_for(node, response.status, document)
                if response.status == 409 and _xml_text(document, "Code") not in (
                    _BUCKET_EXISTS_CODES | {None}
                ):
                    raise _error_for(node, response.status, document)
        self._buckets_ready.add(key)

    # -- reading what a node answers -----------------------------------------------------------

    async def _read_document(self, node: Node, response: aiohttp.ClientResponse) -> bytes:
        """A whole answer body (a listing, a completion), bounded in size and in time."""
        chunks: list[bytes] = []
        received = 0
        with _node_errors(node, "reading its answer"):
            async with asyncio.timeout(self._settings.idle_timeout_seconds):
                while chunk := await response.content.read(64 * 1024):
                    received += len(chunk)
                    if received > _MAX_DOCUMENT_BYTES:
                        raise NodeUnavailable(
                            node.name, f"it answered more than {_MAX_DOCUMENT_BYTES} bytes"
                        )
                    chunks.append(chunk)
        return b"".join(chunks)

    async def _raise_for(
        self, node: Node, response: aiohttp.ClientResponse, *, from_client: bool = False
    ) -> NoReturn:
        """The error a refusal stands for (``from_client``: the request carried the client's body
        or headers). Its document is read if it comes in time: the status alone still tells the
        error apart when the node dies mid-document."""
        try:
            async with asyncio.timeout(self._settings.first_byte_timeout_seconds):
                document = await response.content.read(_MAX_ERROR_BODY_BYTES)
        except (aiohttp.ClientError, OSError, TimeoutError):
            document = b""
        raise _error_for(node, response.status, document, from_client=from_client)

    # -- one signed request -----------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                # No pool limit: a request that waited for a pooled connection would time out as if
                # the node were unreachable. What a node may be asked at once is capped by
                # InFlightLimits, and connections by the gateway's own connection cap.
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
                # Bytes pass through as stored: no decompression, no cookies, no extra headers.
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                timeout=self._first_byte_timeout,
            )
        return self._session

    async def _request(
        self,
        node: Node,
        method: str,
        key: str | None,
        *,
        timeout: float | None = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | bytearray | AsyncIterator[bytes] | None = None,
        payload_hash: str = _EMPTY_SHA256,
    ) -> aiohttp.ClientResponse:
        """``_send`` within the time to first byte, or within ``timeout`` overall."""
        # Without ``timeout``, aiohttp's own read timeout bounds the wait for the first byte (and
        # each read after it): no timer of our own on the hot path.
        timer = contextlib.nullcontext() if timeout is None else asyncio.timeout(timeout)
        try:
            async with timer:
                return await self._send(
                    node,
                    method,
                    key,
                    query=query,
                    headers=headers,
                    data=data,
                    payload_hash=payload_hash,
                    timeout=None if timeout is None else self._no_read_timeout,
                )
        except TimeoutError:
            raise NodeUnreachable(node.name, "it did not answer in time") from None

    async def _send(
        self,
        node: Node,
        method: str,
        key: str | None,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | bytearray | AsyncIterator[bytes] | None = None,
        payload_hash: str = _EMPTY_SHA256,
        body_failure: object = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> aiohttp.ClientResponse:
        """Sign and send one request; the response's headers have arrived when it returns.

        A failure of the request body (``body_failure`` returns it) is re-raised as it was, so the
        client's own errors (a short body, a stall) stay the client's.
        """
        endpoint = node.endpoint
        if endpoint is None:
            raise NodeUnavailable(node.name, "the node has no address")
        path = f"/{self._settings.bucket}" if key is None else f"/{self._settings.bucket}/{key}"
        query_string = (
            "&".join(f"{name}={queryencode(value)}" for name, value in sorted(query.items()))
            if query
            else ""
        )
        url = SplitResult("http", endpoint, path, query_string, "")
        credentials = node.credentials
        signed = signed_headers(
            method=method,
            url=url,
            headers=headers or {},
            access_key=credentials.access_key,
            secret_key=credentials.secret_key,
            payload_hash=payload_hash,
        )
        try:
            return await self._http().request(
                method,
                URL.build(
                    scheme="http",
                    authority=endpoint,
                    path=path,
                    query_string=query_string,
                    encoded=True,
                ),
                headers=signed,
                data=data,
                timeout=timeout or self._first_byte_timeout,
            )
        except (aiohttp.ClientError, OSError) as exc:
            failure = body_failure() if callable(body_failure) else None
            if isinstance(failure, GatewayError):
                raise failure from None
            if isinstance(exc, TimeoutError):
                raise NodeUnreachable(node.name, "it did not answer in time") from None
            raise NodeUnreachable(node.name, f"it cannot be reached ({exc!r})") from exc
        except TimeoutError:
            raise NodeUnreachable(node.name, "it did not answer in time") from None


class _Deadline:
    """A deadline around one node request that the request's body moves as it goes.

    Moving it costs an assignment, not a timer: the one timer armed re-arms itself when it fires
    early, and cancels the request (which then raises ``TimeoutError``) once the deadline passed.
    Setting it after the request returned (the node may answer before the body is done) does
    nothing.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[object] | None = None
        self._expires: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._fired = False

    @contextlib.asynccontextmanager
    async def running(self, initial_seconds: float) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        task = self._task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        self.set(initial_seconds)
        try:
            yield
        except asyncio.CancelledError:
            if self._fired and task.uncancel() <= cancelling:
                raise TimeoutError from None
            raise
        finally:
            self._task = None
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None

    def set(self, seconds: float) -> None:
        if self._task is None or self._loop is None:
            return
        self._expires = self._loop.time() + seconds
        if self._handle is None:
            self._handle = self._loop.call_at(self._expires, self._check)

    def clear(self) -> None:
        self._expires = None

    def _check(self) -> None:
        self._handle = None
        if self._task is None or self._expires is None or self._loop is None:
            return
        if self._loop.time() < self._expires:
            self._handle = self._loop.call_at(self._expires, self._check)
            return
        self._fired = True
        self._task.cancel()


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


async def _gathered(body: AsyncIterator[bytes], length: int) -> bytearray:
    data = bytearray()
    async for chunk in body:
        data += chunk
        if len(data) > length:
            raise IncompleteBody("the body is longer than its Content-Length")
    _check_length(len(data), length)
    return data


def _content_range(node: Node, header: str) -> tuple[int, int, int]:
    """(start, end, total) of a ``Content-Range: bytes start-end/total`` header."""
    match = _CONTENT_RANGE.fullmatch(header.strip())
    if match is None:
        raise NodeUnavailable(node.name, f"it answered a malformed Content-Range {header[:64]!r}")
    start, end, total = (int(group) for group in match.groups())
    return start, end, total


def _beyond(byte_range: ByteRange | None, size: int) -> str:
    shown = byte_range.header_value() if byte_range is not None else "the range"
    return f"{shown} lies beyond the object's {size} bytes"


def _condition_headers(condition: WriteCondition | None) -> dict[str, str]:
    if condition is None:
        return {}
    headers = {}
    if condition.only_if_absent:
        headers["If-None-Match"] = "*"
    if condition.only_if_etag is not None:
        headers["If-Match"] = f'"{condition.only_if_etag}"'
    return headers


def _check_length(received: int, announced: int | None) -> None:
    if announced is not None and received != announced:
        raise IncompleteBody(f"the body had {received} bytes, not the {announced} announced")


async def _body_chunks(
    response: aiohttp.ClientResponse, node: Node, chunk_size: int, skip: int, keep: int
) -> AsyncIterator[bytes]:
    """The response body in chunks, less its first ``skip`` bytes and after ``keep`` (-1: all)."""
    content = response.content
    try:
        while keep != 0:
            chunk = await content.read(chunk_size)
            if not chunk:
                return
            if skip:
                dropped = min(skip, len(chunk))
                chunk, skip = chunk[dropped:], skip - dropped
            if keep > 0:
                chunk, keep = chunk[:keep], keep - min(keep, len(chunk))
            if chunk:
                yield chunk
    except TimeoutError:
        raise NodeUnreachable(node.name, "it stopped sending the object") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise NodeUnreachable(node.name, f"the connection failed ({exc!r})") from exc


async def _release_or_drop(response: aiohttp.ClientResponse) -> None:
    # A body read to its end returns the connection to the pool; otherwise it is dropped.
    if response.content.at_eof():
        response.release()
    else:
        response.close()


async def _single(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data


async def _nothing() -> None:
    return None


def _node_key(node: Node) -> _NodeKey:
    return _NodeKey(node.endpoint or "", node.credentials.access_key, node.credentials.secret_key)


def _etag_of(response: aiohttp.ClientResponse) -> str:
    return response.headers.get("ETag", "").strip('"')


@functools.lru_cache(maxsize=4096)
def _parse_http_date(value: str) -> datetime | None:
    # The same object answers with the same Last-Modified again and again: parse each value once.
    try:
        return from_http_header(value)
    except ValueError:
        return None


def _info_from(headers: Mapping[str, str]) -> ObjectInfo:
    raw_last_modified = headers.get("Last-Modified")
    last_modified = _parse_http_date(raw_last_modified) if raw_last_modified else None
    return ObjectInfo(
        size=int(headers.get("Content-Length", "0")),
        content_type=headers.get("Content-Type") or "application/octet-stream",
        etag=headers.get("ETag", "").strip('"'),
        last_modified=last_modified,
    )


def _xml_text(document: bytes, name: str) -> str | None:
    try:
        element = ET.fromstring(document)  # noqa: S314 - a node's own answer, not a client's
    except ET.ParseError:
        return None
    text = findtext(element, name)
    return None if text is None else str(text)


@contextlib.contextmanager
def _node_errors(node: Node, doing: str) -> Iterator[None]:
    """aiohttp's failures (and timeouts) while talking to ``node`` as the node's unreachability."""
    try:
        yield
    except TimeoutError:
        raise NodeUnreachable(node.name, f"it stopped answering while {doing}") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise NodeUnreachable(node.name, f"the connection failed while {doing} ({exc!r})") from exc


class _NoSuchBucket(ObjectNotFound):
    """The node has no bucket (any more): nothing is stored there, and a write must make it."""


def _error_for(
    node: Node, status: int, document: bytes, *, from_client: bool = False
) -> GatewayError:
    """The domain error for a node's refusal, told apart by its HTTP status and S3 error code.

    Only a request that carried something of the client's (a write's body, its Content-Type) can
    be refused for the client's fault; a refusal of anything else (HEAD, GET, DELETE, listings,
    the bucket) is the node's, whatever the status: a node in another region refusing every HEAD
    must not turn every PUT into the client's 400.
    """
    code = _xml_text(document, "Code") if document else None
    if code == "NoSuchBucket":
        return _NoSuchBucket("no object is stored under this ID (the node has no bucket)")
    if status == 404 or code in _NOT_FOUND_CODES:
        return ObjectNotFound("no object is stored under this ID")
    if status == 412 or code == "PreconditionFailed":
        return PreconditionFailed("the object changed on the node meanwhile")
    if from_client and status in _CLIENT_ERROR_STATUSES and code not in _NODE_SETUP_CODES:
        error: GatewayError = RefusedByNode(
            f"the storage node refused the request ({code or f'HTTP {status}'})"
        )
        error.node_name = node.name
        return error
    return NodeUnavailable(node.name, f"it answered HTTP {status}" + (f" {code}" if code else ""))
