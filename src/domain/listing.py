"""A page of the object listing: what a client may ask for, and what it gets back."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from domain.errors import InvalidRequest
from domain.object_id import MAX_OBJECT_ID_LENGTH, ObjectId

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "ListingEntry", "ListingPage", "ListingQuery"]

# S3's own page is at most 1000 keys; a page is held whole in memory, so the bound is the page.
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
_PREFIX = re.compile(rf"[A-Za-z0-9]{{0,{MAX_OBJECT_ID_LENGTH}}}", re.ASCII)


@dataclass(frozen=True, slots=True)
class ListingQuery:
    """IDs that start with ``prefix`` and sort after ``after``, at most ``limit`` of them.

    IDs sort as S3 sorts keys (by their bytes; IDs are ASCII, so as Python sorts strings).
    """

    prefix: str = ""
    after: str | None = None
    limit: int = DEFAULT_PAGE_SIZE

    def __post_init__(self) -> None:
        if not _PREFIX.fullmatch(self.prefix):
            raise InvalidRequest(
                f"prefix must be 0 to {MAX_OBJECT_ID_LENGTH} ASCII letters or digits"
            )
        if self.after is not None:
            ObjectId(self.after)  # an ID, as the previous page's "next" is
        if not 1 <= self.limit <= MAX_PAGE_SIZE:
            raise InvalidRequest(f"limit must be 1 to {MAX_PAGE_SIZE}")

    def wants(self, key: str) -> bool:
        """Whether a node's key is on this page's side of ``after`` and under ``prefix``."""
        return key.startswith(self.prefix) and (self.after is None or key > self.after)

    def past_the_prefix(self, key: str) -> bool:
        """Whether ``key`` sorts after every key under ``prefix`` (nothing later can match)."""
        return key > self.prefix and not key.startswith(self.prefix)


@dataclass(frozen=True, slots=True)
class ListingEntry:
    """One stored ID, as its newest copy has it."""

    object_id: str
    size: int
    etag: str
    last_modified: datetime | None


@dataclass(frozen=True, slots=True)
class ListingPage:
    """``next``: the ``after`` of the following page; None when this page is the last."""

    objects: tuple[ListingEntry, ...]
    next: str | None
