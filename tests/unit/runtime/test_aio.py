"""cancel_and_wait ends tasks that swallow a cancellation."""

from __future__ import annotations

import asyncio

from pgqueue.aio import cancel_and_wait


async def test_a_task_that_drops_cancellations_is_cancelled_until_it_ends() -> None:
    swallowed = 0

    async def stubborn() -> str:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed == 3:
                    raise

    async def obedient() -> None:
        await asyncio.sleep(3600)

    async def finished() -> int:
        return 7

    done = asyncio.ensure_future(finished())
    await done
    tasks = [asyncio.ensure_future(stubborn()), asyncio.ensure_future(obedient()), done]
    await asyncio.sleep(0)
    async with asyncio.timeout(10):
        await cancel_and_wait(tasks)
    assert swallowed == 3
    assert tasks[0].cancelled() and tasks[1].cancelled()
    assert done.result() == 7
