"""Who may do what: scoped tokens kept only as hashes, and signed URLs in Swift TempURL's model.

A **token** is ``ogw_<id>_<secret>``: ``<id>`` (8 hex digits) is public, named by ``token list``
and in log lines; ``<secret>`` is 256 random bits. The gateway keeps the token's SHA-256 and
never the token. A request's token is found by its ID (a dict lookup, nothing secret about it)
and then its hash is compared with the stored one by ``hmac.compare_digest``; a token whose ID
is unknown is compared with a dummy hash, so that both paths do the same work.

Why SHA-256 and not a password hash (argon2, scrypt): those slow down guessing of low-entropy
secrets that people choose. A token is 256 bits from ``secrets``: nobody can enumerate them,
with or without a slow hash, and a slow hash would cost every request milliseconds of CPU.
Whoever reads the file learns the hashes, which open nothing.

A **signed URL** is ``/object/<id>?expires=<unix seconds>&key=<key id>&signature=<hex>``, the
signature HMAC-SHA256 over ``METHOD\\nexpires\\npath`` with the signing key named (Swift's
TempURL, with SHA-256). Two keys are active at once, the newer signing: a rotation adds a key and
retires the older of the two, so a URL keeps working across one rotation and stops at the next.
A URL signed for GET also serves HEAD, as in Swift. Signing keys are secrets and are kept in the
file in clear (HMAC needs them): the file is written with mode 0600.

Nothing here logs; no repr shows a hash, a secret or a token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum

from domain.errors import (
    ExpiredSignature,
    ExpiredToken,
    InvalidSignature,
    InvalidToken,
    PrefixNotAllowed,
    RevokedKey,
    ScopeNotAllowed,
)
from domain.object_id import MAX_OBJECT_ID_LENGTH

__all__ = [
    "MAX_SIGNING_KEYS",
    "SIGNED_URL_FIELDS",
    "TOKEN_PREFIX",
    "IssuedToken",
    "Keyring",
    "Need",
    "Principal",
    "Scope",
    "SignedUrl",
    "SigningKey",
    "TokenRecord",
    "Verifier",
    "issue_token",
    "new_signing_key",
    "sign_url",
    "token_digest",
    "valid_prefix",
]

TOKEN_PREFIX = "ogw_"  # noqa: S105 - the tokens' marker (secret scanners can match it)
# Signing keys active at once: the newer signs, both verify.
MAX_SIGNING_KEYS = 2
# Retired key IDs remembered, so that their URLs answer revoked_key rather than invalid_signature.
MAX_RETIRED_KEYS = 32
# The query parameters of a signed URL.
SIGNED_URL_FIELDS = ("expires", "key", "signature")
_ID_HEX_DIGITS = 8
_SECRET_BYTES = 32
# Far longer than any token this module issues; a longer header is refused before hashing.
_MAX_TOKEN_BYTES = 256
# RFC 6750's b64token, anchored; linear on any input.
_B64TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")
_ID = re.compile(rf"[0-9a-f]{{{_ID_HEX_DIGITS}}}")
_PREFIX = re.compile(rf"[A-Za-z0-9]{{0,{MAX_OBJECT_ID_LENGTH}}}", re.ASCII)
# At most 12 digits: any time in the next 30,000 years, and never a huge int to convert.
_EXPIRES = re.compile(r"[0-9]{1,12}", re.ASCII)
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
# Compared with when a token's ID is unknown, so that both answers take the same work.
_DUMMY_DIGEST = hashlib.sha256(b"no token has this digest").digest()


class Scope(StrEnum):
    """What a token may do. ``metrics`` and ``admin`` are for operators and open no object."""

    READ = "read"  # GET and HEAD of /object/{id}
    WRITE = "write"  # PUT of /object/{id}
    DELETE = "delete"  # DELETE of /object/{id}
    LIST = "list"  # GET /objects
    METRICS = "metrics"  # GET /metrics and /health/ready
    ADMIN = "admin"  # every operational route (what metrics may, and any route not named above)


def _allows(scopes: frozenset[Scope], needed: Scope) -> bool:
    return needed in scopes or (needed is Scope.METRICS and Scope.ADMIN in scopes)


def valid_prefix(prefix: str) -> bool:
    """A prefix an ID can start with: 0 to 32 ASCII letters and digits."""
    return _PREFIX.fullmatch(prefix) is not None


def token_digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An issued token as it is kept: its public ID, its SHA-256, what it may do, until when."""

    token_id: str
    digest: bytes = field(repr=False)
    scopes: frozenset[Scope]
    # Only IDs (and listing prefixes) that start with this; empty: any.
    prefix: str = ""
    created_at: int = 0
    expires_at: int | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.token_id):
            raise ValueError(f"a token ID is {_ID_HEX_DIGITS} lower-case hex digits")
        if len(self.digest) != hashlib.sha256().digest_size:
            raise ValueError(f"token {self.token_id}: the digest is not a SHA-256")
        if not self.scopes:
            raise ValueError(f"token {self.token_id} has no scope")
        if not valid_prefix(self.prefix):
            raise ValueError(
                f"token {self.token_id}: a prefix is at most {MAX_OBJECT_ID_LENGTH} ASCII "
                "letters and digits"
            )

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def describe(self) -> str:
        """One line for people: ID, scopes, prefix and expiry (nothing secret)."""
        parts = [f"token {self.token_id}: scopes {', '.join(sorted(self.scopes))}"]
        if self.prefix:
            parts.append(f"IDs starting with {self.prefix!r}")
        parts.append("no expiry" if self.expires_at is None else f"expires {_utc(self.expires_at)}")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class SigningKey:
    key_id: str
    secret: bytes = field(repr=False)
    created_at: int = 0

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.key_id):
            raise ValueError(f"a signing key ID is {_ID_HEX_DIGITS} lower-case hex digits")
        if len(self.secret) < _SECRET_BYTES:
            raise ValueError(f"signing key {self.key_id} is shorter than {_SECRET_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class Keyring:
    """Everything the tokens file holds: tokens (as hashes), signing keys, retired key IDs."""

    tokens: tuple[TokenRecord, ...] = ()
    # Oldest first; the last one signs.
    signing_keys: tuple[SigningKey, ...] = ()
    retired_key_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len({token.token_id for token in self.tokens}) != len(self.tokens):
            raise ValueError("two tokens have the same ID")
        if len(self.signing_keys) > MAX_SIGNING_KEYS:
            raise ValueError(f"more than {MAX_SIGNING_KEYS} signing keys")
        if len({key.key_id for key in self.signing_keys}) != len(self.signing_keys):
            raise ValueError("two signing keys have the same ID")

    @property
    def signer(self) -> SigningKey | None:
        return self.signing_keys[-1] if self.signing_keys else None

    def token(self, token_id: str) -> TokenRecord | None:
        return next((token for token in self.tokens if token.token_id == token_id), None)

    def with_token(self, record: TokenRecord) -> Keyring:
        return replace(self, tokens=(*self.tokens, record))

    def without_token(self, token_id: str) -> Keyring:
        return replace(
            self, tokens=tuple(token for token in self.tokens if token.token_id != token_id)
        )

    def rotated(self, key: SigningKey) -> tuple[Keyring, SigningKey | None]:
        """Add ``key`` (it signs from now on); with two keys already, retire the older."""
        keys = (*self.signing_keys, key)
        retired = keys[0] if len(keys) > MAX_SIGNING_KEYS else None
        retired_ids = self.retired_key_ids
        if retired is not None:
            keys = keys[1:]
            retired_ids = (*retired_ids, retired.key_id)[-MAX_RETIRED_KEYS:]
        return replace(self, signing_keys=keys, retired_key_ids=retired_ids), retired


@dataclass(frozen=True, slots=True)
class IssuedToken:
    record: TokenRecord
    # Shown once, to whoever asked for it; kept nowhere.
    token: str = field(repr=False)


def _new_id(taken: Iterable[str]) -> str:
    used = set(taken)
    while (candidate := secrets.token_hex(_ID_HEX_DIGITS // 2)) in used:
        pass  # 2^32 IDs: a collision is rare, and each draw is independent
    return candidate


def issue_token(
    keyring: Keyring,
    scopes: Iterable[Scope],
    *,
    now: float,
    prefix: str = "",
    expires_in_seconds: float | None = None,
    note: str = "",
) -> IssuedToken:
    token_id = _new_id(token.token_id for token in keyring.tokens)
    token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"
    record = TokenRecord(
        token_id=token_id,
        digest=token_digest(token.encode()),
        scopes=frozenset(scopes),
        prefix=prefix,
        created_at=int(now),
        expires_at=None if expires_in_seconds is None else int(now + expires_in_seconds),
        note=note,
    )
    return IssuedToken(record, token)


def new_signing_key(keyring: Keyring, *, now: float) -> SigningKey:
    taken = [key.key_id for key in keyring.signing_keys] + list(keyring.retired_key_ids)
    return SigningKey(_new_id(taken), secrets.token_bytes(_SECRET_BYTES), int(now))


def _signature(key: SigningKey, method: str, path: str, expires: str) -> bytes:
    message = f"{method}\n{expires}\n{path}".encode("latin-1")
    return hmac.new(key.secret, message, hashlib.sha256).hexdigest().encode()


@dataclass(frozen=True, slots=True)
class SignedUrl:
    path_and_query: str
    key_id: str
    expires_at: int


def sign_url(key: SigningKey, method: str, path: str, expires_at: int) -> SignedUrl:
    """The path and query that let whoever holds them make this request until ``expires_at``."""
    expires = str(expires_at)
    signature = _signature(key, method, path, expires).decode()
    return SignedUrl(
        f"{path}?expires={expires}&key={key.key_id}&signature={signature}", key.key_id, expires_at
    )


@dataclass(frozen=True, slots=True)
class Need:
    """What a request needs. ``scope`` None: any valid token. ``name``: the object ID (or the
    listing prefix) as sent, which a token limited to a prefix must start with; None where no
    object is named (operational routes). Where the name cannot be told, pass "": a token with a
    prefix is then refused."""

    scope: Scope | None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request came from, for its log line: a token's ID or a signing key's ID."""

    kind: str
    credential_id: str

    def __str__(self) -> str:
        return f"{self.kind} {self.credential_id}"


class Verifier:
    """One keyring, indexed for the request path: tokens by ID, signing keys by ID."""

    __slots__ = ("_keys", "_retired", "_tokens")

    def __init__(self, keyring: Keyring) -> None:
        self._tokens = {token.token_id: token for token in keyring.tokens}
        self._keys = {key.key_id: key for key in keyring.signing_keys}
        self._retired = frozenset(keyring.retired_key_ids)

    def __repr__(self) -> str:
        return f"Verifier({len(self._tokens)} tokens, {len(self._keys)} signing keys)"

    def bearer(self, authorization: bytes, need: Need, now: float) -> Principal:
        """The principal of an ``Authorization`` header's value, if it may do what ``need``
        says; else ``Unauthenticated`` (401) or ``Forbidden`` (403)."""
        token = _bearer_token(authorization)
        digest = token_digest(token)
        # ogw_<id>_<secret>: the ID picks the record; a malformed token gets no record.
        token_id = token[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + _ID_HEX_DIGITS]
        record = (
            self._tokens.get(token_id.decode("ascii"))
            if token.startswith(TOKEN_PREFIX.encode())
            else None
        )
        expected = _DUMMY_DIGEST if record is None else record.digest
        if not hmac.compare_digest(digest, expected) or record is None:
            raise InvalidToken("the token is not valid: it was never issued, or was revoked")
        if record.expired(now):
            assert record.expires_at is not None
            raise ExpiredToken(
                f"token {record.token_id} expired at {_utc(record.expires_at)}; ask for a new one"
            )
        if need.scope is not None and not _allows(record.scopes, need.scope):
            raise ScopeNotAllowed(
                f"token {record.token_id} has the scopes {', '.join(sorted(record.scopes))}; "
                f"this request needs {need.scope}"
                + (" (or admin)" if need.scope is Scope.METRICS else "")
            )
        if record.prefix and need.name is not None and not need.name.startswith(record.prefix):
            raise PrefixNotAllowed(
                f"token {record.token_id} may only touch IDs that start with {record.prefix!r}"
                " (and list with such a prefix)"
            )
        return Principal("token", record.token_id)

    def signed(
        self, method: str, path: str, query: Mapping[str, Sequence[str]], now: float
    ) -> Principal:
        """The principal of a signed URL for ``method`` on ``path``; else ``Unauthenticated``."""
        values = [query.get(name, ()) for name in SIGNED_URL_FIELDS]
        if any(len(value) != 1 for value in values):
            raise InvalidSignature(
                "a signed URL carries expires, key and signature, once each "
                "(object-gateway sign makes one)"
            )
        expires, key_id, signature = (value[0] for value in values)
        if not _EXPIRES.fullmatch(expires):
            raise InvalidSignature("expires is not a Unix time in seconds")
        if key_id in self._retired:
            raise RevokedKey(
                f"the URL was signed with key {key_id}, which a rotation retired; ask for a new URL"
            )
        key = self._keys.get(key_id)
        if key is None:
            raise InvalidSignature("the URL was signed with a key this gateway does not have")
        presented = signature.encode("utf-8", "replace")
        # A GET URL serves HEAD too; both candidates are always compared.
        methods = ("HEAD", "GET") if method == "HEAD" else (method,)
        matched = False
        for candidate in methods:
            matched |= hmac.compare_digest(_signature(key, candidate, path, expires), presented)
        if not matched or not _SIGNATURE.fullmatch(signature):
            raise InvalidSignature(
                "the signature does not match this method, path and expiry (was the URL changed?)"
            )
        if now >= int(expires):
            raise ExpiredSignature(f"the URL expired at {_utc(int(expires))}; ask for a new one")
        return Principal("signed", key_id)


def _bearer_token(authorization: bytes) -> bytes:
    scheme, _, token = authorization.strip(b" \t").partition(b" ")
    if scheme.lower() != b"bearer":
        raise InvalidToken("only Bearer tokens are accepted: Authorization: Bearer <token>")
    token = token.strip(b" \t")
    if not token or len(token) > _MAX_TOKEN_BYTES or not _B64TOKEN.fullmatch(token):
        raise InvalidToken("the Bearer token is malformed")
    return token
