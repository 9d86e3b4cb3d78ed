"""Tokens and signed URLs on their own: what the Verifier allows, and what the commands change."""

import asyncio
import hashlib
import urllib.parse

import pytest

from application.auth import AccessControl, Credentials
from domain.auth import Keyring, Need, Scope, Verifier, issue_token, new_signing_key, sign_url
from domain.errors import (
    CredentialsUnreadable,
    ExpiredSignature,
    ExpiredToken,
    InvalidSignature,
    InvalidToken,
    PrefixNotAllowed,
    RevokedKey,
    ScopeNotAllowed,
)
from domain.object_id import ObjectId
from tests.fakes import FakeClock, InMemoryCredentialStore

NOW = 1_800_000_000.0


def bearer(token: str) -> bytes:
    return f"Bearer {token}".encode()


def query_of(path_and_query: str) -> tuple[str, dict[str, list[str]]]:
    path, _, query = path_and_query.partition("?")
    return path, urllib.parse.parse_qs(query)


@pytest.fixture
def store() -> InMemoryCredentialStore:
    return InMemoryCredentialStore()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def credentials(store: InMemoryCredentialStore, clock: FakeClock) -> Credentials:
    return Credentials(store, clock)


def verifier_of(store: InMemoryCredentialStore) -> Verifier:
    return Verifier(store.load())


def test_a_token_is_kept_only_as_its_sha256(
    credentials: Credentials, store: InMemoryCredentialStore
) -> None:
    issued = credentials.create_token([Scope.READ])
    (record,) = store.keyring.tokens
    assert record.digest == hashlib.sha256(issued.token.encode()).digest()
    assert issued.token.startswith(f"ogw_{record.token_id}_")
    assert issued.token not in repr(store.keyring)
    assert record.digest.hex() not in repr(store.keyring)


def test_two_tokens_never_share_an_id_or_a_secret(credentials: Credentials) -> None:
    tokens = [credentials.create_token([Scope.READ]) for _ in range(50)]
    assert len({issued.record.token_id for issued in tokens}) == 50
    assert len({issued.token for issued in tokens}) == 50


def test_a_token_is_allowed_what_its_scopes_say(
    credentials: Credentials, store: InMemoryCredentialStore
) -> None:
    issued = credentials.create_token([Scope.READ, Scope.WRITE])
    verifier = verifier_of(store)
    principal = verifier.bearer(bearer(issued.token), Need(Scope.READ, "abc"), NOW)
    assert str(principal) == f"token {issued.record.token_id}"
    verifier.bearer(bearer(issued.token), Need(Scope.WRITE, "abc"), NOW)
    verifier.bearer(bearer(issued.token), Need(None), NOW)
    with pytest.raises(ScopeNotAllowed, match="needs delete"):
        verifier.bearer(bearer(issued.token), Need(Scope.DELETE, "abc"), NOW)


def test_admin_covers_metrics_and_no_object(
    credentials: Credentials, store: InMemoryCredentialStore
) -> None:
    issued = credentials.create_token([Scope.ADMIN])
    verifier = verifier_of(store)
    verifier.bearer(bearer(issued.token), Need(Scope.METRICS), NOW)
    verifier.bearer(bearer(issued.token), Need(Scope.ADMIN), NOW)
    for scope in (Scope.READ, Scope.WRITE, Scope.DELETE, Scope.LIST):
        with pytest.raises(ScopeNotAllowed):
            verifier.bearer(bearer(issued.token), Need(scope, "abc"), NOW)


def test_metrics_does_not_cover_admin(
    credentials: Credentials, store: InMemoryCredentialStore
) -> None:
    issued = credentials.create_token([Scope.METRICS])
    with pytest.raises(ScopeNotAllowed):
        verifier_of(store).bearer(bearer(issued.token), Need(Scope.ADMIN), NOW)


def test_a_token_with_a_prefix_touches_only_ids_that_start_with_it(
    credentials: Credentials, store: InMemoryCredentialStore
) -> None:
    issued = credentials.create_token([Scope.READ, Scope.LIST], prefix="img")
    verifier = verifier_of(store)
    verifier.bearer(bearer(issued.token), Need(Scope.READ, "img1"), NOW)
    verifier.bearer(bearer(issued.token), Need(Scope.LIST, "img"), NOW)
    for name in ("doc1", "im", "", "IMG1"):
        with pytest.raises(PrefixNotAllowed):
            verifier.bearer(bearer(issued.token), Need(Scope.READ, name), NOW)


