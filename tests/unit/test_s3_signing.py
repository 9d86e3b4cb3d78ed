"""The gateway's SigV4 headers are exactly minio-py's ``sign_v4_s3`` headers for one request."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import SplitResult

import pytest
from minio.credentials.credentials import Credentials
from minio.signer import sign_v4_s3

from adapters.s3.signing import REGION, signed_headers

UNSIGNED = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def minio_signed(
    method: str, url: SplitResult, ours: dict[str, str], *, access: str, secret: str, payload: str
) -> dict[str, str]:
    """What minio-py signs for the request ours describes, at the date ours carries."""
    date = datetime.strptime(ours["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    unsigned = {name: value for name, value in ours.items() if name != "Authorization"}
    return dict(
        sign_v4_s3(
            method=method,
            url=url,
            region=REGION,
            headers=unsigned,
            credentials=Credentials(access, secret),
            content_sha256=payload,
            date=date,
        )
    )


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "payload"),
    [
        ("GET", "/objects/abc123", "", {"Range": "bytes=0-99"}, EMPTY_SHA256),
        ("HEAD", "/objects/Z", "", {}, EMPTY_SHA256),
        ("PUT", "/objects/abc", "", {"Content-Type": "text/plain", "If-None-Match": "*"}, UNSIGNED),
        ("PUT", "/objects/abc", "partNumber=3&uploadId=a%2Fb", {}, UNSIGNED),
        ("GET", "/objects", "list-type=2&max-keys=1000", {}, EMPTY_SHA256),
    ],
)
def test_headers_match_minio_signer(
    method: str, path: str, query: str, headers: dict[str, str], payload: str
) -> None:
    url = SplitResult("http", "10.0.0.7:9000", path, query, "")

    ours = signed_headers(
        method=method,
        url=url,
        headers=headers,
        access_key="node-key",
        secret_key="node-secret",
        payload_hash=payload,
    )

    assert ours["Host"] == "10.0.0.7:9000"
    assert ours == minio_signed(
        method, url, ours, access="node-key", secret="node-secret", payload=payload
    )


def test_each_secret_signs_with_its_own_key() -> None:
    url = SplitResult("http", "10.0.0.8:9000", "/objects/k", "", "")
    first, second = (
        signed_headers(
            method="GET",
            url=url,
            headers={},
            access_key=access,
            secret_key=secret,
            payload_hash=EMPTY_SHA256,
        )
        for access, secret in (("a", "secret-one"), ("a", "secret-two"))
    )

    assert first["Authorization"] != second["Authorization"]
    assert first == minio_signed(
        "GET", url, first, access="a", secret="secret-one", payload=EMPTY_SHA256
    )
    assert second == minio_signed(
        "GET", url, second, access="a", secret="secret-two", payload=EMPTY_SHA256
    )
