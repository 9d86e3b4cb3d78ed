"""Range and conditional requests, against in-memory fakes."""

import pytest
from litestar.testing import TestClient

from domain.objects import ByteRange
from entrypoints.http.headers import parse_range
from tests.unit.conftest import Harness

BODY = bytes(range(256)) * 40  # 10,240 bytes


@pytest.fixture
def stored(client: TestClient) -> dict[str, str]:
    response = client.put("/object/ranged", content=BODY, headers={"Content-Type": "text/plain"})
    assert response.status_code == 201
    return dict(client.get("/object/ranged").headers)


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=10000-", 10000, 10239),
        ("bytes=-5", 10235, 10239),
        ("bytes=100-99999", 100, 10239),
    ],
)
def test_a_single_range_is_206_with_exactly_those_bytes(
    client: TestClient, stored: dict[str, str], header: str, start: int, end: int
) -> None:
    response = client.get("/object/ranged", headers={"Range": header})
    assert response.status_code == 206
    assert response.content == BODY[start : end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/{len(BODY)}"
    assert response.headers["content-length"] == str(end - start + 1)
    assert response.headers["accept-ranges"] == "bytes"


def test_a_range_beyond_the_object_is_416_with_its_size(
    client: TestClient, stored: dict[str, str]
) -> None:
    response = client.get("/object/ranged", headers={"Range": "bytes=20000-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(BODY)}"
    assert response.json()["error"] == "range_not_satisfiable"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "bytes=5-1", "bytes=-"])
def test_ranges_that_cannot_be_served_as_one_are_ignored(
    client: TestClient, stored: dict[str, str], header: str
) -> None:
    response = client.get("/object/ranged", headers={"Range": header})
    assert response.status_code == 200
    assert response.content == BODY


def test_get_and_head_carry_etag_last_modified_and_accept_ranges(
    client: TestClient, stored: dict[str, str]
) -> None:
    head = client.head("/object/ranged")
    assert head.status_code == 200
    for name in ("etag", "last-modified", "accept-ranges", "content-length", "content-type"):
        assert head.headers[name] == stored[name]
    assert stored["content-type"] == "text/plain"


def test_if_none_match_with_the_current_etag_is_304_without_a_body(
    client: TestClient, stored: dict[str, str]
) -> None:
    for method in ("GET", "HEAD"):
        response = client.request(
            method, "/object/ranged", headers={"If-None-Match": stored["etag"]}
        )
        assert response.status_code == 304
        assert response.content == b""
        assert response.headers["etag"] == stored["etag"]
    other = client.get("/object/ranged", headers={"If-None-Match": '"somethingelse"'})
    assert other.status_code == 200
    assert client.get("/object/ranged", headers={"If-None-Match": "*"}).status_code == 304


def test_if_modified_since_is_304_unless_modified_after(
    client: TestClient, stored: dict[str, str]
) -> None:
    same = client.get("/object/ranged", headers={"If-Modified-Since": stored["last-modified"]})
    assert same.status_code == 304
    older = client.get(
        "/object/ranged", headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}
    )
    assert older.status_code == 200


def test_if_match_that_does_not_match_is_412(client: TestClient, stored: dict[str, str]) -> None:
    response = client.get("/object/ranged", headers={"If-Match": '"notthisone"'})
    assert response.status_code == 412
    assert response.json()["error"] == "precondition_failed"
    assert client.get("/object/ranged", headers={"If-Match": stored["etag"]}).status_code == 200


def test_a_put_with_if_none_match_star_creates_only(client: TestClient, harness: Harness) -> None:
    first = client.put("/object/once", content=b"1", headers={"If-None-Match": "*"})
    assert first.status_code == 201
    second = client.put("/object/once", content=b"2", headers={"If-None-Match": "*"})
    assert second.status_code == 412
    assert client.get("/object/once").content == b"1"


def test_a_put_with_if_match_replaces_only_that_version(client: TestClient) -> None:
    etag = client.put("/object/versioned", content=b"1").headers["etag"]
    stale = client.put("/object/versioned", content=b"x", headers={"If-Match": '"old"'})
    assert stale.status_code == 412
    assert client.get("/object/versioned").content == b"1"
    fresh = client.put("/object/versioned", content=b"2", headers={"If-Match": etag})
    assert fresh.status_code == 200
    assert client.get("/object/versioned").content == b"2"


def test_range_headers_parse_as_rfc_9110_single_ranges() -> None:
    assert parse_range(b"bytes=0-0") == ByteRange(0, 0)
    assert parse_range(b"bytes=-1") == ByteRange(None, 1)
    assert parse_range(b"bytes=7-") == ByteRange(7, None)
    assert parse_range(None) is None
    assert parse_range(b"bytes=1-2, 4-5") is None
    assert ByteRange(None, 0).resolve(10) is None
    assert ByteRange(0, None).resolve(0) is None