def test_a_token_is_refused_from_its_expiry_on(
    credentials: Credentials, store: InMemoryCredentialStore
) -> None:
    issued = credentials.create_token([Scope.READ], expires_in_seconds=3600)
    verifier = verifier_of(store)
    verifier.bearer(bearer(issued.token), Need(Scope.READ, "a"), NOW + 3599)
    with pytest.raises(ExpiredToken, match="expired at"):
        verifier.bearer(bearer(issued.token), Need(Scope.READ, "a"), NOW + 3600)


def test_a_revoked_token_is_an_invalid_token(
    credentials: Credentials, store: InMemoryCredentialStore
) -> None:
    issued = credentials.create_token([Scope.READ])
    kept = credentials.create_token([Scope.READ])
    revoked = credentials.revoke_token(issued.record.token_id)
    assert revoked == issued.record
    assert credentials.revoke_token(issued.record.token_id) is None
    verifier = verifier_of(store)
    with pytest.raises(InvalidToken):
        verifier.bearer(bearer(issued.token), Need(Scope.READ, "a"), NOW)
    verifier.bearer(bearer(kept.token), Need(Scope.READ, "a"), NOW)
    # Nothing of it is kept: not even its hash.
    assert [record.token_id for record in credentials.tokens()] == [kept.record.token_id]


@pytest.mark.parametrize(
    "authorization",
    [
        b"",
        b"Bearer",
        b"Bearer ",
        b"Basic dXNlcjpwYXNz",
        b"Token abc",
        b"Bearer a b",
        b"Bearer \xff\xfe",
        b"Bearer " + b"a" * 10_000,
        b"Bearer ogw_",
        b"Bearer ogw_zzzzzzzz_secret",
        b"Bearer ogw_\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9_x",
    ],
)
def test_a_malformed_or_unknown_authorization_is_an_invalid_token(
    credentials: Credentials, store: InMemoryCredentialStore, authorization: bytes
) -> None:
    credentials.create_token([Scope.READ])
    with pytest.raises(InvalidToken) as raised:
        verifier_of(store).bearer(authorization, Need(Scope.READ, "a"), NOW)
    assert authorization.decode("latin-1")[7:] not in raised.value.detail or len(authorization) < 8


def test_a_token_with_its_secret_changed_is_an_invalid_token(
    credentials: Credentials, store: InMemoryCredentialStore
) -> None:
    issued = credentials.create_token([Scope.READ])
    nearly = issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B")
    with pytest.raises(InvalidToken):
        verifier_of(store).bearer(bearer(nearly), Need(Scope.READ, "a"), NOW)


def test_the_bearer_scheme_is_case_insensitive(
    credentials: Credentials, store: InMemoryCredentialStore
) -> None:
    issued = credentials.create_token([Scope.READ])
    verifier_of(store).bearer(f"bearer  {issued.token} ".encode(), Need(Scope.READ, "a"), NOW)


def test_a_signed_url_allows_its_method_on_its_path_until_it_expires(
    credentials: Credentials, store: InMemoryCredentialStore
) -> None:
    signed, made = credentials.sign("GET", ObjectId("abc"), 900)
    assert made is not None
    assert signed.key_id == made.key_id
    path, query = query_of(signed.path_and_query)
    assert path == "/object/abc"
    verifier = verifier_of(store)
    assert str(verifier.signed("GET", path, query, NOW + 899)) == f"signed {made.key_id}"
    with pytest.raises(ExpiredSignature, match="expired at"):
        verifier.signed("GET", path, query, NOW + 900)


def test_a_get_url_serves_head_and_nothing_else(
    credentials: Credentials, store: InMemoryCredentialStore
) -> None:
    signed, _ = credentials.sign("GET", ObjectId("abc"), 900)
    path, query = query_of(signed.path_and_query)
    verifier = verifier_of(store)
    verifier.signed("HEAD", path, query, NOW)
    for method in ("PUT", "DELETE", "OPTIONS", "POST"):
        with pytest.raises(InvalidSignature):
            verifier.signed(method, path, query, NOW)


