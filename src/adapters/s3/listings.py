"""Listing a node's keys (S3's ListObjectsV2), page by page, each page bounded in size and time."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from minio.datatypes import Object as S3Object
from minio.xml import findall, findtext

from adapters.s3.responses import raise_for, read_document
from adapters.s3.transport import S3Transport
from domain.errors import NodeUnavailable
from domain.node import Node
from domain.objects import unquoted_etag

__all__ = ["LIST_PAGE_SIZE", "Listed", "list_keys"]

LIST_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Listed:
    """A key as a listing shows it."""

    key: str
    size: int
    etag: str
    last_modified: datetime | None
    # How long before the listing the key was written, by the node's clock (its Date header).
    age_seconds: float | None = None


async def list_keys(
    transport: S3Transport,
    node: Node,
    *,
    prefix: str = "",
    start_after: str = "",
    delimiter: str | None = None,
    page_size: int = LIST_PAGE_SIZE,
) -> AsyncIterator[Listed]:
    """The node's keys under ``prefix`` after ``start_after``, in key order (with ``delimiter``,
    only those with no delimiter after the prefix). A node without the bucket lists nothing."""
    settings = transport.settings
    timeout = settings.idle_timeout_seconds
    token: str | None = None
    while True:
        query = {"list-type": "2", "max-keys": str(page_size)}
        if prefix:
            query["prefix"] = prefix
        if start_after:
            query["start-after"] = start_after
        if delimiter:
            query["delimiter"] = delimiter
        if token:
            query["continuation-token"] = token
        response = await transport.request(node, "GET", None, query=query, timeout=timeout)
        async with response:
            if response.status == 404:
                return  # no bucket: the node holds nothing
            if response.status != 200:
                await raise_for(node, response, settings.first_byte_timeout_seconds)
            document = await read_document(node, response, timeout)
            listed_at = _http_date(response.headers.get("Date"))
        try:
            element = ET.fromstring(document)  # noqa: S314 - a node's own answer
            page = [
                S3Object.fromxml(entry, settings.bucket) for entry in findall(element, "Contents")
            ]
        except (ET.ParseError, ValueError, TypeError, AttributeError) as exc:
            raise NodeUnavailable(
                node.name, f"it answered a listing it cannot read ({exc})"
            ) from exc
        for listed in page:
            modified = listed.last_modified
            yield Listed(
                key=listed.object_name or "",
                size=listed.size or 0,
                etag=unquoted_etag(listed.etag or ""),
                last_modified=modified,
                age_seconds=None
                if listed_at is None or modified is None
                else (listed_at - modified).total_seconds(),
            )
        token = findtext(element, "NextContinuationToken")
        if (findtext(element, "IsTruncated") or "").lower() != "true" or not token:
            return


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
