"""The token, sign and signing-key commands on an in-memory store."""

import argparse
import io
import urllib.parse

import pytest

from application.auth import Credentials
from domain.auth import Need, Scope, Verifier
from entrypoints.cli import (
    EXIT_NOT_DONE,
    EXIT_OK,
    EXIT_USAGE,
    parse_arguments,
    parse_duration,
    run_credentials,
)
from tests.fakes import FakeClock, InMemoryCredentialStore


@pytest.fixture
def store() -> InMemoryCredentialStore:
    return InMemoryCredentialStore()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def run(store: InMemoryCredentialStore, clock: FakeClock, *argv: str) -> tuple[int, list[str]]:
    out = io.StringIO()
    status = run_credentials(parse_arguments(argv), Credentials(store, clock), out=out)
    return status, out.getvalue().splitlines()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("30s", 30),
        ("15m", 900),
        ("1h", 3600),
        ("1h30m", 5400),
        ("7d", 604800),
        ("2w", 1209600),
        (" 1H ", 3600),
    ],
)
def test_a_duration_reads_as_people_write_it(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "soon", "1.5h", "-1h", "h", "1h 30m", "1y"])
def test_a_duration_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_token_create_prints_the_token_as_its_last_line(
    store: InMemoryCredentialStore, clock: FakeClock
) -> None:
    status, lines = run(
        store,
        clock,
        "token",
        "create",
        "--scope",
        "read",
        "--scope",
        "list",
        "--prefix",
        "img",
        "--expires",
        "1h",
        "--note",
        "thumbnails",
    )
    assert status == EXIT_OK
    token = lines[-1]
    (record,) = store.keyring.tokens
    assert record.scopes == {Scope.READ, Scope.LIST}
    assert record.prefix == "img"
    assert record.expires_at == int(clock.now) + 3600
    assert record.note == "thumbnails"
    assert all(token not in line for line in lines[:-1])
    Verifier(store.keyring).bearer(f"Bearer {token}".encode(), Need(Scope.READ, "img1"), clock.now)


def test_token_list_shows_ids_scopes_and_expiry_and_never_a_secret(
    store: InMemoryCredentialStore, clock: FakeClock
) -> None:
    _, created = run(store, clock, "token", "create", "--scope", "metrics", "--note", "prometheus")
    status, lines = run(store, clock, "token", "list")
    assert status == EXIT_OK
    (record,) = store.keyring.tokens
    (line,) = lines
    assert record.token_id in line
    assert "metrics" in line
    assert "prometheus" in line
    assert "no expiry" in line
    assert created[-1] not in line
    assert record.digest.hex() not in line


def test_token_revoke_forgets_the_token_and_says_so_when_there_is_none(
    store: InMemoryCredentialStore, clock: FakeClock
) -> None:
    run(store, clock, "token", "create", "--scope", "read")
    (record,) = store.keyring.tokens
    assert run(store, clock, "token", "revoke", record.token_id)[0] == EXIT_OK
    assert store.keyring.tokens == ()
    status, lines = run(store, clock, "token", "revoke", record.token_id)
    assert status == EXIT_NOT_DONE
    assert "no token" in lines[-1]


def test_sign_prints_the_url_as_its_last_line(
    store: InMemoryCredentialStore, clock: FakeClock
) -> None:
    status, lines = run(store, clock, "sign", "get", "abc", "--expires", "15m")
    assert status == EXIT_OK
    assert "made the first signing key" in lines[0]
    path, _, query = lines[-1].partition("?")
    assert path == "/object/abc"
    fields = urllib.parse.parse_qs(query)
    assert fields["expires"] == [str(int(clock.now) + 900)]
    Verifier(store.keyring).signed("GET", path, fields, clock.now)


def test_sign_refuses_an_invalid_id_without_touching_the_store(
    store: InMemoryCredentialStore, clock: FakeClock
) -> None:
    status, lines = run(store, clock, "sign", "GET", "not-valid")
    assert status == EXIT_USAGE
    assert "object ID" in lines[-1]
    assert store.revision == 0


def test_token_create_refuses_a_prefix_no_id_can_have(
    store: InMemoryCredentialStore, clock: FakeClock
) -> None:
    status, _ = run(store, clock, "token", "create", "--scope", "read", "--prefix", "a-b")
    assert status == EXIT_USAGE
    assert store.keyring.tokens == ()


def test_signing_key_rotate_says_which_key_signs_and_which_was_retired(
    store: InMemoryCredentialStore, clock: FakeClock
) -> None:
    _, first = run(store, clock, "signing-key", "rotate")
    assert "no key retired" in first[-1]
    oldest = store.keyring.signing_keys[0].key_id
    run(store, clock, "signing-key", "rotate")
    _, third = run(store, clock, "signing-key", "rotate")
    assert f"retired signing key {oldest}" in third[-1]
    _, listed = run(store, clock, "signing-key", "list")
    assert listed[-1] == f"signing key {oldest}: retired"
    assert "signs and verifies" in listed[1]
