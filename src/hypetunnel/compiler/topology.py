"""An indexed, incrementally updated view of intent + observed bindings, for the compiler.

Each mutation records which (hypervisor, VNI) slices of the desired state it invalidates, so the
compiler recomputes only what a change touches: control-plane work proportional to the change.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NetworkView:
    vni: int
    tenant: str
    name: str
    encapsulation: str


@dataclass(frozen=True, slots=True)
class VmView:
    id: str  # "tenant/vm", the iface-id on the switch port
    vni: int
    mac: str
    ip: str


@dataclass(frozen=True, slots=True)
class HypervisorView:
    name: str
    underlay_ip: str | None


class Topology:
    def __init__(self) -> None:
        self.hypervisors: dict[str, HypervisorView] = {}
        self.networks: dict[int, NetworkView] = {}
        self.vms: dict[str, VmView] = {}
        self.location: dict[str, str] = {}  # vm id -> hypervisor where its port is bound
        self.members: dict[int, set[str]] = defaultdict(set)  # vni -> vm ids
        # vni -> hypervisor -> number of bound VMs of that network there
        self.hosts: dict[int, dict[str, int]] = defaultdict(dict)
        self.networks_on: dict[str, set[int]] = defaultdict(set)  # hypervisor -> vnis hosted
        self.dirty: set[tuple[str, int]] = set()
        self.dirty_switches: set[str] = set()  # every slice of these switches is stale

    # -- queries -------------------------------------------------------------------------
    def hosts_of(self, vni: int) -> list[str]:
        return sorted(self.hosts.get(vni, {}))

    def bound_members(self, vni: int) -> list[VmView]:
        return [self.vms[v] for v in sorted(self.members.get(vni, ())) if v in self.location]

    # -- invalidation ----------------------------------------------------------------------
    def _touch_network(self, vni: int) -> None:
        for hv in self.hosts.get(vni, {}):
            self.dirty.add((hv, vni))

    def take_dirty(self) -> tuple[set[tuple[str, int]], set[str]]:
        dirty, switches = self.dirty, self.dirty_switches
        self.dirty, self.dirty_switches = set(), set()
        return dirty, switches

    # -- mutations -------------------------------------------------------------------------
    def set_hypervisor(self, hv: HypervisorView) -> None:
        old = self.hypervisors.get(hv.name)
        if old == hv:
            return
        self.hypervisors[hv.name] = hv
        if old is not None and old.underlay_ip != hv.underlay_ip:
            # Tunnel endpoints changed: every network that hypervisor shares is stale.
            for vni in self.networks_on.get(hv.name, ()):
                self._touch_network(vni)
        self.dirty_switches.add(hv.name)

    def remove_hypervisor(self, name: str) -> None:
        if self.hypervisors.pop(name, None) is not None:
            for vni in self.networks_on.get(name, ()):
                self._touch_network(vni)
            self.dirty_switches.add(name)

    def set_network(self, net: NetworkView) -> None:
        if self.networks.get(net.vni) == net:
            return
        self.networks[net.vni] = net
        self._touch_network(net.vni)

    def remove_network(self, vni: int) -> None:
        for vm_id in list(self.members.get(vni, ())):
            self.remove_vm(vm_id)
        self._touch_network(vni)
        self.networks.pop(vni, None)
        self.members.pop(vni, None)

    def set_vm(self, vm: VmView) -> None:
        old = self.vms.get(vm.id)
        if old == vm:
            return
        hv = self.location.get(vm.id)
        if old is not None:
            self.remove_vm(vm.id)  # a changed VM is re-added: simplest correct invalidation
        else:
            self.location.pop(vm.id, None)  # bound before its intent arrived: count it below
        self.vms[vm.id] = vm
        self.members[vm.vni].add(vm.id)
        if hv is not None:
            self.bind(vm.id, hv)

    def remove_vm(self, vm_id: str) -> None:
        self.bind(vm_id, None)
        vm = self.vms.pop(vm_id, None)
        if vm is not None:
            self.members[vm.vni].discard(vm_id)

    def bind(self, vm_id: str, hypervisor: str | None) -> None:
        """Record where a VM's port is (observed), or that it is nowhere (None)."""
        old = self.location.get(vm_id)
        if old == hypervisor:
            return
        vm = self.vms.get(vm_id)
        if vm is not None:
            self._touch_network(vm.vni)  # the old set of hosts: they lose or re-point the MAC
        if old is not None:
            del self.location[vm_id]
            if vm is not None:
                self._host_count(vm.vni, old, -1)
        if hypervisor is not None:
            self.location[vm_id] = hypervisor
            if vm is not None:
                self._host_count(vm.vni, hypervisor, +1)
        if vm is not None:
            self._touch_network(vm.vni)  # the new set of hosts
            if old is not None:
                self.dirty.add((old, vm.vni))

    def _host_count(self, vni: int, hv: str, delta: int) -> None:
        counts = self.hosts[vni]
        n = counts.get(hv, 0) + delta
        if n > 0:
            counts[hv] = n
            self.networks_on[hv].add(vni)
        else:
            counts.pop(hv, None)
            self.networks_on[hv].discard(vni)
            self.dirty.add((hv, vni))
