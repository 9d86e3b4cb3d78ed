"""HTTP's range and conditional requests (RFC 9110 sections 13 and 14), as S3 offers them."""

from __future__ import annotations

import re
from datetime import datetime
from email.utils import parsedate_to_datetime

from domain.conditions import EntityTags, Preconditions
from domain.objects import ByteRange

__all__ = ["parse_range", "preconditions_of"]

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


def preconditions_of(headers: dict[bytes, bytes]) -> Preconditions:
    """The request's If-Match, If-None-Match, If-Modified-Since and If-Unmodified-Since.

    A date that does not parse is ignored, as RFC 9110 requires.
    """
    if_match = headers.get(b"if-match")
    if_none_match = headers.get(b"if-none-match")
    return Preconditions(
        if_match=None if if_match is None else _entity_tags(if_match, weak_allowed=False),
        if_none_match=None if if_none_match is None else _entity_tags(if_none_match),
        if_modified_since=_http_date(headers.get(b"if-modified-since")),
        if_unmodified_since=_http_date(headers.get(b"if-unmodified-since")),
    )


def _entity_tags(value: bytes, *, weak_allowed: bool = True) -> EntityTags:
    text = value.decode("latin-1").strip()
    if text == "*":
        return EntityTags(any=True)
    tags = set()
    for part in text.split(","):
        tag = part.strip()
        if tag.startswith("W/"):
            # Every ETag here is strong: a weak tag matches only where comparison is weak.
            if not weak_allowed:
                continue
            tag = tag[2:]
        tag = tag.strip('"')
        if tag:
            tags.add(tag)
    return EntityTags(tags=frozenset(tags))


def _http_date(value: bytes | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = parsedate_to_datetime(value.decode("latin-1"))
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo is not None else None
