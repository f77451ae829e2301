"""Resolved intent <-> store documents, one document per object.

Keys: "fabric", "hypervisor/<name>", "tenant/<name>" (tenant fields only),
"network/<tenant>/<name>", "vm/<tenant>/<name>". Other prefixes (e.g. "binding/<tenant>/<vm>"
for observed state) belong to other writers: decoding ignores them and intent changes never
delete them. Lists come back sorted by name, so the intent held in memory is
`canonical(resolved)`, exactly what a restart loads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from hypetunnel.model.intent import VM, Fabric, Hypervisor, Intent, Network, Tenant

INTENT_PREFIXES = ("fabric", "hypervisor/", "tenant/", "network/", "vm/")


def is_intent_key(key: str) -> bool:
    return key == "fabric" or key.startswith(INTENT_PREFIXES[1:])


def canonical(intent: Intent) -> Intent:
    """The same intent with every list sorted by name (the order the store gives back)."""
    tenants = [
        t.model_copy(update={
            "networks": sorted(t.networks, key=lambda n: n.name),
            "vms": sorted(t.vms, key=lambda v: v.name),
        })
        for t in sorted(intent.tenants, key=lambda t: t.name)
    ]
    return intent.model_copy(update={
        "hypervisors": sorted(intent.hypervisors, key=lambda h: h.name),
        "tenants": tenants,
    })


def intent_to_items(intent: Intent) -> dict[str, dict[str, Any]]:
    items: dict[str, dict[str, Any]] = {"fabric": intent.fabric.model_dump(mode="json")}
    for h in intent.hypervisors:
        items[f"hypervisor/{h.name}"] = h.model_dump(mode="json")
    for t in intent.tenants:
        items[f"tenant/{t.name}"] = t.model_dump(mode="json", exclude={"networks", "vms"})
        for n in t.networks:
            items[f"network/{t.name}/{n.name}"] = n.model_dump(mode="json")
        for v in t.vms:
            items[f"vm/{t.name}/{v.name}"] = v.model_dump(mode="json")
    return items


def items_to_intent(items: Mapping[str, Mapping[str, Any]]) -> Intent:
    """Decode the intent documents of a snapshot (an empty store gives the empty intent)."""
    fabric = Fabric.model_validate(items["fabric"]) if "fabric" in items else Fabric()
    hypervisors: list[Hypervisor] = []
    tenants: dict[str, dict[str, Any]] = {}
    networks: dict[str, list[Network]] = {}
    vms: dict[str, list[VM]] = {}
    for key in sorted(items):
        kind, _, rest = key.partition("/")
        value = items[key]
        if kind == "hypervisor":
            hypervisors.append(Hypervisor.model_validate(value))
        elif kind == "tenant":
            tenants[rest] = dict(value)
        elif kind == "network":
            tenant, _, _ = rest.partition("/")
            networks.setdefault(tenant, []).append(Network.model_validate(value))
        elif kind == "vm":
            tenant, _, _ = rest.partition("/")
            vms.setdefault(tenant, []).append(VM.model_validate(value))
    return canonical(Intent(
        fabric=fabric,
        hypervisors=hypervisors,
        tenants=[
            Tenant.model_validate({**doc, "networks": [], "vms": []}).model_copy(
                update={"networks": networks.get(name, []), "vms": vms.get(name, [])})
            for name, doc in tenants.items()
        ],
    ))


_TENANT_FIELDS = tuple(k for k in Tenant.model_fields if k not in ("networks", "vms"))


def _same(a: BaseModel | None, b: BaseModel, fields: Iterable[str] | None = None) -> bool:
    if a is b:
        return True
    if a is None:
        return False
    if fields is None:
        return a == b
    return all(getattr(a, k) == getattr(b, k) for k in fields)


def intent_changes(
    old: Intent, new: Intent, *, put_fabric: bool = False
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(puts, deletes) turning the stored `old` into `new`, serializing only changed objects
    (unchanged ones are usually the very same objects, see allocate.resolve)."""
    puts: dict[str, dict[str, Any]] = {}
    if put_fabric or old.fabric != new.fabric:
        puts["fabric"] = new.fabric.model_dump(mode="json")
    stale: set[str] = set()
    current: dict[str, BaseModel] = {}
    for h in old.hypervisors:
        current[f"hypervisor/{h.name}"] = h
    for t in old.tenants:
        current[f"tenant/{t.name}"] = t
        current.update({f"network/{t.name}/{n.name}": n for n in t.networks})
        current.update({f"vm/{t.name}/{v.name}": v for v in t.vms})
    stale.update(current)

    def put(key: str, obj: BaseModel, fields: Iterable[str] | None = None,
            exclude: set[str] | None = None) -> None:
        stale.discard(key)
        if not _same(current.get(key), obj, fields):
            puts[key] = obj.model_dump(mode="json", exclude=exclude)

    for h in new.hypervisors:
        put(f"hypervisor/{h.name}", h)
    for t in new.tenants:
        put(f"tenant/{t.name}", t, _TENANT_FIELDS, {"networks", "vms"})
        for n in t.networks:
            put(f"network/{t.name}/{n.name}", n)
        for v in t.vms:
            put(f"vm/{t.name}/{v.name}", v)
    return puts, sorted(stale)


def item_changes(
    old: Mapping[str, Mapping[str, Any]], new: Mapping[str, dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(puts, deletes) turning the intent documents `old` into `new`; other keys untouched."""
    puts = {k: v for k, v in new.items() if old.get(k) != v}
    deletes = [k for k in old if is_intent_key(k) and k not in new]
    return puts, deletes
