"""The pieces of the layout by versions: key names, leases, conditional writes decided by a second
look, the longest a write may take, and the rule that places a version on a node."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from adapters.s3.keys import (
    after_every_version_of,
    claim_key,
    claim_of,
    id_prefix,
    version_key,
    version_of,
)
from application.leases import JobLease
from domain.conditions import EntityTags, Preconditions
from domain.errors import (
    JobInProgress,
    NodeUnavailable,
    ObjectNotFound,
    PreconditionFailed,
    UploadTooSlow,
)
from domain.leases import LeaseClaim, holder_of
from domain.node import DrainState
from domain.objects import VersionKind
from domain.versions import Version
from entrypoints.settings import Settings
from tests.fakes import FakeNodeDiscovery, make_node
from tests.unit.gateways import Gateway, body_of, v

V1 = Version(1_700_000_000_000_000_000, "0123456789abcdef", 7)


# -- keys --------------------------------------------------------------------------------------


def test_a_version_key_names_its_id_version_and_kind_and_parses_back() -> None:
    for kind in VersionKind:
        key = version_key("abc", V1, kind)
        assert key.startswith(id_prefix("abc"))
        assert version_of(key) == ("abc", V1, kind)


def test_keys_of_an_id_sort_as_its_versions_and_before_every_later_id() -> None:
    older, newer = (
        version_key("abc", V1, VersionKind.DATA),
        version_key("abc", Version(V1.timestamp_ns + 1, "0" * 16, 1), VersionKind.TOMBSTONE),
    )
    assert older < newer < after_every_version_of("abc") < version_key("abc0", V1, VersionKind.DATA)
    assert after_every_version_of("abc") < version_key("abcd", V1, VersionKind.DATA)
    assert version_key("ab", V1, VersionKind.DATA) < version_key("abc", V1, VersionKind.DATA)


@pytest.mark.parametrize(
    "key",
    ["abc", ".gateway/draining", "by-id/abc/notaversion.data", f"by-id/abc/{V1}.other", "by-id/x"],
)
def test_other_keys_are_not_versions(key: str) -> None:
    assert version_of(key) is None


def test_a_claim_key_carries_its_version_and_expiry() -> None:
    claim = LeaseClaim(V1, 1_800_000_000_000_000_000)
    assert claim_of(claim_key("admin", claim)) == claim


# -- leases ------------------------------------------------------------------------------------


def test_the_oldest_live_claim_holds_a_lease_and_renewals_count_by_their_latest_expiry() -> None:
    early, late = Version(1, "a" * 16, 1), Version(2, "b" * 16, 1)
    claims = [LeaseClaim(early, 100), LeaseClaim(late, 1000), LeaseClaim(early, 500)]
    assert holder_of(claims, now_ns=200) == LeaseClaim(early, 500)
    assert holder_of(claims, now_ns=600) == LeaseClaim(late, 1000)
    assert holder_of(claims, now_ns=2000) is None


def test_a_second_job_through_another_gateway_waits_for_the_first_to_let_go() -> None:
    first, second = Gateway(), Gateway()
    second.storage = first.storage  # one fleet
    second.fleet = first.fleet

    def lease(gateway: Gateway) -> JobLease:
        async def no_wait(_: float) -> None:
            await asyncio.sleep(0)

        return JobLease(
            gateway.fleet, first.storage, gateway.clock, settle_seconds=0.2, sleep=no_wait
        )

    async def scenario() -> None:
        async with lease(first).held("rebalance"):
            with pytest.raises(JobInProgress, match="another rebalance or drain"):
                async with lease(second).held("drain"):
                    pass
        async with lease(second).held("drain"):
            pass
        # Nothing left behind: every claim was taken back.
        assert not any(first.storage.claims_held.values())

    asyncio.run(scenario())


# -- conditional writes ------------------------------------------------------------------------

CREATE_ONLY = Preconditions(if_none_match=EntityTags(any=True))


def test_of_two_create_only_writes_racing_on_one_id_at_most_one_succeeds() -> None:
    gateway = Gateway()
    release = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"fir"
        await release.wait()
        yield b"st"

    async def scenario() -> list[object]:
        racing = asyncio.ensure_future(
            gateway.put("abc", slow(), None, None, preconditions=CREATE_ONLY)
        )
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(
            gateway.put("abc", body_of(b"second"), None, None, preconditions=CREATE_ONLY)
        )
        await asyncio.sleep(0.01)
        release.set()
        return await asyncio.gather(racing, second, return_exceptions=True)

    outcomes = asyncio.run(scenario())
    succeeded = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(succeeded) <= 1
    assert all(isinstance(o, PreconditionFailed) for o in outcomes if isinstance(o, BaseException))
    asyncio.run(gateway.settle())
    # Nothing pending is left, and what is stored is what succeeded (or nothing).
    versions = [s for (_, i), rs in gateway.storage.records.items() if i == "abc" for s in rs]
    assert all(record.kind is not VersionKind.PENDING for record in versions)


def test_a_conditional_write_never_serves_its_bytes_before_it_is_decided() -> None:
    gateway = Gateway()
    seen_while_pending: list[bytes | None] = []

    async def look(node: str, object_id: str) -> None:
        if gateway.storage.before_commit is None:
            return
        gateway.storage.before_commit = None
        try:
            seen_while_pending.append(await gateway.read(object_id))
        except Exception:
            seen_while_pending.append(None)

    gateway.storage.before_commit = look
    outcome = asyncio.run(
        gateway.put("abc", body_of(b"decided"), None, None, preconditions=CREATE_ONLY)
    )
    assert outcome.created
    assert seen_while_pending == [None]
    assert asyncio.run(gateway.read("abc")) == b"decided"


def test_a_delete_meanwhile_leaves_a_create_only_write_free_to_go_but_an_if_match_not() -> None:
    gateway = Gateway()
    asyncio.run(gateway.put("abc", body_of(b"one"), None, None))
    etag = gateway.storage.objects[(gateway.owner("abc"), "abc")].etag
    deleted = asyncio.Event()

    async def delete_first(node: str, object_id: str) -> None:
        if not deleted.is_set():
            deleted.set()
            await gateway.delete(object_id)

    gateway.storage.before_commit = delete_first
    if_match = Preconditions(if_match=EntityTags(frozenset({etag})))
    with pytest.raises(PreconditionFailed, match="another write"):
        asyncio.run(gateway.put("abc", body_of(b"two"), None, None, preconditions=if_match))
    gateway.storage.before_commit = None
    asyncio.run(gateway.put("abc", body_of(b"three"), None, None, preconditions=CREATE_ONLY))
    assert asyncio.run(gateway.read("abc")) == b"three"


# -- the longest a write may take ----------------------------------------------------------------


def test_an_upload_still_coming_after_the_longest_a_write_may_take_stores_nothing() -> None:
    gateway = Gateway(max_write_seconds=0.05)

    async def dawdling() -> AsyncIterator[bytes]:
        yield b"a" * 100_000
        await asyncio.sleep(0.1)
        yield b"b"

    with pytest.raises(UploadTooSlow):
        asyncio.run(gateway.put("abc", dawdling(), None, None))
    assert gateway.storage.node_of("abc") == []


def test_the_longest_write_must_be_shorter_than_the_tombstone_grace() -> None:
    with pytest.raises(ValueError, match="GATEWAY_MAX_WRITE_SECONDS"):
        Settings(max_write_seconds=7200, tombstone_grace_seconds=3600)
    assert Settings().max_write_seconds < Settings().tombstone_grace_seconds


# -- where a version may stay ------------------------------------------------------------------


def test_a_version_on_a_node_marked_meanwhile_is_copied_to_the_ids_replicas_before_the_ack() -> (
    None
):
    gateway = Gateway(node_count=3)
    owner = gateway.owner("abc")

    async def marked_meanwhile(node: str, _: str) -> None:
        # Another gateway's drain marks the owner while this write's body is coming.
        gateway.storage.drain_marks[node] = DrainState.DRAINING

    async def scenario() -> None:
        await gateway.fleet.refresh()
        gateway.fleet.marks.forget()
        gateway.storage.before_commit = marked_meanwhile
        outcome = await gateway.put("abc", body_of(b"x"), 1, None)
        gateway.storage.before_commit = None
        assert outcome.node.name != owner
        assert gateway.writes.counts.rehomed_writes == 1
        assert sorted(gateway.storage.node_of("abc")) == sorted([owner, outcome.node.name])

    asyncio.run(scenario())


def test_a_write_on_a_node_whose_marks_cannot_be_read_is_not_acknowledged() -> None:
    gateway = Gateway(node_count=3)
    owner = gateway.owner("abc")

    async def scenario() -> None:
        await gateway.fleet.refresh()
        gateway.fleet.marks.forget()
        gateway.storage.marks_unreadable.add(owner)
        with pytest.raises(NodeUnavailable, match="drain mark cannot be read"):
            await gateway.put("abc", body_of(b"x"), 1, None)

    asyncio.run(scenario())


def test_older_versions_on_a_node_go_once_a_newer_one_is_committed_there() -> None:
    gateway = Gateway()
    owner = gateway.owner("abc")
    gateway.storage.store(owner, "abc", b"old", version=v(10))
    gateway.storage.store(owner, "abc", b"older", version=v(5))

    async def scenario() -> None:
        assert await gateway.read("abc") == b"old"
        await gateway.settle()

    asyncio.run(scenario())
    assert [s.version for s in gateway.storage.versions_of(owner, "abc")] == [v(10)]


# -- a settled fleet -----------------------------------------------------------------------------


def test_a_new_empty_fleet_is_settled_at_once_and_a_miss_asks_the_owner_alone() -> None:
    gateway = Gateway(node_count=3)
    gateway.storage.report_fresh = True

    async def scenario() -> None:
        await gateway.fleet.refresh()
        for _ in range(20):  # the marks are written in the background
            await asyncio.sleep(0.01)
        assert (await gateway.fleet.membership()).settled
        gateway.storage.requests.clear()
        with pytest.raises(ObjectNotFound):
            await gateway.get("nothing")
        assert gateway.storage.requests == [f"LIST {gateway.owner('nothing')} nothing"]
        outcome = await gateway.put("new", body_of(b"x"), 1, None)
        assert outcome.created
        assert [r for r in gateway.storage.requests if r.startswith("LIST")][-1:] == [
            f"LIST {gateway.owner('new')} new"
        ]

    asyncio.run(scenario())


def test_a_node_joining_unsettles_the_fleet_until_a_rebalance_settles_it_again() -> None:
    gateway = Gateway(node_count=3)
    newcomer = "node-9"
    names = [*gateway.names, newcomer]
    moving = next(f"id{i}" for i in range(500) if gateway.walk(f"id{i}", names)[0] == newcomer)

    async def scenario() -> None:
        await gateway.mark_settled()
        await gateway.put(moving, body_of(b"before"), None, None)
        gateway.discovery.nodes.append(make_node(newcomer))
        await gateway.fleet.refresh()
        for _ in range(20):
            await asyncio.sleep(0.01)
        membership = await gateway.fleet.membership()
        assert not membership.settled
        # Every mark of the old ring was taken away, so that no node brings it back.
        assert gateway.storage.rings == {}
        assert await gateway.read(moving) == b"before"  # found where it sat
        reporter = Recording()
        rebalance = gateway.rebalance(sleep=_no_sleep)
        assert (await rebalance.execute(reporter)).everything_in_place
        assert await rebalance.settle_ring(reporter)
        assert (await gateway.fleet.membership()).settled
        gateway.storage.requests.clear()
        assert await gateway.read(moving) == b"before"
        assert [r.split()[0] for r in gateway.storage.requests] == ["LIST", "GET"]

    asyncio.run(scenario())


def test_a_write_through_a_gateway_behind_the_fleet_lands_where_a_settled_read_looks() -> None:
    """Gateway A sees a node join and settles the fleet by the new ring; gateway B has not seen
    the node yet and writes to the ID's former owner. The node's ring mark tells B its view is
    behind: it asks discovery again and puts the version on the ID's replicas as they are now
    before it answers, so a read through A, which asks the new owner alone, finds it."""
    first = Gateway(node_count=3)
    behind = Gateway(
        storage=first.storage, discovery=FakeNodeDiscovery(nodes=list(first.discovery.nodes))
    )
    newcomer = "node-9"
    names = [*first.names, newcomer]
    moving = next(f"id{i}" for i in range(500) if first.walk(f"id{i}", names)[0] == newcomer)

    async def scenario() -> None:
        await behind.fleet.refresh()
        first.discovery.nodes.append(make_node(newcomer))
        await first.mark_settled()  # A: the new ring, settled
        assert (await first.fleet.membership()).settled
        behind.fleet.marks.forget()  # B's last look at the marks is too old to count
        await behind.put(moving, body_of(b"through B"), 9, None)
        assert first.storage.versions_of(newcomer, moving), "not on the ID's new owner"
        assert await first.read(moving) == b"through B"

    behind.discovery.nodes = first.discovery.nodes  # one Docker daemon: B learns when it asks
    asyncio.run(scenario())


class Recording:
    def __init__(self) -> None:
        self.rings: list[tuple[str, bool]] = []

    def surveyed(self, _: object) -> None: ...

    def planned_move(self, *_: object) -> None: ...

    def step(self, _: object) -> None: ...

    def finished(self, _: object) -> None: ...

    def ring(self, fingerprint: str, settled: bool) -> None:
        self.rings.append((fingerprint, settled))


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)