def test_range_positions_of_thousands_of_digits_are_read_as_beyond_any_object() -> None:
    # Python's int() refuses more than 4,300 digits: this was a 500 before.
    huge = "9" * 5000
    assert parse_range(f"bytes={huge}-".encode()) == ByteRange(10**18, None)
    assert parse_range(f"bytes=0-{huge}".encode()) == ByteRange(0, 10**18)
    assert parse_range(f"bytes=-{huge}".encode()) == ByteRange(None, 10**18)
    assert parse_range(("bytes=" + "0" * 5000 + "7-").encode()) == ByteRange(7, None)
    # Still compared as the numbers they are: the last before the first is no range at all.
    assert parse_range(f"bytes={huge}9-{huge}".encode()) is None


@pytest.mark.parametrize(
    ("header", "status"),
    [
        ("bytes=0-" + "9" * 5000, 206),
        ("bytes=-" + "9" * 5000, 206),
        ("bytes=" + "9" * 5000 + "-", 416),
    ],
    ids=["last", "suffix", "first"],
)
def test_a_range_with_thousands_of_digits_is_answered_never_a_500(
    client: TestClient, stored: dict[str, str], header: str, status: int
) -> None:
    response = client.get("/object/ranged", headers={"Range": header})
    assert response.status_code == status
    if status == 206:
        assert response.content == BODY


@pytest.mark.parametrize(
    "header",
    ["If-Modified-Since", "If-Unmodified-Since"],
)
@pytest.mark.parametrize(
    "date",
    [
        "Sun, 06 Nov 99999999999999999999 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 +99999999999999999999",
        "Sun, 06 Nov " + "9" * 5000 + " 08:49:37 GMT",
    ],
    ids=["year", "zone", "thousands-of-digits"],
)
def test_a_date_with_numbers_too_large_for_a_clock_is_ignored_never_a_500(
    client: TestClient, stored: dict[str, str], header: str, date: str
) -> None:
    # email.utils raises OverflowError (not a ValueError) for these: a 500 before.
    response = client.get("/object/ranged", headers={header: date})
    assert response.status_code == 200
    assert response.content == BODY


def test_objects_are_served_with_nosniff_so_browsers_never_guess_their_type(
    client: TestClient, stored: dict[str, str]
) -> None:
    assert stored["x-content-type-options"] == "nosniff"
    assert client.head("/object/ranged").headers["x-content-type-options"] == "nosniff"
    ranged = client.get("/object/ranged", headers={"Range": "bytes=0-0"})
    assert ranged.headers["x-content-type-options"] == "nosniff"


# RFC 9110 section 13.2.2: preconditions are evaluated before the range.
def test_a_matching_if_none_match_wins_over_a_range_beyond_the_object(
    client: TestClient, stored: dict[str, str]
) -> None:
    response = client.get(
        "/object/ranged", headers={"If-None-Match": stored["etag"], "Range": "bytes=99999-"}
    )
    assert response.status_code == 304
    assert response.headers["etag"] == stored["etag"]


def test_a_failing_if_match_wins_over_a_range_beyond_the_object(
    client: TestClient, stored: dict[str, str]
) -> None:
    response = client.get(
        "/object/ranged", headers={"If-Match": '"notthisone"', "Range": "bytes=99999-"}
    )
    assert response.status_code == 412


def test_a_range_beyond_the_object_is_still_416_when_the_preconditions_hold(
    client: TestClient, stored: dict[str, str]
) -> None:
    response = client.get(
        "/object/ranged", headers={"If-Match": stored["etag"], "Range": "bytes=99999-"}
    )
    assert response.status_code == 416


def test_a_put_with_if_match_star_needs_something_stored(client: TestClient) -> None:
    refused = client.put("/object/starred", content=b"1", headers={"If-Match": "*"})
    assert refused.status_code == 412
    assert client.get("/object/starred").status_code == 404
    client.put("/object/starred", content=b"1")
    replaced = client.put("/object/starred", content=b"2", headers={"If-Match": "*"})
    assert replaced.status_code == 200
    assert client.get("/object/starred").content == b"2"


def test_a_put_with_if_none_match_of_the_current_etag_is_412(client: TestClient) -> None:
    etag = client.put("/object/unlessthis", content=b"1").headers["etag"]
    refused = client.put("/object/unlessthis", content=b"2", headers={"If-None-Match": etag})
    assert refused.status_code == 412
    assert client.get("/object/unlessthis").content == b"1"
    other = client.put("/object/unlessthis", content=b"3", headers={"If-None-Match": '"other"'})
    assert other.status_code == 200
    assert client.get("/object/unlessthis").content == b"3"


def test_a_put_with_several_if_match_etags_replaces_when_any_matches(client: TestClient) -> None:
    etag = client.put("/object/listed", content=b"1").headers["etag"]
    response = client.put(
        "/object/listed", content=b"2", headers={"If-Match": f'"first", {etag}, "third"'}
    )
    assert response.status_code == 200
    assert client.get("/object/listed").content == b"2"


def test_a_put_with_if_unmodified_since_before_the_object_was_stored_is_412(
    client: TestClient,
) -> None:
    client.put("/object/dated", content=b"1")
    refused = client.put(
        "/object/dated",
        content=b"2",
        headers={"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"},
    )
    assert refused.status_code == 412
    assert client.get("/object/dated").content == b"1"
