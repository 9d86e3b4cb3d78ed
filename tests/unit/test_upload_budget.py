"""Multipart parts are held in memory while the budget has room, else in temporary files."""

import asyncio
import os

import pytest

from adapters.s3 import ByteBudget, PartSpool
from domain.errors import UploadCapacityExhausted


async def contents(part) -> bytes:  # type: ignore[no-untyped-def]
    return b"".join([bytes(piece) async for piece in part.slices()])


def test_a_part_within_the_memory_budget_stays_in_memory_and_gives_it_back() -> None:
    spool = PartSpool(ByteBudget(10), ByteBudget(100))

    async def scenario() -> None:
        part = spool.new_part()
        await part.append(b"abcd")
        await part.append(b"ef")
        assert part.in_memory
        assert spool.memory.available_bytes == 4
        assert part.whole() == b"abcdef"
        assert await contents(part) == b"abcdef"
        await part.close()
        assert spool.memory.available_bytes == 10

    asyncio.run(scenario())


def test_a_part_the_memory_budget_cannot_hold_moves_to_a_file_and_keeps_every_byte() -> None:
    spool = PartSpool(ByteBudget(10), ByteBudget(1000))
    data = os.urandom(600)

    async def scenario() -> None:
        part = spool.new_part()
        await part.append(data[:8])
        assert part.in_memory
        for start in range(8, 600, 50):
            await part.append(data[start : start + 50])
        assert not part.in_memory
        # Memory held before the move is given back; the file is charged to the disk budget.
        assert spool.memory.available_bytes == 10
        assert spool.disk.available_bytes == 400
        assert part.whole() is None
        assert await contents(part) == data
        # Several readers at once (replicas, retries) each get the whole part.
        both = await asyncio.gather(contents(part), contents(part))
        assert both == [data, data]
        await part.close()
        assert spool.disk.available_bytes == 1000

    asyncio.run(scenario())


def test_paused_parts_hold_only_what_they_received_so_others_are_never_made_to_wait() -> None:
    spool = PartSpool(ByteBudget(16 * 1024), ByteBudget(0))

    async def scenario() -> None:
        paused = [spool.new_part() for _ in range(3)]
        for part in paused:
            await part.append(b"x" * 1024)
        fourth = spool.new_part()
        await fourth.append(b"y" * 10 * 1024)
        assert fourth.in_memory
        for part in [*paused, fourth]:
            await part.close()
        assert spool.memory.available_bytes == 16 * 1024

    asyncio.run(scenario())


def test_with_both_budgets_spent_an_upload_is_refused_at_once_not_made_to_wait() -> None:
    spool = PartSpool(ByteBudget(4), ByteBudget(4))

    async def scenario() -> None:
        first = spool.new_part()
        await first.append(b"1234")
        second = spool.new_part()
        await second.append(b"5678")
        assert not second.in_memory
        third = spool.new_part()
        with pytest.raises(UploadCapacityExhausted) as refused:
            await third.append(b"9")
        assert refused.value.retry_after_seconds
        for part in (first, second, third):
            await part.close()
        assert (spool.memory.available_bytes, spool.disk.available_bytes) == (4, 4)

    asyncio.run(scenario())
