"""Catching up with the stored intent: the newest committed intent versus the one applied.

Every commit offers (intent, revision). Applying it may fail (a bug, a resource limit); the
commit stands regardless, so the follower keeps retrying the newest offer until one applies,
and says meanwhile how far behind it is (readiness reports it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from hypetunnel.model.intent import Intent

log = logging.getLogger(__name__)

RETRY_INTERVAL = 0.5  # seconds between attempts to apply an intent that failed to apply


class IntentFollower:
    def __init__(self, apply: Callable[[Intent], None],
                 spawn: Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]],
                 retry_interval: float = RETRY_INTERVAL) -> None:
        self._apply = apply
        self._spawn = spawn
        self.retry_interval = retry_interval
        self._wanted: tuple[Intent, int] | None = None
        self.applied_revision: int | None = None
        self.error: str | None = None
        self._retry: asyncio.Task[Any] | None = None

    @property
    def wanted_revision(self) -> int | None:
        return None if self._wanted is None else self._wanted[1]

    @property
    def caught_up(self) -> bool:
        return self.applied_revision == self.wanted_revision

    def offer(self, intent: Intent, revision: int) -> None:
        """The intent committed at `revision` (older offers than the newest are ignored)."""
        if self._wanted is None or revision >= self._wanted[1]:
            self._wanted = (intent, revision)
        self._try()

    def _try(self) -> None:
        if self._wanted is None or self.caught_up:
            return
        intent, revision = self._wanted
        try:
            self._apply(intent)
        except Exception as e:
            self.error = f"revision {revision}: {type(e).__name__}: {e}"
            log.exception("cannot apply intent revision %d (will retry)", revision)
            if self._retry is None or self._retry.done():
                self._retry = self._spawn(self._retry_until_caught_up(), "apply-retry")
            return
        self.applied_revision, self.error = revision, None

    async def _retry_until_caught_up(self) -> None:
        while not self.caught_up:
            await asyncio.sleep(self.retry_interval)
            self._try()

    def problem(self) -> str | None:
        if self.caught_up:
            return None
        return (f"intent revision {self.wanted_revision} not applied yet (applied: "
                f"{self.applied_revision}): {self.error or 'pending'}")
