"""SigV4 signatures for node requests: minio-py's own signer, with the per-day work done once.

``minio.signer.sign_v4_s3`` derives the signing key (four HMACs) and formats the dates for every
request, though the key changes only with the secret and the day, and the dates (with the string to
sign's prefix they go into) once a second.
Under small-object load that was about a third of the signing cost. This module calls the same
minio-py functions ``sign_v4_s3`` is made of, in the same order, and keeps those per-day and
per-second results; ``tests/unit/test_s3_signing.py`` checks its headers against ``sign_v4_s3``'s
for the pinned minio-py release.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import SplitResult

from minio.signer import (
    _get_authorization,
    _get_canonical_request_hash,
    _get_scope,
    _get_signature,
    _get_signing_key,
    _get_string_to_sign,
)
from minio.time import to_amz_date

__all__ = ["REGION", "signed_headers"]

REGION = "us-east-1"  # MinIO's default; naming it also saves a GetBucketLocation round trip
_SERVICE = "s3"


@dataclass(frozen=True, slots=True)
class _SigningTime:
    date: datetime
    amz_date: str
    scope: str
    day: datetime
    # minio-py's string to sign up to the canonical request's hash, which it ends with.
    string_to_sign_prefix: str


@functools.lru_cache(maxsize=1)
def _signing_time_at(second: int) -> _SigningTime:
    date = datetime.fromtimestamp(second, UTC)
    scope = _get_scope(date, REGION, _SERVICE)
    return _SigningTime(
        date=date,
        amz_date=to_amz_date(date),
        scope=scope,
        day=date.replace(hour=0, minute=0, second=0),
        string_to_sign_prefix=_get_string_to_sign(date, scope, ""),
    )


@functools.lru_cache(maxsize=256)
def _signing_key(secret_key: str, day: datetime) -> bytes:
    # Only the day of the date goes into the key: one derivation per node and day.
    return _get_signing_key(secret_key, day, REGION, _SERVICE)


def signed_headers(
    *,
    method: str,
    url: SplitResult,
    headers: Mapping[str, str],
    access_key: str,
    secret_key: str,
    payload_hash: str,
) -> dict[str, str]:
    """``headers`` with Host, the date, the payload hash and the Authorization of SigV4 added."""
    now = _signing_time_at(int(time.time()))
    signed = {
        **headers,
        "Host": url.netloc,
        "x-amz-date": now.amz_date,
        "x-amz-content-sha256": payload_hash,
    }
    canonical_request_hash, header_names = _get_canonical_request_hash(
        method, url, signed, payload_hash
    )
    string_to_sign = now.string_to_sign_prefix + canonical_request_hash
    signature = _get_signature(_signing_key(secret_key, now.day), string_to_sign)
    signed["Authorization"] = _get_authorization(access_key, now.scope, header_names, signature)
    return signed
