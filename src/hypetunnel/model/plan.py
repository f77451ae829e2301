"""Plan: what applying an intent changes, object by object, like `terraform plan`.

The diff compares two *resolved* intents by identity (hypervisor name, tenant name,
tenant/network, tenant/vm), so list order never produces changes and the plan of re-applying the
same intent is empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from hypetunnel.model.intent import (
    VM,
    Fabric,
    Hypervisor,
    Intent,
    Network,
    Tenant,
    network_encapsulation,
    network_mtu,
)

Kind = Literal["fabric", "hypervisor", "tenant", "network", "vm"]
KIND_ORDER: tuple[Kind, ...] = ("fabric", "hypervisor", "tenant", "network", "vm")


@dataclass(frozen=True, slots=True)
class PlanItem:
    kind: Kind
    key: str  # "hv1", "acme", "acme/front", "acme/web1", "fabric"
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "key": self.key, "detail": self.detail}


@dataclass(slots=True)
class Plan:
    added: list[PlanItem] = field(default_factory=list)
    changed: list[PlanItem] = field(default_factory=list)
    removed: list[PlanItem] = field(default_factory=list)
    revision: int = 0  # store revision after the apply (or the current one for a dry run)
    applied: bool = False

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": [i.to_dict() for i in self.added],
            "changed": [i.to_dict() for i in self.changed],
            "removed": [i.to_dict() for i in self.removed],
            "revision": self.revision,
            "applied": self.applied,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """Inverse of to_dict (e.g. for a client rendering the API's answer)."""

        def items(name: str) -> list[PlanItem]:
            return [PlanItem(i["kind"], i["key"], i.get("detail", "")) for i in data.get(name, [])]

        return cls(items("added"), items("changed"), items("removed"),
                   int(data.get("revision", 0)), bool(data.get("applied", False)))

    def lines(self) -> list[tuple[str, PlanItem]]:
        """(sign, item) in the order a reader wants: additions/changes, then removals."""
        return ([("+", i) for i in self.added] + [("~", i) for i in self.changed]
                + [("-", i) for i in self.removed])

    def render(self) -> str:
        if self.empty:
            body = "No changes."
        else:
            body = "\n".join(f"{sign} {i.kind} {i.key}: {i.detail}" if i.detail
                             else f"{sign} {i.kind} {i.key}" for sign, i in self.lines())
            body += (f"\nPlan: {len(self.added)} to add, {len(self.changed)} to change, "
                     f"{len(self.removed)} to remove.")
        status = f"applied, revision {self.revision}" if self.applied else "not applied (dry run)"
        return f"{body}\n({status})"

    def __str__(self) -> str:
        return self.render()


# -- describing objects -------------------------------------------------------------------------
def _describe_hypervisor(h: Hypervisor) -> str:
    parts = [f"underlay {h.underlay_ip}" if h.underlay_ip else "underlay unassigned"]
    if h.ovsdb:
        parts.append(f"ovsdb {h.ovsdb}")
    if h.capacity is not None:
        parts.append(f"capacity {h.capacity.vcpus} vCPUs / {h.capacity.memory_mb} MB")
    if h.schedulable is False:
        parts.append("drained")
    return ", ".join(parts)


def _describe_tenant(t: Tenant, fabric: Fabric) -> str:
    if t.encapsulation:
        return f"encapsulation {t.encapsulation}"
    return f"encapsulation {fabric.encapsulation} (fabric default)"


def _describe_network(n: Network, t: Tenant, fabric: Fabric) -> str:
    encap = network_encapsulation(fabric, t)
    return f"{n.cidr} vni {n.vni} ({encap}, mtu {network_mtu(fabric, encap)})"


def _describe_vm(v: VM, vnis: Mapping[str, int | None]) -> str:
    return (f"{v.ip} {v.mac} on {v.hypervisor} (network {v.network}, vni {vnis.get(v.network)}, "
            f"{v.vcpus} vCPU{'s' if v.vcpus != 1 else ''} / {v.memory_mb} MB)")


def _changes(old: dict[str, Any], new: dict[str, Any], skip: Iterable[str] = ()) -> str:
    parts = []
    for name in new:
        if name in skip or old.get(name) == new[name]:
            continue
        parts.append(f"{name} {old.get(name)} -> {new[name]}")
    return ", ".join(parts)


@dataclass(slots=True)
class _Side:
    hypervisors: dict[str, Hypervisor]
    tenants: dict[str, Tenant]
    networks: dict[str, tuple[Network, Tenant]]
    vms: dict[str, tuple[VM, Tenant]]
    vnis: dict[str, dict[str, int | None]]  # tenant -> network name -> VNI

    @classmethod
    def of(cls, intent: Intent) -> _Side:
        side = cls({h.name: h for h in intent.hypervisors}, {}, {}, {}, {})
        for t in intent.tenants:
            side.tenants[t.name] = t
            side.vnis[t.name] = {n.name: n.vni for n in t.networks}
            side.networks.update({f"{t.name}/{n.name}": (n, t) for n in t.networks})
            side.vms.update({f"{t.name}/{v.name}": (v, t) for v in t.vms})
        return side


def diff(old: Intent, new: Intent, *, revision: int = 0, applied: bool = False) -> Plan:
    """The plan that turns resolved intent `old` into resolved intent `new`."""
    plan = Plan(revision=revision, applied=applied)
    a, b = _Side.of(old), _Side.of(new)

    if old.fabric != new.fabric:
        plan.changed.append(PlanItem("fabric", "fabric", _changes(
            old.fabric.model_dump(mode="json"), new.fabric.model_dump(mode="json"))))

    for name, h in b.hypervisors.items():
        if name not in a.hypervisors:
            plan.added.append(PlanItem("hypervisor", name, _describe_hypervisor(h)))
        elif a.hypervisors[name] is not h and a.hypervisors[name] != h:
            plan.changed.append(PlanItem("hypervisor", name, _changes(
                a.hypervisors[name].model_dump(mode="json"), h.model_dump(mode="json"))))

    for name, t in b.tenants.items():
        if name not in a.tenants:
            plan.added.append(PlanItem("tenant", name, _describe_tenant(t, new.fabric)))
        elif a.tenants[name].encapsulation != t.encapsulation:
            plan.changed.append(PlanItem("tenant", name, _changes(
                {"encapsulation": a.tenants[name].encapsulation},
                {"encapsulation": t.encapsulation})))

    for key, (n, t) in b.networks.items():
        if key not in a.networks:
            plan.added.append(PlanItem("network", key, _describe_network(n, t, new.fabric)))
        elif a.networks[key][0] is not n and a.networks[key][0] != n:
            plan.changed.append(PlanItem("network", key, _changes(
                a.networks[key][0].model_dump(mode="json"), n.model_dump(mode="json"))))

    for key, (v, t) in b.vms.items():
        if key not in a.vms:
            plan.added.append(PlanItem("vm", key, _describe_vm(v, b.vnis[t.name])))
        elif a.vms[key][0] is not v and a.vms[key][0] != v:
            plan.changed.append(PlanItem("vm", key, _changes(
                a.vms[key][0].model_dump(mode="json"), v.model_dump(mode="json"))))

    # Removals, innermost first: the order in which they are torn down.
    for key, (v, t) in a.vms.items():
        if key not in b.vms:
            plan.removed.append(PlanItem("vm", key, _describe_vm(v, a.vnis[t.name])))
    for key, (n, t) in a.networks.items():
        if key not in b.networks:
            plan.removed.append(PlanItem("network", key, _describe_network(n, t, old.fabric)))
    for name, t in a.tenants.items():
        if name not in b.tenants:
            plan.removed.append(PlanItem("tenant", name, _describe_tenant(t, old.fabric)))
    for name, h in a.hypervisors.items():
        if name not in b.hypervisors:
            plan.removed.append(PlanItem("hypervisor", name, _describe_hypervisor(h)))
    return plan
