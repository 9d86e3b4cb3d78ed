"""What a node answers: object metadata from headers, bodies read whole or streamed, and refusals
told apart by status and S3 error code. Every read is bounded in time and size, and its failures
pass through ``map_errors``."""

from __future__ import annotations

import asyncio
import functools
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import NoReturn

import aiohttp
from minio.time import from_http_header
from minio.xml import findtext

from adapters.s3.transport import map_errors
from domain.errors import (
    CopyMismatch,
    GatewayError,
    NodeUnavailable,
    NodeUnreachable,
    ObjectNotFound,
    PreconditionFailed,
    RefusedByNode,
)
from domain.node import Node
from domain.objects import DEFAULT_CONTENT_TYPE, ObjectInfo, unquoted_etag
from domain.sizes import KiB, MiB
from domain.versions import Version

__all__ = [
    "DELETED_HEADER",
    "VERSION_HEADER",
    "NoSuchBucket",
    "ResponseBody",
    "content_range_of",
    "error_for",
    "etag_of",
    "info_from",
    "raise_for",
    "read_document",
    "xml_text",
]

_MAX_ERROR_BODY_BYTES = 64 * KiB
# A listing page of 1,000 keys is a few hundred KiB.
_MAX_DOCUMENT_BYTES = 8 * MiB
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject", "NoSuchUpload"})
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


class NoSuchBucket(ObjectNotFound):
    """The node has no bucket (any more): nothing is stored there, and a write must make it."""


# The gateway's own user metadata on every object it writes (S3 returns it on HEAD and GET).
VERSION_HEADER = "x-amz-meta-gateway-version"
DELETED_HEADER = "x-amz-meta-gateway-deleted"


def info_from(headers: Mapping[str, str]) -> ObjectInfo:
    raw_last_modified = headers.get("Last-Modified")
    raw_version = headers.get(VERSION_HEADER)
    return ObjectInfo(
        size=int(headers.get("Content-Length", "0")),
        content_type=headers.get("Content-Type") or DEFAULT_CONTENT_TYPE,
        etag=unquoted_etag(headers.get("ETag", "")),
        last_modified=_parse_http_date(raw_last_modified) if raw_last_modified else None,
        version=None if raw_version is None else _parse_version(raw_version),
        deleted=headers.get(DELETED_HEADER) == "true",
    )


@functools.lru_cache(maxsize=4096)
def _parse_version(text: str) -> Version | None:
    return Version.parse(text)


def etag_of(response: aiohttp.ClientResponse) -> str:
    return unquoted_etag(response.headers.get("ETag", ""))


@functools.lru_cache(maxsize=4096)
def _parse_http_date(value: str) -> datetime | None:
    # The same object answers with the same Last-Modified again and again: parse each value once.
    try:
        return from_http_header(value)
    except ValueError:
        return None


def content_range_of(node: Node, header: str) -> tuple[int, int, int]:
    """(start, end, total) of a ``Content-Range: bytes start-end/total`` header."""
    match = _CONTENT_RANGE.fullmatch(header.strip())
    if match is None:
        raise NodeUnavailable(node.name, f"it answered a malformed Content-Range {header[:64]!r}")
    start, end, total = (int(group) for group in match.groups())
    return start, end, total


def xml_text(document: bytes, name: str) -> str | None:
    try:
        element = ET.fromstring(document)  # noqa: S314 - a node's own answer, not a client's
    except ET.ParseError:
        return None
    text = findtext(element, name)
    return None if text is None else str(text)


async def read_document(
    node: Node, response: aiohttp.ClientResponse, timeout_seconds: float
) -> bytes:
    """A whole answer body (a listing, a completion), bounded in size and in time."""
    chunks: list[bytes] = []
    received = 0
    with map_errors(node, "reading its answer"):
        async with asyncio.timeout(timeout_seconds):
            while chunk := await response.content.read(64 * KiB):
                received += len(chunk)
                if received > _MAX_DOCUMENT_BYTES:
                    raise NodeUnavailable(
                        node.name, f"it answered more than {_MAX_DOCUMENT_BYTES} bytes"
                    )
                chunks.append(chunk)
    return b"".join(chunks)


async def raise_for(
    node: Node,
    response: aiohttp.ClientResponse,
    timeout_seconds: float,
    *,
    from_client: bool = False,
) -> NoReturn:
    """The error a refusal stands for (``from_client``: the request carried the client's body
    or headers). Its document is read if it comes in time: the status alone still tells the
    error apart when the node dies mid-document."""
    try:
        async with asyncio.timeout(timeout_seconds):
            document = await response.content.read(_MAX_ERROR_BODY_BYTES)
    except (aiohttp.ClientError, OSError, TimeoutError):
        document = b""
    raise error_for(node, response.status, document, from_client=from_client)


def error_for(
    node: Node, status: int, document: bytes, *, from_client: bool = False
) -> GatewayError:
    """The domain error for a node's refusal, told apart by its HTTP status and S3 error code.

    Only a request that carried something of the client's (a write's body, its Content-Type) can
    be refused for the client's fault; a refusal of anything else (HEAD, GET, DELETE, listings,
    the bucket) is the node's, whatever the status: a node in another region refusing every HEAD
    must not turn every PUT into the client's 400.
    """
    code = xml_text(document, "Code") if document else None
    if code == "NoSuchBucket":
        return NoSuchBucket(
            "no object is stored under this ID (the node has no bucket)", node_name=node.name
        )
    if status == 404 or code in _NOT_FOUND_CODES:
        return ObjectNotFound("no object is stored under this ID", node_name=node.name)
    if code in ("BadDigest", "InvalidDigest"):
        return CopyMismatch(
            "the node received bytes that do not match their checksum", node_name=node.name
        )
    if status == 412 or code == "PreconditionFailed":
        return PreconditionFailed("the object changed on the node meanwhile", node_name=node.name)
    if from_client and status in _CLIENT_ERROR_STATUSES and code not in _NODE_SETUP_CODES:
        return RefusedByNode(
            f"the storage node refused the request ({code or f'HTTP {status}'})",
            node_name=node.name,
        )
    return NodeUnavailable(node.name, f"it answered HTTP {status}" + (f" {code}" if code else ""))


class ResponseBody:
    """An object's body as a node streams it: read in chunks, less the first ``skip`` bytes and
    after ``keep`` (-1: all), checked against the length announced, closed once.

    Closing returns the node's connection to the pool when the body was read to its end, and
    drops it otherwise (what is left of it is never read for nobody).
    """

    __slots__ = ("_chunk_bytes", "_expected", "_keep", "_node", "_response", "_skip")

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        node: Node,
        *,
        chunk_bytes: int,
        expected_bytes: int,
        skip: int = 0,
        keep: int = -1,
    ) -> None:
        self._response = response
        self._node = node
        self._chunk_bytes = chunk_bytes
        self._expected = expected_bytes
        self._skip = skip
        self._keep = keep

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self._response.content
        skip, keep, received = self._skip, self._keep, 0
        with map_errors(self._node, "sending the object"):
            while keep != 0:
                chunk = await content.read(self._chunk_bytes)
                if not chunk:
                    # aiohttp checks Content-Length too; a node that closes early is caught here
                    # whatever the framing.
                    if received < self._expected:
                        raise NodeUnreachable(
                            self._node.name,
                            f"the object ended after {received} of {self._expected} bytes",
                        )
                    return
                received += len(chunk)
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk, skip = chunk[dropped:], skip - dropped
                if keep > 0:
                    chunk, keep = chunk[:keep], keep - min(keep, len(chunk))
                if chunk:
                    yield chunk

    async def close(self) -> None:
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()
