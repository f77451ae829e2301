"""Resolve an intent: fill every omitted VNI, VM IP, MAC and hypervisor, stably.

Values the user wrote always win. An omitted value keeps what the previous resolved intent had
for the same name (tenant/network, tenant/vm) when it is still valid and free, so re-applying a
file that omits values changes nothing, across restarts too (the previous intent is stored).
Only what is left is freshly allocated, after all kept values are reserved, so a new object never
takes a value away from an existing one. Every step is one pass with dicts/heaps: linear-ish.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from typing import Any, TypeVar

from hypetunnel.errors import FieldError, IntentInvalid
from hypetunnel.model.intent import PROBE_VNI, VM, Hypervisor, Intent, Network, Tenant
from hypetunnel.model.placement import (
    NO_USAGE,
    Usage,
    fits,
    no_room,
    over_capacity,
    overflow,
    place,
    schedulable,
)
from hypetunnel.model.validate import reserved_reason

FIRST_VNI = 1000
MAC_SPACE = 1 << 40  # the five octets after the locally administered 02: prefix


def _vni_candidates(used: set[int]) -> Iterator[int]:
    vni = FIRST_VNI
    while vni < PROBE_VNI:
        if vni not in used:
            yield vni
        vni += 1


def _ip_candidates(cidr: IPv4Network, used: set[IPv4Address]) -> Iterator[IPv4Address]:
    # The first host is the gateway: VMs start at the second host.
    start = int(cidr.network_address) + 2
    end = int(cidr.broadcast_address)
    for n in range(start, end):
        ip = IPv4Address(n)
        if ip not in used:
            yield ip


def mac_for(vm_id: str, attempt: int = 0) -> str:
    """Deterministic locally administered unicast MAC (02:..) for a VM id, bumped by `attempt`."""
    base = int.from_bytes(hashlib.sha256(vm_id.encode()).digest()[:5], "big")
    n = (base + attempt) % MAC_SPACE
    return "02:" + ":".join(f"{(n >> s) & 0xFF:02x}" for s in range(32, -1, -8))


def _resolve_vnis(intent: Intent, prev: dict[str, Network]) -> dict[str, int]:
    """tenant/network -> VNI for every network."""
    result: dict[str, int] = {}
    used: set[int] = set()
    for t in intent.tenants:
        for n in t.networks:
            if n.vni is not None:
                result[f"{t.name}/{n.name}"] = n.vni
                used.add(n.vni)
    pending: list[str] = []
    for t in intent.tenants:
        for n in t.networks:
            key = f"{t.name}/{n.name}"
            if key in result:
                continue
            old = prev.get(key)
            if old is not None and old.vni is not None and old.vni not in used:
                result[key] = old.vni
                used.add(old.vni)
            else:
                pending.append(key)
    fresh = _vni_candidates(used)
    for key in pending:
        vni = next(fresh, None)
        if vni is None:
            raise IntentInvalid([FieldError(key, "no free VNI left")])
        result[key] = vni
    return result


class _VmAllocator:
    """Per-tenant IP/MAC bookkeeping; networks are keyed by name within the tenant."""

    def __init__(self, tenant: Tenant, ti: int, prev: dict[str, VM]) -> None:
        self.tenant = tenant
        self.ti = ti
        self.prev = prev
        self.cidrs = {n.name: n.cidr for n in tenant.networks}
        self.ips: dict[str, set[IPv4Address]] = {n.name: set() for n in tenant.networks}
        self.macs: dict[str, set[str]] = {n.name: set() for n in tenant.networks}
        self.ip: dict[str, IPv4Address] = {}
        self.mac: dict[str, str] = {}

    def _old(self, vm: VM) -> VM | None:
        return self.prev.get(f"{self.tenant.name}/{vm.name}")

    def run(self) -> None:
        vms = self.tenant.vms
        for vm in vms:  # 1. what the user wrote
            if vm.ip is not None:
                self.ip[vm.name] = vm.ip
                self.ips[vm.network].add(vm.ip)
            if vm.mac is not None:
                self.mac[vm.name] = vm.mac
                self.macs[vm.network].add(vm.mac)
        for vm in vms:  # 2. what was assigned before, when still valid and free
            old = self._old(vm)
            if old is None:
                continue
            if vm.ip is None and old.ip is not None and old.network == vm.network:
                ok = reserved_reason(old.ip, self.cidrs[vm.network]) is None
                if ok and old.ip not in self.ips[vm.network]:
                    self.ip[vm.name] = old.ip
                    self.ips[vm.network].add(old.ip)
            if vm.mac is None and old.mac is not None and old.mac not in self.macs[vm.network]:
                self.mac[vm.name] = old.mac
                self.macs[vm.network].add(old.mac)
        fresh: dict[str, Iterator[IPv4Address]] = {}
        for j, vm in enumerate(vms):  # 3. allocate the rest
            if vm.name not in self.ip:
                it = fresh.setdefault(vm.network, _ip_candidates(self.cidrs[vm.network],
                                                                  self.ips[vm.network]))
                ip = next(it, None)
                if ip is None:
                    raise IntentInvalid([FieldError(
                        f"tenants[{self.ti}].vms[{j}].ip",
                        f"network {vm.network!r} ({self.cidrs[vm.network]}) has no free address",
                    )])
                self.ip[vm.name] = ip
                self.ips[vm.network].add(ip)
            if vm.name not in self.mac:
                used = self.macs[vm.network]
                attempt = 0
                mac = mac_for(f"{self.tenant.name}/{vm.name}")
                while mac in used:
                    attempt += 1
                    mac = mac_for(f"{self.tenant.name}/{vm.name}", attempt)
                self.mac[vm.name] = mac
                used.add(mac)


def _place(intent: Intent, hypervisors: list[Hypervisor], prev: dict[str, VM]) -> dict[str, str]:
    """tenant/vm -> hypervisor: written, else kept, else chosen by the fabric's placement policy.

    Capacity and drains are checked here because they depend on what is stored: VMs already on
    a hypervisor are counted first, so the VM that arrives and overflows it is the one named
    (or the hypervisor's capacity, when what stays there no longer fits), and a drained
    hypervisor keeps the VMs it has but takes no new ones, written or placed.
    """
    by_name = {h.name: h for h in hypervisors}
    result: dict[str, str] = {}
    staying: list[tuple[str, VM]] = []  # (hypervisor, vm): stored there, same size
    arriving: list[tuple[str, str, VM, bool]] = []  # (hypervisor, intent path, vm, is new there)
    pending: list[tuple[str, str, VM]] = []  # (vm key, intent path, vm)
    for ti, t in enumerate(intent.tenants):
        for j, vm in enumerate(t.vms):
            key = f"{t.name}/{vm.name}"
            path = f"tenants[{ti}].vms[{j}].hypervisor"
            old = prev.get(key)
            hv = vm.hypervisor
            if hv is None and old is not None and old.hypervisor in by_name:
                hv = old.hypervisor
            if hv is None:
                pending.append((key, path, vm))
                continue
            result[key] = hv
            if hv not in by_name:
                continue  # unknown: validate_intent reports it
            there = old is not None and old.hypervisor == hv
            if there and old is not None and (old.vcpus, old.memory_mb) == (vm.vcpus, vm.memory_mb):
                staying.append((hv, vm))
            else:  # a resized VM is counted after the others, so it is the one named
                arriving.append((hv, path, vm, not there))

    errors: list[FieldError] = []
    usage: dict[str, Usage] = {}
    for hv, vm in staying:
        usage[hv] = usage.get(hv, NO_USAGE).plus(vm)
    for i, h in enumerate(hypervisors):
        u = usage.get(h.name, NO_USAGE)
        if h.capacity is not None and over_capacity(h.capacity, u):
            errors.append(FieldError(
                f"hypervisors[{i}].capacity",
                f"{h.capacity.vcpus} vCPUs / {h.capacity.memory_mb} MB is less than the VMs "
                f"already on {h.name} use: {u.vcpus} vCPUs / {u.memory_mb} MB"))
    for hv, path, vm, new_there in arriving:
        target = by_name[hv]
        before = usage.get(hv, NO_USAGE)
        if new_there and not schedulable(target):
            errors.append(FieldError(path, f"hypervisor {hv} is drained (schedulable: false): "
                                           "it keeps its VMs but takes no new ones"))
        elif not fits(vm, target, before):
            errors.append(FieldError(path, overflow(vm, target, before)))
        else:
            usage[hv] = before.plus(vm)
    if errors:
        raise IntentInvalid(errors)

    for key, path, vm in pending:
        chosen = place(vm, hypervisors, usage, intent.fabric.placement)
        if chosen is None:
            errors.append(FieldError(path, no_room(vm, hypervisors, usage)))
            continue
        result[key] = chosen
        usage[chosen] = usage.get(chosen, NO_USAGE).plus(vm)
    if errors:
        raise IntentInvalid(errors)
    return result


def _keep_enlistment(hv: Hypervisor, old: Hypervisor | None) -> Hypervisor:
    # underlay_ip and ovsdb are often filled in at enlistment (lab, PUT /hypervisors), not in the
    # user's file: a file that omits them must not erase them.
    if old is None:
        return hv
    update: dict[str, object] = {}
    if hv.underlay_ip is None and old.underlay_ip is not None:
        update["underlay_ip"] = old.underlay_ip
    if hv.ovsdb is None and old.ovsdb is not None:
        update["ovsdb"] = old.ovsdb
    if hv.datapath_type is None and old.datapath_type is not None:
        update["datapath_type"] = old.datapath_type
    # A drain (PUT /hypervisors/{name} with schedulable false) must survive re-applying a file
    # that does not mention it, and so must a capacity set through the API: a file cannot lift
    # a limit by omission (write a larger one).
    if hv.capacity is None and old.capacity is not None:
        update["capacity"] = old.capacity
    if hv.schedulable is None and old.schedulable is not None:
        update["schedulable"] = old.schedulable
    return hv.model_copy(update=update) if update else hv


Obj = TypeVar("Obj", Network, VM)


def _filled(obj: Obj, values: dict[str, Any], old: Obj | None) -> Obj:
    """`obj` with `values` set; the previous object itself when that is what it amounts to.
    Reusing unchanged objects keeps re-applies cheap: later diffs short-cut on identity."""
    fields = type(obj).model_fields
    if old is not None and all(
            getattr(old, k) == (values[k] if k in values else getattr(obj, k)) for k in fields):
        return old
    if all(getattr(obj, k) == v for k, v in values.items()):
        return obj
    return obj.model_copy(update=values)


def resolve(intent: Intent, previous: Intent | None = None) -> Intent:
    """A complete copy of a *valid* `intent` (see validate_intent): every VNI, VM ip/mac/hypervisor
    set, kept from `previous` where possible. Raises IntentInvalid when a space is exhausted."""
    prev_nets: dict[str, Network] = {}
    prev_vms: dict[str, VM] = {}
    prev_hvs: dict[str, Hypervisor] = {}
    if previous is not None:
        prev_hvs = {h.name: h for h in previous.hypervisors}
        for t in previous.tenants:
            prev_nets.update({f"{t.name}/{n.name}": n for n in t.networks})
            prev_vms.update({f"{t.name}/{v.name}": v for v in t.vms})

    hypervisors = [_keep_enlistment(h, prev_hvs.get(h.name)) for h in intent.hypervisors]
    vnis = _resolve_vnis(intent, prev_nets)
    placement = _place(intent, hypervisors, prev_vms)
    tenants: list[Tenant] = []
    for ti, t in enumerate(intent.tenants):
        alloc = _VmAllocator(t, ti, prev_vms)
        alloc.run()
        networks = [
            _filled(n, {"vni": vnis[f"{t.name}/{n.name}"]}, prev_nets.get(f"{t.name}/{n.name}"))
            for n in t.networks
        ]
        vms = [
            _filled(v, {
                "ip": alloc.ip[v.name],
                "mac": alloc.mac[v.name],
                "hypervisor": placement[f"{t.name}/{v.name}"],
            }, prev_vms.get(f"{t.name}/{v.name}"))
            for v in t.vms
        ]
        tenants.append(t.model_copy(update={"networks": networks, "vms": vms}))
    return intent.model_copy(update={"hypervisors": hypervisors, "tenants": tenants})
