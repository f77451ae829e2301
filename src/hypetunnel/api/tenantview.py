"""What a tenant role sees of an answer: its own tenant only, and no provider-only fact.

Provider-only facts are where things run: hypervisor names, underlay addresses, which
hypervisor a VM is on (`hypervisor`, `bound`), tunnels between hypervisors. Each function takes
an answer as the provider sees it (JSON) and returns the tenant's view of it; the policy table
(api/policy.py) names the function for each route.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from hypetunnel.api.auth import Principal
from hypetunnel.model.intent import Intent

View = Callable[[Any, Principal, Intent], Any]
PLACEMENT_FIELDS = ("hypervisor", "bound")
HIDDEN = "(provider)"


def _own(principal: Principal, vm_id: object) -> bool:
    return isinstance(vm_id, str) and vm_id.partition("/")[0] == principal.tenant


def hide_names(text: str, names: Iterable[str]) -> str:
    """`text` with every hypervisor name in it replaced (plan details, verdicts)."""
    for name in sorted(names, key=len, reverse=True):
        text = re.sub(rf"(?<![A-Za-z0-9-]){re.escape(name)}(?![A-Za-z0-9-])", HIDDEN, text)
    return text


def vm(data: Any, _: Principal, __: Intent) -> Any:
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if k not in PLACEMENT_FIELDS}
    return data


def vms(data: Any, principal: Principal, intent: Intent) -> Any:
    return [vm(v, principal, intent) for v in data] if isinstance(data, list) else data


def tenant(data: Any, principal: Principal, intent: Intent) -> Any:
    if isinstance(data, dict) and isinstance(data.get("vms"), list):
        return {**data, "vms": vms(data["vms"], principal, intent)}
    return data


def tenants(data: Any, principal: Principal, intent: Intent) -> Any:
    if not isinstance(data, list):
        return data
    return [tenant(t, principal, intent) for t in data
            if isinstance(t, dict) and t.get("name") == principal.tenant]


def plan(data: Any, principal: Principal, intent: Intent) -> Any:
    """A write's plan: only the tenant's own items, with hypervisor names hidden."""
    if not isinstance(data, dict):
        return data
    names = [h.name for h in intent.hypervisors]

    def keep(item: Any) -> bool:
        key = item.get("key", "") if isinstance(item, dict) else ""
        return bool(key == principal.tenant or _own(principal, key))

    out = dict(data)
    for side in ("added", "changed", "removed"):
        out[side] = [{**i, "detail": hide_names(str(i.get("detail", "")), names)}
                     for i in data.get(side, []) if keep(i)]
    return out


MOVE_FIELDS = ("vm", "seq", "kind", "start", "end", "interruption_ms", "result")


def moves(data: Any, principal: Principal, _: Intent) -> Any:
    """Its own VMs' moves, without where from and where to."""
    if not isinstance(data, list):
        return data
    return [{k: m.get(k) for k in MOVE_FIELDS} for m in data
            if isinstance(m, dict) and _own(principal, m.get("vm"))]


def trace(data: Any, principal: Principal, intent: Intent) -> Any:
    """Which of its VMs a frame reaches, not over which hypervisors and tunnels."""
    if not isinstance(data, dict):
        return data
    names = [h.name for h in intent.hypervisors]
    deliveries = [{"vm": d.get("vm"), "frame": _inner(d.get("frame"))}
                  for d in data.get("deliveries", []) if isinstance(d, dict)]
    verdict = ", ".join(f"delivered to {d['vm']}" for d in deliveries) or "dropped"
    return {"src": data.get("src"), "dst": data.get("dst"), "kind": data.get("kind"),
            "frame": _inner(data.get("frame")), "deliveries": deliveries,
            "verdict": hide_names(verdict, names)}


def _inner(frame: Any) -> Any:
    # Tunnel metadata (tunnel_id, tun_dst...) tells which underlay carried the frame.
    if isinstance(frame, dict):
        return {k: v for k, v in frame.items() if not k.startswith("tun")}
    return frame


def _own_record(principal: Principal, record: Any) -> bool:
    return isinstance(record, dict) and record.get("tenant") == principal.tenant


def _hidden(record: dict[str, Any], names: list[str]) -> dict[str, Any]:
    return {k: hide_names(v, names) if isinstance(v, str) else v for k, v in record.items()}


def alarms(data: Any, principal: Principal, intent: Intent) -> Any:
    """Alarms on its own resources (its VMs, its networks), hypervisor names hidden."""
    if not isinstance(data, list):
        return data
    names = [h.name for h in intent.hypervisors]
    return [_hidden(a, names) for a in data if _own_record(principal, a)]


def usage(data: Any, principal: Principal, _: Intent) -> Any:
    """Usage rows of its own tenant only."""
    if not isinstance(data, list):
        return data
    return [r for r in data if isinstance(r, dict) and r.get("tenant") == principal.tenant]


def events(data: Any, principal: Principal, intent: Intent) -> Any:
    """State-log records of its own resources, hypervisor names hidden (also in an alarm)."""
    if not isinstance(data, list):
        return data
    names = [h.name for h in intent.hypervisors]
    out = []
    for e in data:
        if not _own_record(principal, e):
            continue
        seen = _hidden(e, names)
        if isinstance(e.get("alarm"), dict):
            seen["alarm"] = _hidden(e["alarm"], names)
        out.append(seen)
    return out
