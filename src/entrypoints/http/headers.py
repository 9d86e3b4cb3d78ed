"""The request and response headers of the object routes: their grammar, in one place.

Content-Type (RFC 9110 section 8.3), Content-Length, one byte range (section 14), the preconditions
(section 13), HTTP dates, and the headers an object is answered with.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime

from domain.conditions import EntityTags, Preconditions
from domain.errors import InvalidRequest
from domain.objects import ByteRange, ObjectInfo, quoted_etag, unquoted_etag

__all__ = [
    "MAX_CONTENT_TYPE_LENGTH",
    "RawHeaders",
    "content_length",
    "content_type",
    "object_headers",
    "parse_range",
    "preconditions_of",
    "validators",
]

RawHeaders = dict[bytes, bytes]

MAX_CONTENT_TYPE_LENGTH = 256
# RFC 9110 section 8.3.1: type "/" subtype *( OWS ";" OWS parameter ), parameter values a token or
# a quoted string; visible ASCII only, which is what S3 nodes store and give back.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # noqa: S105 - a grammar rule, not a secret
_QUOTED = r'"(?:[\t !#-\[\]-~]|\\[\t -~])*"'
_MEDIA_TYPE = re.compile(
    rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*(?:{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))?)*", re.ASCII
)
# Runs of optional whitespace (RFC 9110 OWS: spaces and tabs).
_WHITESPACE_RUN = re.compile(r"[ \t]+")
_SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.ASCII)
# A range position of more significant digits than this lies beyond any object (S3 stores at most
# 5 TiB) and is read as 10**18, which means the same to every object: int() never sees thousands
# of digits (Python refuses more than 4,300, and such a header was a 500).
_MAX_POSITION_DIGITS = 18
_BEYOND_ANY_OBJECT = 10**_MAX_POSITION_DIGITS
# Every object response: browsers must take the stored Content-Type as it is, never sniff the bytes
# for another (stored HTML served as text/plain must not run as a page).
_NOSNIFF = (b"x-content-type-options", b"nosniff")


def content_length(headers: RawHeaders) -> int | None:
    """The announced body size; None when it is not known (absent, or a chunked body)."""
    raw = headers.get(b"content-length")
    if raw is None or b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        return None
    if not raw.isdigit():
        raise InvalidRequest(f"Content-Length {raw.decode('latin-1')!r} is not a number")
    return int(raw)


def content_type(headers: RawHeaders) -> str | None:
    """The media type to store; None when none was given."""
    raw = headers.get(b"content-type")
    if raw is None or not raw.strip():
        return None
    text = raw.decode("latin-1").strip()
    if len(text) > MAX_CONTENT_TYPE_LENGTH:
        raise InvalidRequest(
            f"the Content-Type is {len(text)} characters long; at most "
            f"{MAX_CONTENT_TYPE_LENGTH} are accepted"
        )
    if not _MEDIA_TYPE.fullmatch(text):
        raise InvalidRequest(
            f"the Content-Type {text[:64]!r} is not a media type (type/subtype; parameters)"
        )
    # S3 nodes fold every run of whitespace in a signed header to one space when they check a
    # signature, minio-py's signer only runs of spaces: a tab would make the two differ and the
    # node refuse the write. Folded here, the value stored is the one signed.
    return _WHITESPACE_RUN.sub(" ", text)


def parse_range(value: bytes | None) -> ByteRange | None:
    """One ``bytes=`` range, or None: a header that is absent, malformed or asks for several
    ranges is ignored (the whole object is sent), as RFC 9110 allows."""
    if value is None:
        return None
    match = _SINGLE_RANGE.fullmatch(value.decode("latin-1").strip())
    if match is None or not any(match.groups()):
        return None
    first, last = (group.lstrip("0") or "0" if group else None for group in match.groups())
    # Compared as numbers (length, then digits) before long ones are capped.
    if first is not None and last is not None and (len(last), last) < (len(first), first):
        return None
    return ByteRange(_position(first), _position(last))


def _position(digits: str | None) -> int | None:
    if digits is None:
        return None
    return _BEYOND_ANY_OBJECT if len(digits) > _MAX_POSITION_DIGITS else int(digits)


def preconditions_of(headers: RawHeaders) -> Preconditions:
    """The request's If-Match, If-None-Match, If-Modified-Since and If-Unmodified-Since.

    A date that does not parse is ignored, as RFC 9110 requires.
    """
    if_match = headers.get(b"if-match")
    if_none_match = headers.get(b"if-none-match")
    return Preconditions(
        if_match=None if if_match is None else _entity_tags(if_match, weak_allowed=False),
        if_none_match=None if if_none_match is None else _entity_tags(if_none_match),
        if_modified_since=_parse_http_date(headers.get(b"if-modified-since")),
        if_unmodified_since=_parse_http_date(headers.get(b"if-unmodified-since")),
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
        tag = unquoted_etag(tag)
        if tag:
            tags.add(tag)
    return EntityTags(tags=frozenset(tags))


def _parse_http_date(value: bytes | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = parsedate_to_datetime(value.decode("latin-1"))
    except (TypeError, ValueError, OverflowError):
        # OverflowError: a year or zone offset too large for a clock (email.utils lets it out).
        return None
    return moment if moment.tzinfo is not None else None


@functools.lru_cache(maxsize=4096)
def _format_http_date(moment: datetime) -> bytes:
    return format_datetime(moment, usegmt=True).encode()


def validators(info: ObjectInfo) -> list[tuple[bytes, bytes]]:
    """ETag and Last-Modified: what a 304 carries."""
    headers = [(b"etag", quoted_etag(info.etag).encode("latin-1"))]
    if info.last_modified is not None:
        headers.append((b"last-modified", _format_http_date(info.last_modified)))
    return headers


def object_headers(info: ObjectInfo, length: int | None = None) -> list[tuple[bytes, bytes]]:
    """What a GET or HEAD of the object is answered with (``length``: of a range)."""
    return [
        (b"content-type", info.content_type.encode("latin-1")),
        (b"content-length", b"%d" % (info.size if length is None else length)),
        (b"accept-ranges", b"bytes"),
        _NOSNIFF,
        *validators(info),
    ]
