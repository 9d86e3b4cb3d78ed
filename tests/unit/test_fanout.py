"""One body, read once, to several consumers at the slowest one's pace."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from application.fanout import Fanout
from domain.errors import IncompleteBody


class Source:
    def __init__(self, chunks: list[bytes], fail_after: int | None = None) -> None:
        self.chunks = chunks
        self.read = 0
        self.fail_after = fail_after

    async def __aiter__(self) -> AsyncIterator[bytes]:  # type: ignore[override]
        for chunk in self.chunks:
            if self.fail_after is not None and self.read == self.fail_after:
                raise IncompleteBody("the client went away")
            self.read += 1
            yield chunk


async def consume(
    branch: AsyncIterator[bytes], delay: float, seen: list[int] | None = None
) -> bytes:
    data = b""
    async for chunk in branch:
        data += chunk
        if seen is not None:
            seen.append(len(data))
        await asyncio.sleep(delay)
    return data


def test_every_branch_gets_every_chunk_and_the_source_is_read_once_at_the_slowest_pace() -> None:
    source = Source([bytes([i]) * 10 for i in range(20)])

    async def scenario() -> None:
        fanout = Fanout(source.__aiter__(), 3)
        fast: list[int] = []
        results = await asyncio.gather(
            consume(fanout.branch(0), 0, fast),
            consume(fanout.branch(1), 0.001),
            consume(fanout.branch(2), 0.003),
        )
        assert len(set(results)) == 1
        assert results[0] == b"".join(source.chunks)
        assert source.read == 20

    asyncio.run(scenario())


def test_the_source_runs_at_most_one_chunk_ahead_of_the_slowest_branch() -> None:
    source = Source([b"x"] * 50)

    async def scenario() -> None:
        fanout = Fanout(source.__aiter__(), 2)
        slow_progress: list[int] = []

        async def slow() -> None:
            async for _ in fanout.branch(1):
                slow_progress.append(source.read)
                assert source.read <= len(slow_progress) + 1
                await asyncio.sleep(0.001)

        await asyncio.gather(consume(fanout.branch(0), 0), slow())

    asyncio.run(scenario())


def test_a_dropped_branch_no_longer_holds_the_others_back() -> None:
    source = Source([b"y"] * 10)

    async def scenario() -> None:
        fanout = Fanout(source.__aiter__(), 2)
        stuck = fanout.branch(1)
        await anext(stuck)  # takes the first chunk, then its node fails
        await stuck.aclose()
        assert await asyncio.wait_for(consume(fanout.branch(0), 0), 2) == b"y" * 10

    asyncio.run(scenario())


def test_a_failing_source_fails_every_branch() -> None:
    source = Source([b"z"] * 10, fail_after=4)

    async def scenario() -> None:
        fanout = Fanout(source.__aiter__(), 3)
        results = await asyncio.gather(
            *(consume(fanout.branch(i), 0) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(result, IncompleteBody) for result in results)

    asyncio.run(scenario())


def test_a_branch_cancelled_while_it_waits_does_not_cut_the_body_for_the_others() -> None:
    source = Source([b"w"] * 10)

    async def scenario() -> None:
        fanout = Fanout(source.__aiter__(), 2)
        slow = asyncio.ensure_future(consume(fanout.branch(1), 0.01))
        await asyncio.sleep(0.005)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert await consume(fanout.branch(0), 0) == b"w" * 10

    asyncio.run(scenario())
