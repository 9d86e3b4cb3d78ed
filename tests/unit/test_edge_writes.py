"""A response's head and a small body leave in one send; nothing held is ever lost or reordered."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from entrypoints.edge import OneSendPerResponse


class RecordingTransport(asyncio.Transport):
    """An in-memory transport: each call that would be one send is one entry of ``sends``."""

    def __init__(self) -> None:
        super().__init__()
        self.sends: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: Any) -> None:
        self.sends.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.sends.append(b"".join(list_of_data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000)}.get(name, default)


async def next_turn() -> None:
    await asyncio.sleep(0)


def wrapped() -> tuple[OneSendPerResponse, RecordingTransport]:
    transport = RecordingTransport()
    return OneSendPerResponse(transport, asyncio.get_running_loop()), transport


def test_a_head_and_a_small_body_are_one_send() -> None:
    async def scenario() -> None:
        joined, transport = wrapped()

        joined.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        joined.write(b"hello")
        await next_turn()

        assert transport.sends == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"]

    asyncio.run(scenario())


def test_a_head_alone_still_goes_out_within_the_turn() -> None:
    async def scenario() -> None:
        joined, transport = wrapped()

        joined.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        assert joined.get_write_buffer_size() > 0
        await next_turn()

        assert transport.sends == [b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]
        assert joined.get_write_buffer_size() == 0

    asyncio.run(scenario())


def test_a_large_body_goes_out_at_once_behind_the_held_head() -> None:
    async def scenario() -> None:
        joined, transport = wrapped()
        body = b"x" * (1024 * 1024)

        joined.write(b"head")
        joined.write(body)
        joined.write(b"y" * (1024 * 1024))

        assert transport.sends == [b"head" + body, b"y" * (1024 * 1024)]

    asyncio.run(scenario())


def test_closing_sends_what_is_held_first() -> None:
    async def scenario() -> None:
        joined, transport = wrapped()

        joined.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        joined.close()

        assert transport.sends == [b"HTTP/1.1 408 Request Timeout\r\n\r\n"]
        assert transport.closed
        await next_turn()
        assert len(transport.sends) == 1

    asyncio.run(scenario())


def test_a_connection_lost_before_the_turn_ends_drops_what_is_held() -> None:
    async def scenario() -> None:
        joined, transport = wrapped()

        joined.write(b"head")
        transport.closed = True  # as when the client went away
        await next_turn()

        assert transport.sends == []

    asyncio.run(scenario())


def test_held_bytes_are_a_copy_of_a_mutable_buffer() -> None:
    async def scenario() -> None:
        joined, transport = wrapped()
        buffer = bytearray(b"head")

        joined.write(buffer)
        buffer[:] = b"XXXX"
        await next_turn()

        assert transport.sends == [b"head"]

    asyncio.run(scenario())


def test_aborting_drops_what_is_held() -> None:
    async def scenario() -> None:
        joined, transport = wrapped()

        joined.write(b"head")
        joined.abort()
        await next_turn()

        assert transport.sends == []
        assert transport.aborted

    asyncio.run(scenario())


@pytest.mark.parametrize("name", ["get_extra_info", "is_closing"])
def test_everything_else_is_the_transport_s(name: str) -> None:
    async def scenario() -> None:
        joined, transport = wrapped()

        assert getattr(joined, name).__self__ is transport

    asyncio.run(scenario())


def test_closing_while_a_response_is_cut_short_resets_instead_of_flushing() -> None:
    # A response that can never be complete (its client read too slowly): the bytes still queued
    # are a truncated answer, and a close that waited for the client to read them would hold the
    # connection for as long as that slow client takes.
    async def scenario() -> None:
        transport = RecordingTransport()
        joined = OneSendPerResponse(transport, asyncio.get_running_loop(), cut_short=lambda: True)

        joined.write(b"head")
        joined.close()

        assert transport.aborted
        assert not transport.closed
        assert transport.sends == []

    asyncio.run(scenario())


def test_closing_after_a_complete_response_flushes_it() -> None:
    async def scenario() -> None:
        transport = RecordingTransport()
        joined = OneSendPerResponse(transport, asyncio.get_running_loop(), cut_short=lambda: False)

        joined.write(b"whole answer")
        joined.close()

        assert transport.closed
        assert not transport.aborted
        assert transport.sends == [b"whole answer"]

    asyncio.run(scenario())
