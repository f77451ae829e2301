"""Cancellation is never swallowed: a task cancelled while it reaps a child still ends.

This is the shape of Election.run: round after round, each round's finally reaps a helper
task. A controller shut down (or killed by a test) at that moment must stop, not start the next
round as if nobody had asked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from hypetunnel.aio import cancel_and_wait, reap

Reaper = Callable[[asyncio.Task[None]], Awaitable[None]]


async def _naive(child: asyncio.Task[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await child


async def _rounds(reaping: asyncio.Event, reaper: Reaper, stop: asyncio.Event) -> None:
    while not stop.is_set():
        child: asyncio.Task[None] = asyncio.create_task(asyncio.sleep(1000))
        try:
            await asyncio.sleep(0.001)  # the round ends by itself
        finally:
            child.cancel()
            reaping.set()
            await reaper(child)


async def _cancel_while_reaping(reaper: Reaper) -> bool:
    """True if the task ended when cancelled, False if it ran on."""
    reaping, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(_rounds(reaping, reaper, stop))
    await reaping.wait()
    task.cancel()  # lands while the task awaits its child
    await asyncio.wait({task}, timeout=1)
    ended = task.done()
    stop.set()  # a task that ran on stops at its next round
    await asyncio.wait({task}, timeout=1)
    assert task.done()
    return ended and task.cancelled()


def test_a_task_cancelled_while_reaping_ends() -> None:
    assert asyncio.run(_cancel_while_reaping(reap))


def test_the_naive_pattern_loses_the_cancellation() -> None:
    """The control: without reap() the cancelled task runs on as if nobody had asked."""
    assert not asyncio.run(_cancel_while_reaping(_naive))


def test_cancel_and_wait_ends_a_task_cancelled_by_us() -> None:
    async def main() -> None:
        child = asyncio.create_task(asyncio.sleep(1000))
        await asyncio.sleep(0)
        await cancel_and_wait(child)
        assert child.cancelled()

    asyncio.run(main())