def test_a_put_url_does_not_serve_get(
    credentials: Credentials, store: InMemoryCredentialStore
) -> None:
    signed, _ = credentials.sign("PUT", ObjectId("abc"), 900)
    path, query = query_of(signed.path_and_query)
    verifier = verifier_of(store)
    verifier.signed("PUT", path, query, NOW)
    with pytest.raises(InvalidSignature):
        verifier.signed("GET", path, query, NOW)


def tampered(query: dict[str, list[str]], **changes: str) -> dict[str, list[str]]:
    return {**query, **{name: [value] for name, value in changes.items()}}


def test_a_changed_path_expiry_or_signature_is_an_invalid_signature(
    credentials: Credentials, store: InMemoryCredentialStore
) -> None:
    signed, _ = credentials.sign("GET", ObjectId("abc"), 900)
    _, query = query_of(signed.path_and_query)
    verifier = verifier_of(store)
    expires = int(query["expires"][0])
    signature = query["signature"][0]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    cases = [
        ("/object/abd", query),
        ("/object/abc", tampered(query, expires=str(expires + 3600))),
        ("/object/abc", tampered(query, signature=flipped)),
        ("/object/abc", tampered(query, signature=signature.upper())),
        ("/object/abc", tampered(query, signature="")),
        ("/object/abc", tampered(query, signature="é" * 64)),
        ("/object/abc", tampered(query, key="00000000")),
        ("/object/abc", tampered(query, expires="-1")),
        ("/object/abc", tampered(query, expires="9" * 5000)),
        ("/object/abc", {**query, "expires": [str(expires), str(expires)]}),
        ("/object/abc", {name: value for name, value in query.items() if name != "key"}),
    ]
    for request_path, request_query in cases:
        with pytest.raises(InvalidSignature):
            verifier.signed("GET", request_path, request_query, NOW)


def test_an_expired_url_with_a_later_expiry_written_in_is_invalid_not_expired(
    credentials: Credentials, store: InMemoryCredentialStore
) -> None:
    signed, _ = credentials.sign("GET", ObjectId("abc"), 60)
    path, query = query_of(signed.path_and_query)
    later = tampered(query, expires=str(int(query["expires"][0]) + 86400))
    with pytest.raises(InvalidSignature):
        verifier_of(store).signed("GET", path, later, NOW + 120)


def test_a_rotation_keeps_the_previous_keys_urls_and_retires_the_one_before(
    credentials: Credentials, store: InMemoryCredentialStore
) -> None:
    first, made = credentials.sign("GET", ObjectId("abc"), 86400)
    assert made is not None
    rotation = credentials.rotate_signing_key()
    assert rotation.retired is None
    second, _ = credentials.sign("GET", ObjectId("abc"), 86400)
    assert second.key_id == rotation.added.key_id
    verifier = verifier_of(store)
    verifier.signed("GET", *query_of(first.path_and_query), NOW)
    verifier.signed("GET", *query_of(second.path_and_query), NOW)

    again = credentials.rotate_signing_key()
    assert again.retired is not None
    assert again.retired.key_id == made.key_id
    verifier = verifier_of(store)
    with pytest.raises(RevokedKey, match=made.key_id):
        verifier.signed("GET", *query_of(first.path_and_query), NOW)
    verifier.signed("GET", *query_of(second.path_and_query), NOW)
    assert [key.key_id for key in store.keyring.signing_keys] == [
        rotation.added.key_id,
        again.added.key_id,
    ]


def test_the_first_signature_makes_a_key_and_later_ones_reuse_it(
    credentials: Credentials, store: InMemoryCredentialStore
) -> None:
    _, made = credentials.sign("GET", ObjectId("abc"), 60)
    _, again = credentials.sign("DELETE", ObjectId("abc"), 60)
    assert made is not None
    assert again is None
    assert len(store.keyring.signing_keys) == 1


def test_only_object_methods_can_be_signed(credentials: Credentials) -> None:
    with pytest.raises(ValueError, match="only GET, HEAD, PUT, DELETE"):
        credentials.sign("POST", ObjectId("abc"), 60)


