"""Tokens and signed URLs: what the gateway checks requests against, and what the commands change.

``AccessControl`` is the gateway's side: the keyring it loaded, indexed for the request path (a
dict lookup by token ID, one SHA-256, one constant-time comparison; no file I/O), kept current by
``follow``, which looks at the store's stamp (a ``stat``) every ``reload_seconds`` and reloads
only when it changed. A store that cannot be parsed at start-up stops the gateway; later, the
last good keyring stays in force (a hand edit half-saved must not open or close the door).

``Credentials`` is the commands' side (``object-gateway token ...``, ``sign``,
``signing-key ...``): each change is one exclusive, atomic update of the store, so that a running
gateway picks it up without a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from domain.auth import (
    IssuedToken,
    Keyring,
    Need,
    Principal,
    Scope,
    SignedUrl,
    SigningKey,
    TokenRecord,
    Verifier,
    issue_token,
    new_signing_key,
    sign_url,
)
from domain.errors import CredentialsUnreadable
from domain.object_id import ObjectId
from domain.ports import CredentialStore

__all__ = ["SIGNABLE_METHODS", "AccessControl", "Credentials", "Rotation"]

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
# The methods of /object/{id} a URL can be signed for (a GET URL serves HEAD too).
SIGNABLE_METHODS = ("GET", "HEAD", "PUT", "DELETE")


class AccessControl:
    """The keyring requests are checked against, kept current from the store."""

    def __init__(self, store: CredentialStore, clock: Clock, reload_seconds: float) -> None:
        self._store = store
        self._clock = clock
        self._reload_seconds = reload_seconds
        # Stamp first, then load: a change in between is seen again at the next look.
        self._stamp: Hashable = store.stamp()
        # Unreadable at start-up: CredentialsUnreadable, and the gateway does not start.
        self._verifier = Verifier(store.load())
        self._refused_stamp: Hashable | None = None

    def check_bearer(self, authorization: bytes, need: Need) -> Principal:
        return self._verifier.bearer(authorization, need, self._clock())

    def check_signed(self, method: str, path: str, query: Mapping[str, Sequence[str]]) -> Principal:
        return self._verifier.signed(method, path, query, self._clock())

    def refresh(self) -> bool:
        """Reload the keyring if the store changed; True when a new one is in force."""
        stamp = self._store.stamp()
        if stamp in (self._stamp, self._refused_stamp):
            return False
        try:
            keyring = self._store.load()
        except CredentialsUnreadable as exc:
            # Once per change, not once per look.
            self._refused_stamp = stamp
            logger.error("%s; the tokens and keys loaded before stay in force", exc.detail)
            return False
        self._verifier = Verifier(keyring)
        self._stamp, self._refused_stamp = stamp, None
        logger.info(
            "tokens file reloaded: %d tokens, %d signing keys",
            len(keyring.tokens),
            len(keyring.signing_keys),
        )
        return True

    async def follow(self) -> None:
        """Look for changes every ``reload_seconds`` while the gateway serves (a task)."""
        while True:
            await asyncio.sleep(self._reload_seconds)
            # A stat, and a read of a small file only when it changed: cheap enough for the loop.
            self.refresh()


@dataclass(frozen=True, slots=True)
class Rotation:
    added: SigningKey
    # The key no longer accepted (None while fewer than two keys existed).
    retired: SigningKey | None


class Credentials:
    """Issue, list and revoke tokens; sign URLs; rotate signing keys (the commands)."""

    def __init__(self, store: CredentialStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def create_token(
        self,
        scopes: Iterable[Scope],
        *,
        prefix: str = "",
        expires_in_seconds: float | None = None,
        note: str = "",
    ) -> IssuedToken:
        issued: list[IssuedToken] = []

        def add(keyring: Keyring) -> Keyring:
            token = issue_token(
                keyring,
                scopes,
                now=self._clock(),
                prefix=prefix,
                expires_in_seconds=expires_in_seconds,
                note=note,
            )
            issued.append(token)
            return keyring.with_token(token.record)

        self._store.update(add)
        return issued[-1]

    def tokens(self) -> tuple[TokenRecord, ...]:
        return self._store.load().tokens

    def revoke_token(self, token_id: str) -> TokenRecord | None:
        """Forget the token (its hash too); the one revoked, or None when there was none."""
        revoked: list[TokenRecord] = []

        def remove(keyring: Keyring) -> Keyring:
            record = keyring.token(token_id)
            if record is None:
                return keyring
            revoked.append(record)
            return keyring.without_token(token_id)

        self._store.update(remove)
        return revoked[0] if revoked else None

    def sign(
        self, method: str, object_id: ObjectId, expires_in_seconds: float
    ) -> tuple[SignedUrl, SigningKey | None]:
        """A signed path and query for ``method`` on the object, with the newest key; and the
        key made for it when there was none yet (first use)."""
        if method not in SIGNABLE_METHODS:
            raise ValueError(f"only {', '.join(SIGNABLE_METHODS)} can be signed, not {method}")
        keyring = self._store.load()
        made: SigningKey | None = None
        if keyring.signer is None:
            keyring = self._store.update(self._with_first_key)
            made = keyring.signer
        signer = keyring.signer
        assert signer is not None
        expires_at = int(self._clock() + expires_in_seconds)
        return sign_url(signer, method, f"/object/{object_id.value}", expires_at), made

    def _with_first_key(self, keyring: Keyring) -> Keyring:
        if keyring.signer is not None:  # another command made one meanwhile
            return keyring
        return keyring.rotated(new_signing_key(keyring, now=self._clock()))[0]

    def rotate_signing_key(self) -> Rotation:
        rotations: list[Rotation] = []

        def rotate(keyring: Keyring) -> Keyring:
            key = new_signing_key(keyring, now=self._clock())
            rotated, retired = keyring.rotated(key)
            rotations.append(Rotation(key, retired))
            return rotated

        self._store.update(rotate)
        return rotations[-1]

    def keyring(self) -> Keyring:
        return self._store.load()
