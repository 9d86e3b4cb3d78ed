"""What the edge asks of clients: one valid Host, and a minimum pace for bodies both ways."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from domain.errors import BodyTooSlow, IncompleteBody
from entrypoints.edge import host_problem
from entrypoints.http.asgi import MinDataRate, request_body
from entrypoints.http.errors import status_for


@pytest.mark.parametrize(
    ("headers", "version", "refused"),
    [
        ([(b"host", b"gateway:3000")], "1.1", False),
        ([(b"host", b"[::1]:3000")], "1.1", False),
        ([(b"host", b"")], "1.1", False),
        ([], "1.0", False),
        ([], "1.1", True),
        ([(b"host", b"a"), (b"host", b"a")], "1.1", True),
        ([(b"host", b"a"), (b"host", b"b")], "1.0", True),
        ([(b"host", b"gate way")], "1.1", True),
        ([(b"host", b"gateway/evil")], "1.1", True),
    ],
)
def test_a_request_needs_exactly_one_valid_host_on_http_1_1_and_at_most_one_on_1_0(
    headers: list[tuple[bytes, bytes]], version: str, refused: bool
) -> None:
    assert (host_problem(headers, version) is not None) is refused


def paced_receive(pieces: list[tuple[float, bytes]]) -> object:
    """A client that sends each piece after its delay; the last piece ends the body."""
    remaining: Iterator[tuple[float, bytes]] = iter(pieces)
    count = len(pieces)
    sent = 0

    async def receive() -> dict[str, object]:
        nonlocal sent
        delay, piece = next(remaining)
        await asyncio.sleep(delay)
        sent += 1
        return {"type": "http.request", "body": piece, "more_body": sent < count}

    return receive


async def read_all(receive: object, rate: MinDataRate | None, pause: float = 0.0) -> bytes:
    body = b""
    async for chunk in request_body(receive, 5, None, rate):  # type: ignore[arg-type]
        body += chunk
        await asyncio.sleep(pause)  # the gateway's own work (a slow node) between reads
    return body


def test_an_upload_slower_than_the_minimum_after_its_grace_is_body_too_slow() -> None:
    # One byte every 20 ms is 50 bytes/s; the minimum is 1,000 after a grace of 0.1 s.
    receive = paced_receive([(0.02, b"x")] * 100)
    rate = MinDataRate(bytes_per_second=1000, grace_seconds=0.1)

    with pytest.raises(BodyTooSlow) as failure:
        asyncio.run(read_all(receive, rate))

    assert isinstance(failure.value, IncompleteBody)
    assert status_for(failure.value) == 408
    assert "minimum is 1000 bytes/s" in failure.value.detail


def test_a_client_that_falls_silent_is_cut_when_its_average_falls_under_the_minimum() -> None:
    # 2,000 bytes at once earn two seconds at 1,000 bytes/s; then silence for far longer.
    receive = paced_receive([(0, b"x" * 2000), (30, b"never")])
    rate = MinDataRate(bytes_per_second=1000, grace_seconds=0.1)

    async def timed() -> float:
        started = asyncio.get_running_loop().time()
        with pytest.raises(BodyTooSlow):
            await read_all(receive, rate)
        return asyncio.get_running_loop().time() - started

    assert 1.9 <= asyncio.run(timed()) <= 2.5


def test_an_upload_at_the_minimum_rate_is_read_whole() -> None:
    receive = paced_receive([(0.01, b"y" * 100)] * 20)  # 10,000 bytes/s
    rate = MinDataRate(bytes_per_second=1000, grace_seconds=0.05)

    assert asyncio.run(read_all(receive, rate)) == b"y" * 2000


def test_time_the_gateway_spends_on_its_own_work_is_not_held_against_the_client() -> None:
    # The client sends at once each time it is asked; the gateway takes 50 ms between reads.
    receive = paced_receive([(0, b"z")] * 10)
    rate = MinDataRate(bytes_per_second=1000, grace_seconds=0.01)

    assert asyncio.run(read_all(receive, rate, pause=0.05)) == b"z" * 10


def test_no_minimum_rate_when_it_is_set_to_zero() -> None:
    assert MinDataRate.of(0, 5) is None
    assert MinDataRate.of(240, 5) == MinDataRate(240, 5)
