"""Measurements behind readiness: how late the event loop runs, whether the store answers.

Both run as small periodic tasks on the loop they judge, and neither blocks it: the lag meter
only sleeps, the store probe reads the store's revision in a thread with a bounded wait.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from hypetunnel.store.base import Store


class LoopLag:
    """How much later than asked a short sleep wakes up: the time any callback waits for the
    loop. Keeps the worst of the last `window` seconds."""

    def __init__(self, period: float = 0.05, window: float = 2.0) -> None:
        self.period = period
        self.window = window
        self._samples: collections.deque[tuple[float, float]] = collections.deque()

    async def run(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(self.period)
            now = time.monotonic()
            self.record(now, max(0.0, now - t0 - self.period))

    def record(self, now: float, lag: float) -> None:
        self._samples.append((now, lag))
        while self._samples and self._samples[0][0] < now - self.window:
            self._samples.popleft()

    def recent(self) -> float:
        """The worst lag (seconds) seen in the window, counting a sample overdue right now:
        a loop blocked at this very moment has recorded nothing yet."""
        now = time.monotonic()
        worst = max((lag for t, lag in self._samples if t >= now - self.window), default=0.0)
        if self._samples:
            worst = max(worst, now - self._samples[-1][0] - self.period)
        return max(worst, 0.0)


class StoreProbe:
    """Reads the store's revision every `interval` (in a thread, at most `timeout` waited)."""

    def __init__(self, store: Store, interval: float = 1.0, timeout: float = 5.0,
                 stale_after: float = 5.0) -> None:
        self.store = store
        self.interval = interval
        self.timeout = timeout
        self.stale_after = stale_after
        self.last_ok: float | None = None  # time.monotonic() of the last answer
        self.last_error: str | None = None
        self.revision: int | None = None
        self._pending: asyncio.Future[int] | None = None
        self.timed: Callable[[str], AbstractContextManager[object]] = lambda _op: nullcontext()

    async def run(self, on_revision: Callable[[int], None]) -> None:
        while True:
            revision = await self.probe()
            if revision is not None:
                on_revision(revision)
            await asyncio.sleep(self.interval)

    async def probe(self) -> int | None:
        # A read still hanging from the last round is waited for, not doubled.
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(asyncio.to_thread(self._read_revision))
        try:
            revision = await asyncio.wait_for(asyncio.shield(self._pending), self.timeout)
        except TimeoutError:
            self.last_error = f"no answer within {self.timeout:.0f}s"
            return None
        except Exception as e:
            self._pending = None
            self.last_error = f"{type(e).__name__}: {e}"
            return None
        self._pending = None
        self.last_ok, self.last_error, self.revision = time.monotonic(), None, revision
        return revision

    def _read_revision(self) -> int:
        with self.timed("revision"):
            return self.store.revision()

    def problem(self) -> str | None:
        """Why the store counts as unreachable now, or None."""
        if self.last_error is not None:
            return f"store unreachable: {self.last_error}"
        if self.last_ok is None:
            return "store not checked yet"
        age = time.monotonic() - self.last_ok
        if age > self.stale_after:
            return f"store unreachable: no answer for {age:.0f}s"
        return None
