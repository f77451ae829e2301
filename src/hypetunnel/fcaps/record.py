"""The recorder: the alarm book and the state log of the active controller, and their writes.

Everything it is told (state changes, faults raised and cleared, acknowledgements) changes
memory at once, on the event loop, and queues documents; `flush` (awaited by the monitor)
writes the queue in ONE store commit in a thread, so the loop never waits for the store. A
failed write stays queued and is retried at the next flush. Every record also goes to the log
as one JSON line (logger `hypetunnel.events`, the record in its extra fields).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hypetunnel.fcaps.alarm import Alarm
from hypetunnel.fcaps.book import AlarmBook, AlarmChange
from hypetunnel.fcaps.events import (
    ALARM_PREFIX,
    EVENT_PREFIX,
    MAX_EVENTS,
    alarm_event,
    alarm_key,
    event_key,
    state_event,
)

log = logging.getLogger(__name__)
events_log = logging.getLogger("hypetunnel.events")

# (puts, deletes) -> None, blocking (SideStore.side_commit); run in a thread.
Write = Callable[[Mapping[str, dict[str, Any]], Iterable[str]], None]


class Recorder:
    def __init__(self, write: Write, clock: Callable[[], float], *,
                 max_events: int = MAX_EVENTS) -> None:
        self._write = write
        self._clock = clock
        self.max_events = max_events
        self.book = AlarmBook()
        self.events: list[dict[str, Any]] = []  # what the store holds, oldest first
        self._seq = 0
        self._puts: dict[str, dict[str, Any]] = {}
        self._deletes: set[str] = set()
        self.on_alarm_change: Callable[[], None] = lambda: None

    def load(self, records: Mapping[str, dict[str, Any]]) -> None:
        """Take the stored book and log (a new active controller, before it records)."""
        self.book = AlarmBook(Alarm.from_doc(d) for k, d in records.items()
                              if k.startswith(ALARM_PREFIX))
        self.events = sorted((d for k, d in records.items() if k.startswith(EVENT_PREFIX)),
                             key=lambda e: int(e["seq"]))
        self._seq = int(self.events[-1]["seq"]) if self.events else 0
        self._puts.clear()
        self._deletes.clear()

    @property
    def seq(self) -> int:
        return self._seq

    # -- what happened -------------------------------------------------------------------------
    def state(self, resource: str, state: str, cause: str, **details: Any) -> None:
        self._append(state_event(self._next(), self._clock(), resource, state, cause,
                                 **details))

    def raise_alarm(self, resource: str, kind: str, text: str,
                    tenant: str | None = None) -> AlarmChange | None:
        return self._changed(self.book.raise_alarm(resource, kind, text, self._clock(), tenant))

    def clear(self, resource: str, kind: str, text: str = "") -> AlarmChange | None:
        return self._changed(self.book.clear(resource, kind, text, self._clock()))

    def ack(self, alarm_id: str) -> Alarm:
        self._changed(self.book.ack(alarm_id, self._clock()))
        return self.book.get(alarm_id)

    def put(self, key: str, doc: dict[str, Any]) -> None:
        """Any other document to go with the next flush (a webhook's cursor)."""
        self._puts[key] = doc

    def _changed(self, change: AlarmChange | None) -> AlarmChange | None:
        if change is None:
            return None
        self._puts[alarm_key(change.alarm.id)] = change.alarm.to_doc()
        for gone in self.book.prune():
            self._puts.pop(alarm_key(gone), None)
            self._deletes.add(alarm_key(gone))
        self._append(alarm_event(self._next(), self._clock(), change))
        self.on_alarm_change()
        return change

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _append(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        key = event_key(int(event["seq"]))
        self._puts[key] = event
        self._deletes.discard(key)
        events_log.info("%s: %s (%s)", event["resource"], event["state"], event["cause"],
                        extra={"event": event})
        while len(self.events) > self.max_events:
            old = event_key(int(self.events.pop(0)["seq"]))
            if self._puts.pop(old, None) is None:
                self._deletes.add(old)

    # -- writing -------------------------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        return bool(self._puts or self._deletes)

    async def flush(self) -> bool:
        """Write what is queued (one commit, in a thread); False if it failed (kept queued)."""
        if not self.dirty:
            return True
        puts, deletes = dict(self._puts), set(self._deletes)
        self._puts.clear()
        self._deletes.clear()
        try:
            await asyncio.to_thread(self._write, puts, sorted(deletes))
            return True
        except Exception as e:
            log.warning("cannot store %d alarm/event documents (will retry): %s",
                        len(puts) + len(deletes), e)
            for key, doc in puts.items():  # newer changes made meanwhile win
                if key not in self._deletes:
                    self._puts.setdefault(key, doc)
            self._deletes |= {k for k in deletes if k not in self._puts}
            return False
