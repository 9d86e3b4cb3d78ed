"""Listing the fleet: every node's listing merged, one entry per ID, a page at a time."""

import asyncio

import pytest
from litestar.testing import TestClient

from application.listing import ListObjects
from domain.errors import InvalidObjectId, InvalidRequest, NodeUnavailable
from domain.listing import ListingPage, ListingQuery
from domain.node import DrainState, NodeState
from domain.versions import Version
from tests.fakes import make_node
from tests.unit.gateways import Gateway, body_of


def listing_of(gateway: Gateway) -> ListObjects:
    return ListObjects(gateway.fleet, gateway.storage)


def page(gateway: Gateway, **query: object) -> ListingPage:
    return asyncio.run(listing_of(gateway).page(ListingQuery(**query)))  # type: ignore[arg-type]


def ids_of(result: ListingPage) -> list[str]:
    return [entry.object_id for entry in result.objects]


def store_through(gateway: Gateway, *object_ids: str) -> None:
    async def scenario() -> None:
        for object_id in object_ids:
            data = object_id.encode()
            await gateway.put(object_id, body_of(data), len(data), "text/plain")

    asyncio.run(scenario())


def test_ids_from_every_node_come_in_order_a_page_at_a_time() -> None:
    gateway = Gateway(node_count=3)
    stored = [f"obj{i:03d}" for i in range(25)]
    store_through(gateway, *reversed(stored))
    assert len({node for (node, _) in gateway.storage.objects}) == 3

    first = page(gateway, limit=10)
    assert ids_of(first) == stored[:10]
    assert first.next == stored[9]
    second = page(gateway, after=first.next, limit=10)
    assert ids_of(second) == stored[10:20]
    last = page(gateway, after=second.next, limit=10)
    assert ids_of(last) == stored[20:]
    assert last.next is None
    entry = first.objects[0]
    assert (entry.size, entry.last_modified is not None) == (len(b"obj000"), True)


def test_a_page_that_ends_exactly_with_the_last_id_says_there_is_no_next() -> None:
    gateway = Gateway(node_count=2)
    store_through(gateway, "a", "b")
    result = page(gateway, limit=2)
    assert ids_of(result) == ["a", "b"]
    assert result.next is None


def test_only_ids_under_the_prefix_are_listed_and_the_drain_mark_never() -> None:
    gateway = Gateway(node_count=3)
    store_through(gateway, "photo1", "photo2", "doc1", "photos9", "zeta")
    gateway.storage.drain_marks["node-0"] = DrainState.DRAINING
    assert ids_of(page(gateway, prefix="photo")) == ["photo1", "photo2", "photos9"]
    assert ids_of(page(gateway)) == ["doc1", "photo1", "photo2", "photos9", "zeta"]


def test_an_id_with_several_copies_is_listed_once_as_its_newest_copy_has_it() -> None:
    gateway = Gateway(node_count=3)
    older, newer = Version(1, "a" * 16, 1), Version(2, "a" * 16, 1)
    gateway.storage.store("node-0", "abc", b"newest bytes", version=newer)
    gateway.storage.store("node-1", "abc", b"old", version=older)
    gateway.storage.store("node-2", "abc", b"newest bytes", version=newer)

    (entry,) = page(gateway).objects
    assert entry.object_id == "abc"
    assert entry.size == len(b"newest bytes")


def test_a_listing_asks_no_node_for_more_than_its_walk() -> None:
    gateway = Gateway(node_count=3)
    for node in ("node-0", "node-1", "node-2"):
        gateway.storage.store(
            node, "abc", b"same bytes everywhere", version=Version(1, "a" * 16, 1)
        )
    gateway.storage.store("node-1", "old", b"under the old layout")
    gateway.storage.requests.clear()
    assert ids_of(page(gateway)) == ["abc", "old"]
    assert gateway.storage.requests == []