def test_no_repr_shows_a_token_hash_or_signing_secret(
    credentials: Credentials, store: InMemoryCredentialStore
) -> None:
    issued = credentials.create_token([Scope.READ])
    credentials.sign("GET", ObjectId("abc"), 60)
    key = store.keyring.signing_keys[0]
    shown = repr(store.keyring) + repr(issued) + repr(Verifier(store.keyring)) + str(key)
    assert issued.token not in shown
    assert issued.record.digest.hex() not in shown
    assert repr(issued.record.digest) not in shown
    assert repr(key.secret) not in shown
    assert key.secret.hex() not in shown


def test_a_keyring_refuses_duplicate_ids_and_a_third_key() -> None:
    keyring = Keyring()
    issued = issue_token(keyring, [Scope.READ], now=NOW)
    with pytest.raises(ValueError, match="same ID"):
        Keyring(tokens=(issued.record, issued.record))
    keys = tuple(new_signing_key(keyring, now=NOW) for _ in range(3))
    with pytest.raises(ValueError, match="more than 2"):
        Keyring(signing_keys=keys)


def test_a_url_signed_by_hand_with_the_same_key_verifies() -> None:
    keyring = Keyring()
    key = new_signing_key(keyring, now=NOW)
    keyring, _ = keyring.rotated(key)
    signed = sign_url(key, "DELETE", "/object/abc", int(NOW) + 10)
    Verifier(keyring).signed("DELETE", *query_of(signed.path_and_query), NOW)


# The gateway's side: the keyring in force, and following the store's changes.


def test_access_control_uses_a_new_token_once_it_has_looked_at_the_store(
    credentials: Credentials, store: InMemoryCredentialStore, clock: FakeClock
) -> None:
    access = AccessControl(store, clock, reload_seconds=1)
    issued = credentials.create_token([Scope.READ])
    with pytest.raises(InvalidToken):
        access.check_bearer(bearer(issued.token), Need(Scope.READ, "a"))
    assert access.refresh()
    access.check_bearer(bearer(issued.token), Need(Scope.READ, "a"))
    assert not access.refresh()  # nothing changed: nothing read


def test_access_control_reads_the_store_only_when_its_stamp_changed(
    credentials: Credentials, store: InMemoryCredentialStore, clock: FakeClock
) -> None:
    access = AccessControl(store, clock, reload_seconds=1)
    loads = store.loads
    for _ in range(10):
        access.refresh()
    assert store.loads == loads


def test_an_unreadable_store_keeps_the_keyring_in_force(
    credentials: Credentials,
    store: InMemoryCredentialStore,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    issued = credentials.create_token([Scope.READ])
    access = AccessControl(store, clock, reload_seconds=1)
    store.unreadable = CredentialsUnreadable("the tokens file /x is not valid: not JSON")
    store.revision += 1
    assert not access.refresh()
    assert not access.refresh()
    access.check_bearer(bearer(issued.token), Need(Scope.READ, "a"))
    assert len([r for r in caplog.records if "stay in force" in r.getMessage()]) == 1


def test_an_unreadable_store_at_start_up_stops_the_gateway(
    store: InMemoryCredentialStore, clock: FakeClock
) -> None:
    store.unreadable = CredentialsUnreadable("the tokens file /x is not valid: not JSON")
    with pytest.raises(CredentialsUnreadable):
        AccessControl(store, clock, reload_seconds=1)


def test_following_the_store_picks_a_change_up_within_the_interval(
    credentials: Credentials, store: InMemoryCredentialStore, clock: FakeClock
) -> None:
    access = AccessControl(store, clock, reload_seconds=0.02)
    issued = credentials.create_token([Scope.READ])

    async def scenario() -> None:
        following = asyncio.create_task(access.follow())
        try:
            async with asyncio.timeout(2):
                while True:
                    try:
                        access.check_bearer(bearer(issued.token), Need(Scope.READ, "a"))
                        return
                    except InvalidToken:
                        await asyncio.sleep(0.01)
        finally:
            following.cancel()
            with pytest.raises(asyncio.CancelledError):
                await following

    asyncio.run(scenario())
