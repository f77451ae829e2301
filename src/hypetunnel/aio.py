"""Small asyncio helpers that keep cancellation honest.

`with suppress(CancelledError): await task` after `task.cancel()` looks harmless, but if the
*awaiting* task is cancelled at that moment, the CancelledError it receives is swallowed too, and
the awaiting task carries on as if nobody had asked it to stop: a shutdown or a hand-over then
waits for it forever. These helpers swallow only the awaited task's own cancellation.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def reap(task: asyncio.Task[Any]) -> None:
    """Wait for `task` to end; its cancellation is swallowed, ours is not."""
    try:
        await task
    except asyncio.CancelledError:
        me = asyncio.current_task()
        if me is not None and me.cancelling():
            raise


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has ended, without losing a cancellation of our own."""
    task.cancel()
    await reap(task)