def test_a_deleted_id_is_not_listed_even_beside_an_older_live_copy() -> None:
    gateway = Gateway(node_count=3)
    store_through(gateway, "gone", "kept")
    asyncio.run(gateway.delete("gone"))
    holders = gateway.storage.node_of("gone")
    stale_holder = next(n.name for n in gateway.discovery.nodes if n.name not in holders)
    gateway.storage.store(stale_holder, "gone", b"an older copy", version=Version(1, "b" * 16, 1))
    assert ids_of(page(gateway)) == ["kept"]


def test_an_empty_object_is_listed_a_tombstone_being_known_by_its_kind() -> None:
    gateway = Gateway(node_count=1)
    asyncio.run(gateway.put("empty", body_of(b""), 0, "text/plain"))
    assert ids_of(page(gateway)) == ["empty"]


def test_a_member_that_is_down_or_whose_listing_fails_is_named_in_a_503() -> None:
    gateway = Gateway(node_count=3)
    store_through(gateway, *(f"id{i}" for i in range(20)))
    gateway.storage.unlistable_after = {"node-1"}
    with pytest.raises(NodeUnavailable) as failed:
        page(gateway)
    assert failed.value.node_name == "node-1"

    gateway.storage.unlistable_after = set()
    gateway.discovery.nodes = [
        make_node("node-0"),
        make_node("node-1"),
        make_node("node-2", NodeState.DOWN),
    ]
    asyncio.run(gateway.fleet.refresh())
    with pytest.raises(NodeUnavailable) as down:
        page(gateway)
    assert down.value.node_name == "node-2"


def test_a_drained_node_holds_nothing_and_is_not_asked_even_when_stopped() -> None:
    gateway = Gateway(node_count=3)
    store_through(gateway, "kept1", "kept2")
    gateway.storage.drain_marks["node-2"] = DrainState.DRAINED
    # What a drain did: everything moved off node-2.
    for object_id in ("kept1", "kept2"):
        for holder in gateway.storage.node_of(object_id):
            records = gateway.storage.records.pop((holder, object_id))
            gateway.storage.records[("node-0", object_id)] = records
    asyncio.run(gateway.fleet.refresh_drain_marks())
    gateway.discovery.nodes = [
        make_node("node-0"),
        make_node("node-1"),
        make_node("node-2", NodeState.DOWN),
    ]
    asyncio.run(gateway.fleet.refresh())
    gateway.storage.listings.clear()
    assert ids_of(page(gateway)) == ["kept1", "kept2"]
    assert sorted(gateway.storage.listings) == ["node-0", "node-1"]


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"limit": 0}, InvalidRequest),
        ({"limit": 1001}, InvalidRequest),
        ({"prefix": "a-b"}, InvalidRequest),
        ({"prefix": "a" * 33}, InvalidRequest),
        ({"after": "not/an/id"}, InvalidObjectId),
    ],
)
def test_a_query_out_of_bounds_is_refused(query: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        ListingQuery(**query)  # type: ignore[arg-type]


def test_the_http_route_answers_json_pages_and_400_for_bad_parameters(client: TestClient) -> None:
    for object_id in ("b", "a", "c"):
        assert client.put(f"/object/{object_id}", content=object_id.encode()).status_code == 201
    first = client.get("/objects", params={"limit": 2})
    assert first.status_code == 200
    body = first.json()
    assert [entry["id"] for entry in body["objects"]] == ["a", "b"]
    assert body["next"] == "b"
    assert set(body["objects"][0]) == {"id", "size", "etag", "last_modified"}
    rest = client.get("/objects", params={"after": body["next"]}).json()
    assert [entry["id"] for entry in rest["objects"]] == ["c"]
    assert rest["next"] is None
    for bad in ({"limit": "0"}, {"limit": "many"}, {"prefix": "a-b"}, {"after": "x" * 33}):
        refused = client.get("/objects", params=bad)
        assert refused.status_code == 400, bad
        assert set(refused.json()) == {"error", "detail"}
