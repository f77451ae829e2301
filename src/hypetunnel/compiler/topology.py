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

    def __hash__(self) -> int:
        # Equal views have equal ids, and a str caches its hash: the compiler's memos look a
        # VM up on every flow they return, where the generated hash would build a tuple.
        return hash(self.id)


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
        self.secondary: dict[str, str] = {}  # vm id -> the other live port during a move
        self.expected: dict[str, str] = {}  # vm id -> hypervisor the intent places it on
        self._contrib: dict[str, tuple[int, tuple[str, ...]]] = {}  # vm id -> (vni, its hosts)
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
        if old is not None:
            self.members[old.vni].discard(vm.id)
        self.vms[vm.id] = vm
        self.members[vm.vni].add(vm.id)
        self._recount(vm.id)

    def remove_vm(self, vm_id: str) -> None:
        vm = self.vms.pop(vm_id, None)
        if vm is not None:
            self.members[vm.vni].discard(vm_id)
        self.location.pop(vm_id, None)
        self.secondary.pop(vm_id, None)
        self.expected.pop(vm_id, None)
        self._recount(vm_id)

    def bind(self, vm_id: str, hypervisor: str | None) -> None:
        """Record where a VM's port is (observed), or that it is nowhere (None)."""
        if self.location.get(vm_id) == hypervisor:
            return
        if hypervisor is None:
            self.location.pop(vm_id, None)
        else:
            self.location[vm_id] = hypervisor
        self._recount(vm_id)

    def set_secondary(self, vm_id: str, hypervisor: str | None) -> None:
        """A second live location during a move (make-before-break): frames to the VM go to
        both, and it may send from both, until the old port is gone."""
        if self.secondary.get(vm_id) == hypervisor:
            return
        if hypervisor is None:
            self.secondary.pop(vm_id, None)
        else:
            self.secondary[vm_id] = hypervisor
        self._recount(vm_id)

    def expect(self, vm_id: str, hypervisor: str | None) -> None:
        """Where the VM is meant to run: that hypervisor is prepared as a host of the VM's
        network (tunnels, flood lists) before the VM's port appears there."""
        if self.expected.get(vm_id) == hypervisor:
            return
        if hypervisor is None:
            self.expected.pop(vm_id, None)
        else:
            self.expected[vm_id] = hypervisor
        self._recount(vm_id)

    def locations(self, vm_id: str) -> list[str]:
        """Where the VM's port is live: the primary location, then a move's other end."""
        out = [h for h in (self.location.get(vm_id), self.secondary.get(vm_id)) if h]
        return list(dict.fromkeys(out))

    def _recount(self, vm_id: str) -> None:
        """Re-derive which hypervisors host this VM's network because of this VM. A VM that
        is nowhere (not bound, not expected) is in no flow, so its changes touch nothing."""
        old_vni, old = self._contrib.pop(vm_id, (None, ()))
        if old_vni is not None:
            self._touch_network(old_vni)  # the old hosts lose or re-point the MAC
            for h in old:
                self._host_count(old_vni, h, -1)
        vm = self.vms.get(vm_id)
        if vm is None:
            return
        new = tuple(dict.fromkeys(h for h in (self.location.get(vm_id),
                                              self.secondary.get(vm_id),
                                              self.expected.get(vm_id)) if h))
        if not new:
            return
        for h in new:
            self._host_count(vm.vni, h, +1)
        self._contrib[vm_id] = (vm.vni, new)
        self._touch_network(vm.vni)

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
