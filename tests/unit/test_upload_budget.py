import asyncio

import pytest

from adapters.upload_budget import UploadBudget


def test_reservations_within_the_budget_proceed_at_once() -> None:
    budget = UploadBudget(10)

    async def scenario() -> None:
        async with budget.reserve(4), budget.reserve(6):
            assert budget.available_bytes == 0
        assert budget.available_bytes == 10

    asyncio.run(scenario())


def test_a_reservation_beyond_the_budget_waits_until_memory_is_released() -> None:
    budget = UploadBudget(10)
    order: list[str] = []

    async def holder(release: asyncio.Event) -> None:
        async with budget.reserve(8):
            order.append("first holds")
            await release.wait()
        order.append("first released")

    async def waiter() -> None:
        async with budget.reserve(5):
            order.append("second holds")

    async def scenario() -> None:
        release = asyncio.Event()
        first = asyncio.create_task(holder(release))
        await asyncio.sleep(0)
        second = asyncio.create_task(waiter())
        await asyncio.sleep(0.01)
        assert order == ["first holds"]
        release.set()
        await asyncio.gather(first, second)

    asyncio.run(scenario())
    assert order == ["first holds", "first released", "second holds"]


def test_waiters_are_served_in_arrival_order_so_large_uploads_are_not_starved() -> None:
    budget = UploadBudget(10)
    served: list[str] = []

    async def upload(name: str, size: int, hold: float) -> None:
        async with budget.reserve(size):
            served.append(name)
            await asyncio.sleep(hold)

    async def scenario() -> None:
        first = asyncio.create_task(upload("small-1", 6, 0.02))
        await asyncio.sleep(0)
        large = asyncio.create_task(upload("large", 10, 0))
        await asyncio.sleep(0)
        small = asyncio.create_task(upload("small-2", 2, 0))
        await asyncio.gather(first, large, small)

    asyncio.run(scenario())
    assert served == ["small-1", "large", "small-2"]


def test_a_reservation_larger_than_the_budget_takes_the_whole_budget() -> None:
    budget = UploadBudget(10)

    async def scenario() -> None:
        async with budget.reserve(100):
            assert budget.available_bytes == 0

    asyncio.run(scenario())


def test_a_cancelled_waiter_does_not_block_those_behind_it() -> None:
    budget = UploadBudget(10)

    async def scenario() -> None:
        async with budget.reserve(10):
            blocked = asyncio.create_task(budget.reserve(5).__aenter__())
            await asyncio.sleep(0)
            blocked.cancel()
            with pytest.raises(asyncio.CancelledError):
                await blocked
        async with budget.reserve(10):
            assert budget.available_bytes == 0

    asyncio.run(scenario())
