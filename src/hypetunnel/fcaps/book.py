"""The alarm book: every alarm, with at most one open alarm per (resource, kind).

Raising an alarm that is open already only updates it (a new text); clearing one that is not
open does nothing. Every effective change is returned as an `AlarmChange`, which the recorder
stores, logs and hands to the webhooks. Pure: the caller gives the time.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from hypetunnel.errors import FieldError, NotFound
from hypetunnel.fcaps.alarm import KINDS, Alarm

ChangeKind = Literal["raised", "updated", "cleared", "acknowledged"]
KEEP_CLEARED = 500  # cleared alarms kept (the newest); open ones are always kept


class AlarmNotFound(NotFound):
    def __init__(self, alarm_id: str) -> None:
        self.errors = [FieldError(f"alarms/{alarm_id}", "not found")]
        super().__init__(f"alarms/{alarm_id}: not found")


@dataclass(frozen=True, slots=True)
class AlarmChange:
    change: ChangeKind
    alarm: Alarm


def new_id() -> str:
    """Unique across controllers; shaped like a name (a letter first) for the URL."""
    return "a" + uuid.uuid4().hex[:11]


class AlarmBook:
    def __init__(self, alarms: Iterable[Alarm] = (), new_id: Callable[[], str] = new_id) -> None:
        self._alarms: dict[str, Alarm] = {a.id: a for a in alarms}
        self._open: dict[tuple[str, str], str] = {
            (a.resource, a.kind): a.id for a in self._alarms.values() if a.open}
        self._new_id = new_id

    def __len__(self) -> int:
        return len(self._alarms)

    def all(self) -> list[Alarm]:
        return sorted(self._alarms.values(), key=lambda a: (a.raised, a.id))

    def open_alarms(self, kind: str | None = None) -> list[Alarm]:
        return [a for a in self.all() if a.open and (kind is None or a.kind == kind)]

    def open_alarm(self, resource: str, kind: str) -> Alarm | None:
        alarm_id = self._open.get((resource, kind))
        return self._alarms[alarm_id] if alarm_id is not None else None

    def get(self, alarm_id: str) -> Alarm:
        try:
            return self._alarms[alarm_id]
        except KeyError:
            raise AlarmNotFound(alarm_id) from None

    def raise_alarm(self, resource: str, kind: str, text: str, now: float,
                    tenant: str | None = None) -> AlarmChange | None:
        current = self.open_alarm(resource, kind)
        if current is not None:
            if current.text == text:
                return None
            return self._put("updated", dataclasses.replace(current, text=text, updated=now))
        k = KINDS[kind]
        alarm = Alarm(id=self._new_id(), resource=resource, kind=kind, severity=k.severity,
                      service_affecting=k.service_affecting, raised=now, updated=now,
                      tenant=tenant, text=text)
        self._open[(resource, kind)] = alarm.id
        return self._put("raised", alarm)

    def clear(self, resource: str, kind: str, text: str, now: float) -> AlarmChange | None:
        current = self.open_alarm(resource, kind)
        if current is None:
            return None
        del self._open[(resource, kind)]
        return self._put("cleared", dataclasses.replace(current, cleared=now, updated=now,
                                                        text=text or current.text))

    def ack(self, alarm_id: str, now: float) -> AlarmChange | None:
        current = self.get(alarm_id)
        if current.acknowledged:
            return None
        return self._put("acknowledged", dataclasses.replace(current, acknowledged=True,
                                                             updated=now))

    def prune(self, keep_cleared: int = KEEP_CLEARED) -> list[str]:
        """Forget the oldest cleared alarms beyond `keep_cleared`; their ids."""
        cleared = sorted((a for a in self._alarms.values() if not a.open),
                         key=lambda a: (a.cleared or 0.0, a.id))
        gone = [a.id for a in cleared[: max(len(cleared) - keep_cleared, 0)]]
        for alarm_id in gone:
            del self._alarms[alarm_id]
        return gone

    def _put(self, change: ChangeKind, alarm: Alarm) -> AlarmChange:
        self._alarms[alarm.id] = alarm
        return AlarmChange(change, alarm)
