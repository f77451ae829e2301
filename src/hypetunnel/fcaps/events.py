"""The state log: one record per change of state of a resource, with its time and cause.

A record is a JSON document {seq, time, resource, state, cause, tenant[, alarm, change]}:
`resource` is kind/name (hypervisor/hv1, switch/hv1, tunnel/hv1/hv2, network/acme/front,
vm/acme/web1, controller/ctl1, ...), `state` what it became, `cause` why. An alarm change is a
record too (with the alarm and the change): the webhooks deliver exactly those, in `seq` order.
Records are kept in the store under `fcaps/event/<seq>`, the newest MAX_EVENTS of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hypetunnel.fcaps.book import AlarmChange

PREFIX = "fcaps/"
EVENT_PREFIX = f"{PREFIX}event/"
ALARM_PREFIX = f"{PREFIX}alarm/"
CURSOR_PREFIX = f"{PREFIX}webhook/"
MAX_EVENTS = 2000

_TENANT_KINDS = ("vm", "network")


def event_key(seq: int) -> str:
    return f"{EVENT_PREFIX}{seq:012d}"


def alarm_key(alarm_id: str) -> str:
    return f"{ALARM_PREFIX}{alarm_id}"


def tenant_of(resource: str) -> str | None:
    """The tenant a resource belongs to (vm/T/N, network/T/N), else None (the provider's)."""
    kind, _, rest = resource.partition("/")
    if kind in _TENANT_KINDS and "/" in rest:
        return rest.partition("/")[0]
    return None


def state_event(seq: int, now: float, resource: str, state: str, cause: str,
                **details: Any) -> dict[str, Any]:
    return {"seq": seq, "time": now, "resource": resource, "state": state, "cause": cause,
            "tenant": tenant_of(resource), **details}


def alarm_event(seq: int, now: float, change: AlarmChange) -> dict[str, Any]:
    a = change.alarm
    return {"seq": seq, "time": now, "resource": a.resource,
            "state": f"alarm {a.kind} {change.change}", "cause": a.text, "tenant": a.tenant,
            "change": change.change, "alarm": a.to_doc()}


def matches(event: dict[str, Any], resource: str | None, since: float | None) -> bool:
    """`resource` selects it and what is under it (vm/acme selects vm/acme/web1)."""
    if since is not None and float(event.get("time", 0)) < since:
        return False
    if resource:
        name = str(event.get("resource", ""))
        return name == resource or name.startswith(resource.rstrip("/") + "/")
    return True


def query(events: Iterable[dict[str, Any]], resource: str | None = None,
          since: float | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Oldest first, the newest `limit` of those selected."""
    chosen = sorted((e for e in events if matches(e, resource, since)),
                    key=lambda e: int(e["seq"]))
    return chosen[-limit:] if limit else chosen
