"""The tokens file on a real filesystem, and the auth commands as a user runs them.

No container is needed: the adapter is a file, and the commands work on it directly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from adapters.token_file import TokenFile
from domain.auth import Keyring, Need, Scope, Verifier, issue_token, new_signing_key
from domain.errors import CredentialsUnreadable
from tests.integration.support import OBJECT_GATEWAY

NOW = 1_800_000_000.0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "auth" / "tokens.json"


def add_token(keyring: Keyring, **options: object) -> Keyring:
    return keyring.with_token(issue_token(keyring, [Scope.READ], now=NOW, **options).record)  # type: ignore[arg-type]


def test_a_file_that_does_not_exist_is_an_empty_keyring(path: Path) -> None:
    store = TokenFile(str(path))
    assert store.load() == Keyring()
    assert store.stamp() is None


def test_a_keyring_round_trips_through_the_file(path: Path) -> None:
    store = TokenFile(str(path))
    keyring = Keyring()
    issued = issue_token(
        keyring,
        [Scope.READ, Scope.LIST],
        now=NOW,
        prefix="img",
        expires_in_seconds=3600,
        note="the thumbnailer",
    )
    keyring = keyring.with_token(issued.record)
    for _ in range(3):
        keyring, _ = keyring.rotated(new_signing_key(keyring, now=NOW))
    store.update(lambda _: keyring)
    loaded = TokenFile(str(path)).load()
    assert loaded == keyring
    assert len(loaded.retired_key_ids) == 1
    Verifier(loaded).bearer(f"Bearer {issued.token}".encode(), Need(Scope.READ, "img1"), NOW)


def test_the_file_holds_the_tokens_hash_and_never_the_token(path: Path) -> None:
    store = TokenFile(str(path))
    issued: list[str] = []

    def add(keyring: Keyring) -> Keyring:
        token = issue_token(keyring, [Scope.READ], now=NOW)
        issued.append(token.token)
        return keyring.with_token(token.record)

    store.update(add)
    text = path.read_text()
    assert issued[0] not in text
    assert issued[0].rpartition("_")[2] not in text
    assert hashlib.sha256(issued[0].encode()).hexdigest() in text


def test_every_write_is_mode_0600_and_leaves_no_temporary_file(path: Path) -> None:
    store = TokenFile(str(path))
    store.update(add_token)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)  # loosened by hand
    store.update(add_token)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == ["tokens.json", "tokens.json.lock"]


def test_the_stamp_changes_with_every_update(path: Path) -> None:
    store = TokenFile(str(path))
    stamps = {store.stamp()}
    for _ in range(5):
        store.update(add_token)
        stamps.add(store.stamp())
    assert len(stamps) == 6


def test_a_file_others_may_read_is_loaded_with_a_warning(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = TokenFile(str(path))
    store.update(add_token)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert len(store.load().tokens) == 1
    assert any("chmod 600" in record.getMessage() for record in caplog.records)


SECRET_LOOKING = "ogw_12345678_THIS-MUST-NEVER-BE-ECHOED"


@pytest.mark.parametrize(
    "content",
    [
        f'{{"format": 1, "tokens": [{{"id": "{SECRET_LOOKING}"',
        f'["{SECRET_LOOKING}"]',
        f'{{"format": 2, "note": "{SECRET_LOOKING}"}}',
        f'{{"format": 1, "tokens": [{{"id": "12345678", "sha256": "{SECRET_LOOKING}", '
        '"scopes": ["read"]}]}',
        '{"format": 1, "tokens": [{"id": "12345678", "sha256": "' + "0" * 64 + '", '
        f'"scopes": ["{SECRET_LOOKING}"]}}]}}',
        f'{{"format": 1, "signing_keys": [{{"id": "12345678", "secret": "{SECRET_LOOKING}"}}]}}',
        '{"format": 1, "tokens": [{"id": 1}]}',
        "\xff\xfe not utf-8",
    ],
)
def test_an_invalid_file_names_the_file_and_never_its_content(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(CredentialsUnreadable) as raised:
        TokenFile(str(path)).load()
    assert str(path) in raised.value.detail
    assert "THIS-MUST-NEVER" not in raised.value.detail
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__


def test_updates_from_many_writers_at_once_lose_nothing(path: Path) -> None:
    writers, each = 6, 8

    def slow_add(keyring: Keyring) -> Keyring:
        time.sleep(0.001)  # widen the window between read and write
        return add_token(keyring)

    def write() -> None:
        store = TokenFile(str(path))
        for _ in range(each):
            store.update(slow_add)

    threads = [threading.Thread(target=write) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(TokenFile(str(path)).load().tokens) == writers * each


def test_a_reader_never_sees_half_a_file(path: Path) -> None:
    store = TokenFile(str(path))
    store.update(add_token)
    done = threading.Event()
    failures: list[Exception] = []

    def read() -> None:
        reader = TokenFile(str(path))
        while not done.is_set():
            try:
                reader.load()
            except CredentialsUnreadable as exc:
                failures.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for _ in range(150):
            store.update(add_token)
    finally:
        done.set()
        thread.join(timeout=30)
    assert failures == []


# The commands, as processes, on GATEWAY_AUTH_TOKENS_FILE.


def run(path: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(OBJECT_GATEWAY), *arguments],
        env={**os.environ, "GATEWAY_AUTH_TOKENS_FILE": str(path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_token_create_prints_the_token_last_and_the_file_keeps_only_its_hash(path: Path) -> None:
    created = run(
        path,
        "token",
        "create",
        "--scope",
        "read",
        "--scope",
        "write",
        "--prefix",
        "img",
        "--expires",
        "1h",
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.splitlines()[-1]
    assert token.startswith("ogw_")
    assert token not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (record,) = TokenFile(str(path)).load().tokens
    assert record.scopes == {Scope.READ, Scope.WRITE}
    assert record.prefix == "img"
    assert record.expires_at is not None
    assert 3500 < record.expires_at - time.time() <= 3600
    Verifier(TokenFile(str(path)).load()).bearer(
        f"Bearer {token}".encode(), Need(Scope.WRITE, "img1"), time.time()
    )

    listed = run(path, "token", "list")
    assert record.token_id in listed.stdout
    assert token not in listed.stdout
    assert run(path, "token", "revoke", record.token_id).returncode == 0
    assert TokenFile(str(path)).load().tokens == ()
    assert run(path, "token", "revoke", record.token_id).returncode == 1


def test_sign_prints_the_url_last_making_a_first_key_and_rotation_retires_the_oldest(
    path: Path,
) -> None:
    signed = run(path, "sign", "GET", "abc", "--expires", "15m")
    assert signed.returncode == 0, signed.stderr
    url = signed.stdout.splitlines()[-1]
    assert url.startswith("/object/abc?expires=")
    (first,) = TokenFile(str(path)).load().signing_keys
    assert f"key={first.key_id}" in url
    assert run(path, "signing-key", "rotate").returncode == 0
    assert run(path, "signing-key", "rotate").returncode == 0
    keyring = TokenFile(str(path)).load()
    assert len(keyring.signing_keys) == 2
    assert keyring.retired_key_ids == (first.key_id,)
    listed = run(path, "signing-key", "list").stdout
    assert f"{first.key_id}: retired" in listed
    assert first.secret.hex() not in json.dumps(listed)


@pytest.mark.parametrize(
    "arguments",
    [
        ("sign", "GET", "not-an-id"),
        ("sign", "POST", "abc"),
        ("sign", "GET", "abc", "--expires", "soon"),
        ("token", "create", "--scope", "everything"),
        ("token", "create", "--scope", "read", "--prefix", "a/b"),
        ("token", "create"),
    ],
)
def test_a_wrong_command_line_exits_2_and_changes_nothing(
    path: Path, arguments: tuple[str, ...]
) -> None:
    assert run(path, *arguments).returncode == 2
    assert not path.exists()


def test_the_commands_without_a_tokens_file_setting_exit_2_and_say_why(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "GATEWAY_AUTH_TOKENS_FILE"}
    result = subprocess.run(
        [str(OBJECT_GATEWAY), "token", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "GATEWAY_AUTH_TOKENS_FILE" in result.stderr
