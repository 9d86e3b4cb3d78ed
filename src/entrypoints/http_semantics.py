"""HTTP's range and conditional requests (RFC 9110 sections 13 and 14), as S3 offers them."""

from __future__ import annotations

import re
from datetime import datetime
from email.utils import parsedate_to_datetime

from domain.ports import ByteRange, ObjectInfo, WriteCondition

__all__ = [
    "NOT_MODIFIED",
    "PRECONDITION_FAILED",
    "parse_range",
    "read_precondition",
    "write_condition",
]

NOT_MODIFIED = 304
PRECONDITION_FAILED = 412
_SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.ASCII)


def parse_range(value: bytes | None) -> ByteRange | None:
    """One ``bytes=`` range, or None: a header that is absent, malformed or asks for several
    ranges is ignored (the whole object is sent), as RFC 9110 allows."""
    if value is None:
        return None
    match = _SINGLE_RANGE.fullmatch(value.decode("latin-1").strip())
    if match is None or not any(match.groups()):
        return None
    first, last = (int(group) if group else None for group in match.groups())
    try:
        return ByteRange(first, last)
    except ValueError:
        return None


def read_precondition(headers: dict[bytes, bytes], info: ObjectInfo) -> int | None:
    """304 or 412 when a GET or HEAD's conditions say so, else None (evaluated in RFC order)."""
    if_match = headers.get(b"if-match")
    if if_match is not None:
        if not _matches(if_match, info.etag, weak=False):
            return PRECONDITION_FAILED
    else:
        since = _http_date(headers.get(b"if-unmodified-since"))
        if since is not None and info.last_modified is not None and info.last_modified > since:
            return PRECONDITION_FAILED
    if_none_match = headers.get(b"if-none-match")
    if if_none_match is not None:
        return NOT_MODIFIED if _matches(if_none_match, info.etag, weak=True) else None
    since = _http_date(headers.get(b"if-modified-since"))
    if since is not None and info.last_modified is not None and info.last_modified <= since:
        return NOT_MODIFIED
    return None


def write_condition(headers: dict[bytes, bytes]) -> WriteCondition | None:
    """A PUT's ``If-None-Match: *`` (only create) or ``If-Match: "etag"`` (only replace that)."""
    if_none_match = headers.get(b"if-none-match", b"").strip()
    if_match = headers.get(b"if-match", b"").strip()
    if not if_none_match and not if_match:
        return None
    etags = _etags(if_match) if if_match and if_match != b"*" else []
    return WriteCondition(
        only_if_absent=if_none_match == b"*", only_if_etag=etags[0] if etags else None
    )


def _etags(value: bytes) -> list[str]:
    tags = []
    for part in value.decode("latin-1").split(","):
        tag = part.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        tags.append(tag.strip('"'))
    return [tag for tag in tags if tag]


def _matches(value: bytes, etag: str, *, weak: bool) -> bool:
    if value.strip() == b"*":
        return True
    # Every ETag here is strong; If-Match compares strongly, so a weak one never matches it.
    if not weak and b"W/" in value:
        return etag in [tag for tag in _etags(value) if f'W/"{tag}"' not in value.decode("latin-1")]
    return etag in _etags(value)


def _http_date(value: bytes | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = parsedate_to_datetime(value.decode("latin-1"))
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo is not None else None
