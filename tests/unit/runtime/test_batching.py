"""MicroBatcher / GroupCommit: concurrent callers share backend calls, each gets its own result."""

from __future__ import annotations

import asyncio
import time

import pytest

from convergence.runtime.batching import GroupCommit, MicroBatcher


def test_concurrent_items_share_one_call_and_keep_their_own_results():
    calls: list[list[int]] = []

    async def square(items: list[int]) -> list[int]:
        calls.append(list(items))
        await asyncio.sleep(0.01)
        return [i * i for i in items]

    async def main() -> list[int]:
        batcher = MicroBatcher(square, max_delay=0.005, max_size=100, max_in_flight=1)
        return await asyncio.gather(*(batcher.submit(i) for i in range(250)))

    results = asyncio.run(main())
    assert results == [i * i for i in range(250)]
    assert [len(c) for c in calls] == [100, 100, 50]


def test_slow_backend_makes_batches_bigger_not_more_numerous():
    calls: list[int] = []
    in_flight = 0
    most = 0

    async def slow(items: list[int]) -> list[int]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        calls.append(len(items))
        await asyncio.sleep(0.05)
        in_flight -= 1
        return items

    async def main() -> None:
        batcher = MicroBatcher(slow, max_delay=0.0, max_size=10_000, max_in_flight=2)

        async def caller(i: int) -> int:
            await asyncio.sleep(i * 0.001)  # a steady stream, 1 per ms, over 0.3 s
            return await batcher.submit(i)

        assert await asyncio.gather(*(caller(i) for i in range(300))) == list(range(300))

    asyncio.run(main())
    assert most <= 2
    assert sum(calls) == 300
    assert len(calls) < 30  # ~0.3 s / 0.05 s per batch x 2 in flight, not 300 calls


def test_a_failing_batch_fails_each_of_its_callers_and_the_next_batch_works():
    attempts = 0

    async def flaky(items: list[str]) -> list[str]:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("backend down")
        return [s.upper() for s in items]

    async def main() -> None:
        batcher = MicroBatcher(flaky, max_delay=0.005)
        first = await asyncio.gather(batcher.submit("a"), batcher.submit("b"), return_exceptions=True)
        assert all(isinstance(e, ConnectionError) for e in first)
        assert await batcher.submit("c") == "C"

    asyncio.run(main())


def test_a_wrong_number_of_results_is_an_error_not_a_misassignment():
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    async def main() -> None:
        batcher = MicroBatcher(short, max_delay=0.001)
        with pytest.raises(RuntimeError, match="results for"):
            await asyncio.gather(batcher.submit(1), batcher.submit(2))

    asyncio.run(main())


def test_group_commit_waits_for_a_flush_that_started_after_the_call():
    staged: list[int] = []
    durable: list[int] = []

    async def flush() -> None:
        batch = list(staged)
        staged.clear()
        await asyncio.sleep(0.02)
        durable.extend(batch)

    async def main() -> int:
        commit = GroupCommit(flush, max_delay=0.002)

        async def writer(i: int) -> None:
            await asyncio.sleep(i * 0.0005)
            staged.append(i)
            await commit()
            assert i in durable  # what the caller staged is durable when commit returns

        await asyncio.gather(*(writer(i) for i in range(200)))
        return commit.flushes

    flushes = asyncio.run(main())
    assert sorted(durable) == list(range(200))
    assert flushes < 20


def test_a_batcher_used_from_a_new_event_loop_starts_clean():
    async def echo(items: list[int]) -> list[int]:
        return items

    batcher = MicroBatcher(echo, max_delay=0.001)
    assert asyncio.run(batcher.submit(1)) == 1
    assert asyncio.run(batcher.submit(2)) == 2


def test_soon_flushes_once_within_the_delay_and_drain_flushes_what_is_left():
    flushes: list[float] = []

    async def flush() -> None:
        flushes.append(time.monotonic())

    async def main() -> None:
        commit = GroupCommit(flush, max_delay=0.0)
        start = time.monotonic()
        for _ in range(50):
            commit.soon(0.05)  # many runs starting: one timer
        await asyncio.sleep(0.15)
        assert len(flushes) == 1 and 0.04 <= flushes[0] - start < 0.14
        commit.soon(10.0)
        await commit.drain()  # shutdown does not wait 10 s, and does not skip the flush
        assert len(flushes) == 2 and flushes[1] - start < 1.0

    asyncio.run(main())
