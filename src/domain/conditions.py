"""Conditional requests (RFC 9110 section 13): whether a request's preconditions hold for what is
stored under its ID, evaluated in the order section 13.2.2 prescribes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from domain.objects import ObjectInfo

__all__ = ["EntityTags", "Preconditions", "Verdict"]


class Verdict(Enum):
    PROCEED = "proceed"
    NOT_MODIFIED = "not_modified"  # 304: the client's copy is current (reads only)
    FAILED = "failed"  # 412


@dataclass(frozen=True, slots=True)
class EntityTags:
    """The entity tags of an If-Match or If-None-Match (unquoted), or ``*``: any current object."""

    tags: frozenset[str] = frozenset()
    any: bool = False

    def match(self, current: ObjectInfo | None) -> bool:
        if current is None:
            return False
        return self.any or current.etag in self.tags


@dataclass(frozen=True, slots=True)
class Preconditions:
    """A request's preconditions.

    ``if_match`` holds only strong tags (it compares strongly, and every ETag here is strong);
    ``if_none_match`` compares weakly, so its tags are kept without ``W/``.
    """

    if_match: EntityTags | None = None
    if_none_match: EntityTags | None = None
    if_modified_since: datetime | None = None
    if_unmodified_since: datetime | None = None

    @property
    def empty(self) -> bool:
        return (
            self.if_match is None
            and self.if_none_match is None
            and self.if_modified_since is None
            and self.if_unmodified_since is None
        )

    def evaluate(self, current: ObjectInfo | None, *, reading: bool) -> Verdict:
        """The verdict for a read (GET, HEAD) or a write, given what is stored (None: nothing)."""
        if self.if_match is not None:
            if not self.if_match.match(current):
                return Verdict.FAILED
        elif (
            self.if_unmodified_since is not None
            and current is not None
            and current.last_modified is not None
            and current.last_modified > self.if_unmodified_since
        ):
            return Verdict.FAILED
        if self.if_none_match is not None:
            if self.if_none_match.match(current):
                return Verdict.NOT_MODIFIED if reading else Verdict.FAILED
        elif (
            reading
            and self.if_modified_since is not None
            and current is not None
            and current.last_modified is not None
            and current.last_modified <= self.if_modified_since
        ):
            return Verdict.NOT_MODIFIED
        return Verdict.PROCEED
