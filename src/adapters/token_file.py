"""The ``CredentialStore`` port as one JSON file (``GATEWAY_AUTH_TOKENS_FILE``).

    {"format": 1,
     "tokens": [{"id": "1a2b3c4d", "sha256": "<hex>", "scopes": ["read"], "prefix": "",
                 "created": 1764666000, "expires": null, "note": ""}],
     "signing_keys": [{"id": "5e6f7a8b", "secret": "<base64url>", "created": 1764666000}],
     "retired_signing_keys": ["0badc0de"]}

Tokens are there only as hashes; signing keys in clear (HMAC needs them), which is why the file
is written with mode 0600 and a warning is logged when it is readable by others. Every write is
exclusive (``flock`` on ``<file>.lock``, so two commands never lose each other's change) and atomic
(a temporary file in the same directory, fsynced, then renamed over the old one): the gateway
reads either the old keyring or the new, never half of one. The gateway only reads; it notices a
change by the file's inode, mtime and size (``stamp``).

A file that does not exist yet is an empty keyring: with auth on, every request but
``/health/live`` is then refused until a token is made (closed, not open, by default).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import stat
import tempfile
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any

from domain.auth import Keyring, Scope, SigningKey, TokenRecord
from domain.errors import CredentialsUnreadable

__all__ = ["FILE_MODE", "TokenFile"]

logger = logging.getLogger(__name__)

FILE_MODE = 0o600
_DIRECTORY_MODE = 0o700
_FORMAT = 1
_SCOPES = tuple(scope.value for scope in Scope)


class TokenFile:
    """Tokens and signing keys in one JSON file, replaced whole on every change."""

    def __init__(self, path: str) -> None:
        self._path = Path(path)
        self._lock_path = self._path.with_name(self._path.name + ".lock")

    def __repr__(self) -> str:
        return f"TokenFile({str(self._path)!r})"

    def stamp(self) -> Hashable:
        try:
            status = self._path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            return ("error", exc.errno)
        return (status.st_ino, status.st_mtime_ns, status.st_size)

    def load(self) -> Keyring:
        try:
            raw = self._path.read_bytes()
            mode = stat.S_IMODE(self._path.stat().st_mode)
        except FileNotFoundError:
            return Keyring()
        except OSError as exc:
            raise CredentialsUnreadable(
                f"cannot read the tokens file {self._path}: {exc.strerror}"
            ) from None
        if mode & 0o077:
            logger.warning(
                "the tokens file %s has mode %o: others may read its signing keys; "
                "chmod 600 it (the object-gateway commands write it so)",
                self._path,
                mode,
            )
        return self._parse(raw)

    def update(self, change: Callable[[Keyring], Keyring]) -> Keyring:
        with self._exclusive():
            keyring = change(self.load())
            self._write(keyring)
            return keyring

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        self._path.parent.mkdir(mode=_DIRECTORY_MODE, parents=True, exist_ok=True)
        descriptor = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # releases the lock

    def _write(self, keyring: Keyring) -> None:
        data = (json.dumps(_document(keyring), indent=2) + "\n").encode()
        # mkstemp creates the file with mode 0600, in the target's directory (same filesystem,
        # so the rename is atomic).
        descriptor, temporary = tempfile.mkstemp(
            dir=self._path.parent, prefix=f".{self._path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(descriptor, "wb") as output:
                output.write(data)
                output.flush()
                os.fchmod(output.fileno(), FILE_MODE)
                os.fsync(output.fileno())
            os.replace(temporary, self._path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        directory = os.open(self._path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)

    def _parse(self, raw: bytes) -> Keyring:
        try:
            document = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            where = (
                f" (line {exc.lineno}, column {exc.colno})"
                if isinstance(exc, json.JSONDecodeError)
                else ""
            )
            # Never the parser's message: it may quote the file's content.
            raise self._unreadable(f"not JSON{where}") from None
        try:
            return _keyring(document)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._unreadable(_reason(exc)) from None

    def _unreadable(self, reason: str) -> CredentialsUnreadable:
        return CredentialsUnreadable(f"the tokens file {self._path} is not valid: {reason}")


def _reason(exc: Exception) -> str:
    # Our own ValueErrors (the domain's checks) name fields, never secrets; others are shapes.
    if isinstance(exc, KeyError):
        return f"a field is missing: {exc.args[0]!r}"
    if isinstance(exc, ValueError) and not isinstance(exc, UnicodeError):
        text = str(exc)
        return text if len(text) < 200 else "a value is not valid"
    return "a value has the wrong type"


def _document(keyring: Keyring) -> dict[str, Any]:
    return {
        "format": _FORMAT,
        "tokens": [
            {
                "id": token.token_id,
                "sha256": token.digest.hex(),
                "scopes": sorted(token.scopes),
                "prefix": token.prefix,
                "created": token.created_at,
                "expires": token.expires_at,
                "note": token.note,
            }
            for token in keyring.tokens
        ],
        "signing_keys": [
            {
                "id": key.key_id,
                "secret": base64.urlsafe_b64encode(key.secret).decode(),
                "created": key.created_at,
            }
            for key in keyring.signing_keys
        ],
        "retired_signing_keys": list(keyring.retired_key_ids),
    }


def _keyring(document: Any) -> Keyring:
    if not isinstance(document, dict):
        raise ValueError("the top level is not an object")
    if document.get("format") != _FORMAT:
        raise ValueError(f"'format' is not {_FORMAT}")
    tokens = tuple(
        TokenRecord(
            token_id=_text(entry["id"]),
            digest=bytes.fromhex(_text(entry["sha256"])),
            scopes=frozenset(_scope(scope) for scope in entry["scopes"]),
            prefix=_text(entry.get("prefix", "")),
            created_at=_integer(entry.get("created", 0)),
            expires_at=None if entry.get("expires") is None else _integer(entry["expires"]),
            note=_text(entry.get("note", "")),
        )
        for entry in document.get("tokens", [])
    )
    keys = tuple(
        SigningKey(
            key_id=_text(entry["id"]),
            secret=base64.urlsafe_b64decode(_text(entry["secret"]).encode()),
            created_at=_integer(entry.get("created", 0)),
        )
        for entry in document.get("signing_keys", [])
    )
    retired = tuple(_text(key_id) for key_id in document.get("retired_signing_keys", []))
    return Keyring(tokens, keys, retired)


def _scope(value: object) -> Scope:
    if value not in _SCOPES:
        # Not Scope(value)'s message, which would quote the value.
        raise ValueError(f"a scope is not one of {', '.join(_SCOPES)}")
    return Scope(value)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("a value is not a string")
    return value


def _integer(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("a value is not an integer")
    return value
