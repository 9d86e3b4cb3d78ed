"""RFC 9110 section 13.2.2's order of preconditions, for reads and writes."""

from datetime import UTC, datetime

import pytest

from domain.conditions import EntityTags, Preconditions, Verdict
from domain.objects import ObjectInfo
from entrypoints.http.headers import preconditions_of

STORED = ObjectInfo(3, "text/plain", "abc", datetime(2026, 6, 1, tzinfo=UTC))
EARLIER = datetime(2026, 1, 1, tzinfo=UTC)
LATER = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("conditions", "current", "reading", "verdict"),
    [
        (Preconditions(if_match=EntityTags(any=True)), None, False, Verdict.FAILED),
        (Preconditions(if_match=EntityTags(any=True)), STORED, False, Verdict.PROCEED),
        (
            Preconditions(if_match=EntityTags(frozenset({"x", "abc"}))),
            STORED,
            True,
            Verdict.PROCEED,
        ),
        # If-Match decides; If-Unmodified-Since is not looked at.
        (
            Preconditions(if_match=EntityTags(frozenset({"abc"})), if_unmodified_since=EARLIER),
            STORED,
            False,
            Verdict.PROCEED,
        ),
        (Preconditions(if_unmodified_since=EARLIER), STORED, False, Verdict.FAILED),
        (Preconditions(if_unmodified_since=EARLIER), None, False, Verdict.PROCEED),
        (Preconditions(if_none_match=EntityTags(any=True)), None, False, Verdict.PROCEED),
        (Preconditions(if_none_match=EntityTags(any=True)), STORED, False, Verdict.FAILED),
        (
            Preconditions(if_none_match=EntityTags(frozenset({"abc"}))),
            STORED,
            True,
            Verdict.NOT_MODIFIED,
        ),
        # If-None-Match decides; If-Modified-Since is not looked at.
        (
            Preconditions(if_none_match=EntityTags(frozenset({"x"})), if_modified_since=LATER),
            STORED,
            True,
            Verdict.PROCEED,
        ),
        (Preconditions(if_modified_since=LATER), STORED, True, Verdict.NOT_MODIFIED),
        (Preconditions(if_modified_since=LATER), STORED, False, Verdict.PROCEED),
        # A failing If-Match wins over a matching If-None-Match.
        (
            Preconditions(
                if_match=EntityTags(frozenset({"x"})), if_none_match=EntityTags(any=True)
            ),
            STORED,
            True,
            Verdict.FAILED,
        ),
    ],
)
def test_preconditions_are_evaluated_in_rfc_order(
    conditions: Preconditions, current: ObjectInfo | None, reading: bool, verdict: Verdict
) -> None:
    assert conditions.evaluate(current, reading=reading) is verdict


def test_a_weak_tag_never_matches_if_match_but_matches_if_none_match() -> None:
    parsed = preconditions_of({b"if-match": b'W/"abc"', b"if-none-match": b'W/"abc"'})
    assert parsed.if_match == EntityTags(frozenset())
    assert parsed.if_none_match == EntityTags(frozenset({"abc"}))
    assert parsed.evaluate(STORED, reading=True) is Verdict.FAILED


def test_no_headers_are_no_preconditions_and_a_bad_date_is_ignored() -> None:
    assert preconditions_of({}).empty
    assert preconditions_of({b"if-modified-since": b"yesterday"}).empty
