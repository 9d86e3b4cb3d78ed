"""Where things are kept in a node's bucket: the one place that names keys.

    by-id/<ID>/<version>.data       a version of the ID: the object's bytes
    by-id/<ID>/<version>.deleted    a version of the ID that deleted it (empty)
    by-id/<ID>/<version>.pending    a conditional write not decided yet (never served)
    <ID>                            the ID's object as the gateway kept it before versions had
                                    keys of their own (read until ``repair`` moves it)
    .gateway/draining               the node's drain mark (its state in the metadata)
    .gateway/migrated               present once the node holds nothing under <ID> keys
    .gateway/ring-<fp>.settled      every ID was found placed by the ring <fp> (no change since)
    .gateway/ring-<fp>.settling     a rebalance is checking that
    .gateway/leases/<name>/<version>.<expiry>   a claim on a job's lease

A version's text sorts as the version does, so a listing of ``by-id/<ID>/`` returns the ID's
versions oldest first, and a listing of ``by-id/`` every ID in order with its versions together
(IDs are letters and digits, which all sort after ``/``). Versions live under a folder of their
own, ``by-id/``, because MinIO refuses a key that is also the folder of another (``<ID>`` and
``<ID>/...``). IDs with ``/`` in them (an S3-compatible front, later) would need escaping here.
"""

from __future__ import annotations

from domain.leases import LeaseClaim
from domain.objects import VersionKind
from domain.versions import Version

__all__ = [
    "DRAIN_MARK_KEY",
    "LEASES_PREFIX",
    "MARKS_PREFIX",
    "MIGRATED_MARK_KEY",
    "RING_MARK_PREFIX",
    "VERSIONS_PREFIX",
    "after_every_version_of",
    "claim_key",
    "claim_of",
    "id_prefix",
    "legacy_key",
    "ring_key",
    "ring_of",
    "version_key",
    "version_of",
]

VERSIONS_PREFIX = "by-id/"
MARKS_PREFIX = ".gateway/"
DRAIN_MARK_KEY = ".gateway/draining"
MIGRATED_MARK_KEY = ".gateway/migrated"
LEASES_PREFIX = ".gateway/leases/"
RING_MARK_PREFIX = ".gateway/ring-"
_KINDS = {kind.value: kind for kind in VersionKind}


def id_prefix(raw_id: str) -> str:
    """The folder of an ID's versions."""
    return f"{VERSIONS_PREFIX}{raw_id}/"


def version_key(raw_id: str, version: Version, kind: VersionKind) -> str:
    return f"{VERSIONS_PREFIX}{raw_id}/{version}.{kind.value}"


def legacy_key(raw_id: str) -> str:
    return raw_id


def after_every_version_of(raw_id: str) -> str:
    """A key after every version key of ``raw_id`` and before those of any later ID (``~`` sorts
    after the digits a version starts with, and ``/`` before every letter and digit)."""
    return f"{VERSIONS_PREFIX}{raw_id}/~"


def version_of(key: str) -> tuple[str, Version, VersionKind] | None:
    """(ID, version, kind) of a version key; None for any other key."""
    if not key.startswith(VERSIONS_PREFIX):
        return None
    raw_id, slash, name = key[len(VERSIONS_PREFIX) :].rpartition("/")
    text, dot, suffix = name.partition(".")
    kind = _KINDS.get(suffix)
    version = Version.parse(text) if slash and dot and kind is not None else None
    if version is None or kind is None or not raw_id:
        return None
    return raw_id, version, kind


def claim_key(lease: str, claim: LeaseClaim) -> str:
    return f"{LEASES_PREFIX}{lease}/{claim.version}.{claim.expires_ns:020d}"


def claim_of(key: str) -> LeaseClaim | None:
    name = key.rpartition("/")[2]
    text, _, expires = name.partition(".")
    version = Version.parse(text)
    if version is None or not expires.isdigit():
        return None
    return LeaseClaim(version, int(expires))


def ring_key(fingerprint: str, *, settled: bool) -> str:
    return f"{RING_MARK_PREFIX}{fingerprint}.{'settled' if settled else 'settling'}"


def ring_of(key: str) -> tuple[str, bool] | None:
    """(fingerprint, settled) of a ring mark's key; None for any other key."""
    if not key.startswith(RING_MARK_PREFIX):
        return None
    fingerprint, _, state = key[len(RING_MARK_PREFIX) :].partition(".")
    if state not in ("settled", "settling") or not fingerprint:
        return None
    return fingerprint, state == "settled"
