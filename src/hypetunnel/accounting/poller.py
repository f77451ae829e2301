"""The accounting task: every interval, each switch's flow counters into the usage book.

Runs while this controller may program switches (the active one). When it becomes active it
first loads the book another controller left in the store, so the counters go on from the
stored readings; the changed counters are written back after every poll (a write that fails
stays pending and goes with the next one). A standby answers from the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from hypetunnel.accounting.book import PREFIX, UsageBook, report
from hypetunnel.accounting.flowstats import flow_counts
from hypetunnel.accounting.meters import MeterCache, SwitchMeters
from hypetunnel.compiler.flows import Flow, Slice
from hypetunnel.store.side import SideStore

log = logging.getLogger(__name__)

USAGE_INTERVAL = 10.0  # seconds between two reads of every switch's counters
READ_TIMEOUT = 10.0  # one switch's flow table; a switch that takes longer is read next time
# The counters are written at most this often, and at once when a flow's last reading was
# banked (a deleted flow: the switch no longer has it to read again). In between, a restarted
# or new active controller recovers the increments from the switches' own counters.
WRITE_EVERY = 30.0
BY = ("tenant", "network", "vm")


class StatsReader(Protocol):
    async def flow_stats(self) -> list[bytes] | None: ...


class UsagePort(Protocol):
    """What the poller reads of the runtime (the Controller provides it)."""

    @property
    def may_program(self) -> bool: ...

    def usage_switches(self) -> Iterable[tuple[str, StatsReader]]: ...

    def usage_meters(self, hypervisor: str) -> SwitchMeters: ...

    def usage_slices(self, hypervisor: str) -> Iterable[tuple[int, Slice]]: ...


class UsagePoller:
    def __init__(self, port: UsagePort, store: SideStore, *,
                 interval: float = USAGE_INTERVAL,
                 clock: Callable[[], float] = time.time) -> None:
        self._port = port
        self._store = store
        self.interval = interval
        self._clock = clock
        self.book = UsageBook()
        self._meters = MeterCache()
        self.active = False
        self.polls = 0
        self._written_at: float | None = None
        self.last_poll_seconds = 0.0

    async def run(self) -> None:
        while True:
            if not self._port.may_program:
                self.active = False
                await asyncio.sleep(min(self.interval, 1.0))  # take over soon after a takeover
                continue
            try:
                if not self.active:
                    self.book.load(await asyncio.to_thread(self._store.side_load, PREFIX))
                    self.active = True
                await self.poll()
            except Exception as e:  # the store, most likely: the next interval tries again
                log.warning("accounting: %s", e)
            await asyncio.sleep(self.interval)

    # -- what the sessions report ----------------------------------------------------------------
    def flows_added(self, hypervisor: str, flows: Iterable[Flow]) -> None:
        if self.active:
            self.book.register(hypervisor, self._port.usage_meters(hypervisor).of(flows))

    def flow_removed(self, hypervisor: str, cookie: int, packets: int, nbytes: int) -> None:
        if self.active:
            self.book.removed(hypervisor, cookie, packets, nbytes)

    async def poll(self) -> None:
        started = time.perf_counter()
        for hv, reader in list(self._port.usage_switches()):
            # The mapping first: a flow installed after it is counted from the next poll on,
            # from its first reading (a new flow started at 0), so nothing is lost.
            meters = self._meters.meters(hv, self._port.usage_meters(hv),
                                         self._port.usage_slices(hv))
            try:
                bodies = await asyncio.wait_for(reader.flow_stats(), READ_TIMEOUT)
            except Exception as e:  # the channel went away: its own alarm says so
                log.debug("%s: flow stats read failed: %s", hv, e)
                continue
            if bodies is None:
                continue
            wanted = self.book.wanted(hv, meters)
            self.book.observe_switch(hv, (c for b in bodies for c in flow_counts(b, wanted)),
                                     meters)
        now = self._clock()
        self.book.sample(now)
        if (self.book.banked or self._written_at is None
                or now - self._written_at >= WRITE_EVERY):
            puts, deletes = self.book.pending()
            if puts or deletes:
                await asyncio.to_thread(self._store.side_commit, puts, deletes)
            self.book.written()
            self._written_at = now
        self.polls += 1
        self.last_poll_seconds = time.perf_counter() - started

    def describe(self) -> dict[str, Any]:
        """For the status and the metrics: whether this controller counts, how many polls
        it has completed (a reader that waits for the counters of a moment waits for two
        more polls: the one under way may have read its switch before), and the cost of
        the last one (every switch's flow table read and booked)."""
        return {"active": self.active, "interval_s": self.interval, "polls": self.polls,
                "last_poll_ms": round(self.last_poll_seconds * 1000, 1)}

    def tenant_totals(self) -> list[dict[str, Any]] | None:
        """Per-tenant rows since accounting began, from memory; None unless active."""
        return report(self.book.totals(), "tenant") if self.active else None

    async def usage(self, by: str = "tenant", tenant: str | None = None,
                    since: float | None = None) -> list[dict[str, Any]]:
        """Usage rows (book.report) counted after `since` (epoch s; None: ever)."""
        if by not in BY:
            raise ValueError(f"by: must be one of {', '.join(BY)}, not {by!r}")
        book = self.book
        if not self.active:  # the standby answers from the store
            book = UsageBook()
            book.load(await asyncio.to_thread(self._store.side_load, PREFIX))
        return report(book.totals(since), by, tenant)
