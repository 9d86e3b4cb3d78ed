"""The use cases against in-memory fakes: one copy per ID, on its owner."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from domain.errors import (
    IncompleteBody,
    InvalidObjectId,
    NodeOverloaded,
    NodeUnavailable,
    NodeUnreachable,
    ObjectNotFound,
    RefusedByNode,
)
from domain.node import NodeState
from tests.fakes import make_node
from tests.unit.gateways import Gateway, body_of

__all__ = ["Gateway", "body_of"]


def test_put_then_get_returns_the_same_bytes_and_content_type() -> None:
    gateway = Gateway()

    async def scenario() -> None:
        outcome = await gateway.put("abc", body_of(b"hello ", b"world"), 11, "text/plain")
        assert outcome.created
        assert outcome.info.size == 11
        assert await gateway.read("abc") == b"hello world"
        assert (await gateway.get("abc")).stored.info.content_type == "text/plain"

    asyncio.run(scenario())


def test_a_second_put_overwrites_and_reports_an_existing_object() -> None:
    gateway = Gateway()

    async def scenario() -> None:
        await gateway.put("abc", body_of(b"old"), None, None)
        outcome = await gateway.put("abc", body_of(b"new"), None, None)
        assert not outcome.created
        assert await gateway.read("abc") == b"new"

    asyncio.run(scenario())


def test_an_object_is_stored_only_on_the_node_that_owns_its_id() -> None:
    gateway = Gateway()

    async def scenario() -> None:
        outcome = await gateway.put("abc", body_of(b"x"), 1, None)
        assert gateway.storage.node_of("abc") == [outcome.node.name]

    asyncio.run(scenario())


def test_ids_are_spread_over_every_node() -> None:
    gateway = Gateway(node_count=3)

    async def scenario() -> None:
        for i in range(60):
            await gateway.put(f"id{i}", body_of(b"x"), 1, None)

    asyncio.run(scenario())
    assert {name for name, _ in gateway.storage.objects} == {"node-0", "node-1", "node-2"}


def test_missing_content_type_defaults_to_octet_stream() -> None:
    gateway = Gateway()
    outcome = asyncio.run(gateway.put("abc", body_of(b"x"), 1, None))
    assert outcome.info.content_type == "application/octet-stream"


def test_get_of_an_unknown_id_is_not_found() -> None:
    with pytest.raises(ObjectNotFound):
        asyncio.run(Gateway().get("nothing"))


def test_an_invalid_id_is_refused_before_any_node_is_asked() -> None:
    gateway = Gateway()
    with pytest.raises(InvalidObjectId):
        asyncio.run(gateway.put("a-b", body_of(b"x"), 1, None))
    assert gateway.discovery.calls == 0


def test_a_put_to_a_stopped_owner_is_refused_and_written_nowhere() -> None:
    gateway = Gateway()

    async def scenario() -> None:
        owner = (await gateway.put("abc", body_of(b"v1"), None, None)).node
        gateway.discovery.nodes = [
            make_node(n.name, NodeState.DOWN) if n.name == owner.name else n
            for n in gateway.discovery.nodes
        ]
        await gateway.fleet.refresh()
        with pytest.raises(NodeUnavailable):
            await gateway.put("abc", body_of(b"v2"), None, None)
        with pytest.raises(NodeUnavailable):
            await gateway.get("abc")
        assert gateway.storage.node_of("abc") == [owner.name]

    asyncio.run(scenario())


def test_a_body_shorter_than_its_length_is_refused() -> None:
    with pytest.raises(IncompleteBody):
        asyncio.run(Gateway().put("abc", body_of(b"xy"), 3, None))


def test_repeated_connection_failures_make_the_node_fail_fast_without_being_asked() -> None:
    gateway = Gateway()

    async def scenario() -> None:
        node = (await gateway.put("abc", body_of(b"x"), 1, None)).node
        gateway.storage.unreachable_nodes = {node.name}
        for _ in range(2):
            with pytest.raises(NodeUnreachable):
                await gateway.get("abc")
        gateway.storage.unreachable_nodes = set()  # even a recovered node rests first
        with pytest.raises(NodeUnavailable, match="resting") as refused:
            await gateway.get("abc")
        assert not isinstance(refused.value, NodeUnreachable)
        assert refused.value.retry_after_seconds is not None

    asyncio.run(scenario())


def test_a_missing_object_does_not_count_against_its_node() -> None:
    gateway = Gateway()

    async def scenario() -> None:
        for _ in range(5):
            with pytest.raises(ObjectNotFound):
                await gateway.get("nothing")

    asyncio.run(scenario())
    assert all(not gateway.breakers.state(n.name).open for n in gateway.discovery.nodes)


def test_a_write_of_a_new_id_asks_the_owner_and_the_nodes_after_it_beside_the_upload() -> None:
    gateway = Gateway()
    gateway.storage.head_released = asyncio.Event()

    async def scenario() -> None:
        upload = asyncio.ensure_future(gateway.put("abc", body_of(b"a", b"b", b"c"), 3, None))
        for _ in range(20):
            await asyncio.sleep(0)
        # A small body went up whole while the lookup waits: it need not wait for it.
        owner = gateway.owner("abc")
        assert f"PUT {owner} abc" in gateway.storage.requests
        assert not upload.done()
        gateway.storage.head_released.set()
        outcome = await upload
        assert outcome.created
        # The owner had nothing, so the nodes that may hold the ID were asked too (a read would).
        listed = [r.split()[1] for r in gateway.storage.requests if r.startswith("LIST")]
        assert sorted(listed) == sorted(gateway.walk("abc")[:3])

    asyncio.run(scenario())


def test_a_write_is_a_new_version_beside_the_older_one_which_goes_once_it_is_committed() -> None:
    gateway = Gateway()

    async def scenario() -> None:
        first = await gateway.put("abc", body_of(b"one"), 3, None)
        second = await gateway.put("abc", body_of(b"two"), 3, None)
        assert second.info.version is not None
        assert first.info.version is not None
        assert second.info.version > first.info.version
        await gateway.settle()
        owner = gateway.owner("abc")
        versions = gateway.storage.versions_of(owner, "abc")
        assert [stored.version for stored in versions] == [second.info.version]
        assert await gateway.read("abc") == b"two"

    asyncio.run(scenario())


def test_a_node_at_its_cap_of_requests_waiting_for_it_refuses_at_once_without_resting() -> None:
    gateway = Gateway()

    async def scenario() -> None:
        node = (await gateway.put("abc", body_of(b"x"), 1, None)).node.name
        gateway.storage.head_released = asyncio.Event()
        waiting = [asyncio.ensure_future(gateway.head("abc")) for _ in range(4)]
        await asyncio.sleep(0.01)
        assert gateway.limits.in_flight(node) == 4
        with pytest.raises(NodeOverloaded, match="waiting for it") as refused:
            await gateway.head("abc")
        assert refused.value.retry_after_seconds is not None
        assert not gateway.breakers.state(node).open
        assert gateway.breakers.state(node).consecutive_failures == 0
        gateway.storage.head_released.set()
        await asyncio.gather(*waiting)
        assert gateway.limits.in_flight(node) == 0

    asyncio.run(scenario())


def test_an_open_download_holds_no_place_in_its_nodes_cap() -> None:
    gateway = Gateway()

    async def scenario() -> None:
        node = (await gateway.put("abc", body_of(b"x"), 1, None)).node.name
        # More downloads than the cap, each answered by the node and read at the client's pace.
        open_reads = [await gateway.get("abc") for _ in range(gateway.limits.max_per_node + 2)]
        assert gateway.limits.in_flight(node) == 0
        assert await gateway.read("abc") == b"x"
        for retrieved in open_reads:
            await retrieved.stored.close()

    asyncio.run(scenario())


def test_an_upload_takes_a_place_in_the_cap_only_once_its_body_has_ended() -> None:
    gateway = Gateway()
    client_paused = asyncio.Event()
    in_flight_seen: list[int] = []

    async def paused_body() -> AsyncIterator[bytes]:
        yield b"first"
        client_paused.set()
        await asyncio.sleep(0.01)
        yield b"second"

    async def at_commit(node_name: str, _: str) -> None:
        in_flight_seen.append(gateway.limits.in_flight(node_name))

    async def scenario() -> None:
        upload = asyncio.ensure_future(gateway.put("abc", paused_body(), None, None))
        await client_paused.wait()
        assert sum(gateway.limits.in_flight(n.name) for n in gateway.discovery.nodes) == 0
        gateway.storage.before_commit = at_commit
        await upload

    asyncio.run(scenario())
    assert in_flight_seen == [1]


def test_a_slot_is_given_back_when_the_node_fails() -> None:
    gateway = Gateway()

    async def scenario() -> None:
        node = (await gateway.put("abc", body_of(b"x"), 1, None)).node
        gateway.storage.unreachable_nodes = {node.name}
        with pytest.raises(NodeUnreachable):
            await gateway.get("abc")
        with pytest.raises(NodeUnreachable):
            await gateway.put("abc", body_of(b"y"), 1, None)
        assert gateway.limits.in_flight(node.name) == 0

    asyncio.run(scenario())


def test_a_request_the_node_refuses_as_malformed_never_counts_against_the_node() -> None:
    gateway = Gateway()
    gateway.storage.refuse_writes_with = RefusedByNode("the storage node refused the request")

    async def scenario() -> None:
        for _ in range(5):
            with pytest.raises(RefusedByNode):
                await gateway.put("abc", body_of(b"x"), 1, None)

    asyncio.run(scenario())
    assert all(
        gateway.breakers.state(n.name).consecutive_failures == 0 for n in gateway.discovery.nodes
    )
