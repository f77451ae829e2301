"""The incremental compiler: topology + observed ports -> desired state per switch.

Desired flows are kept per (hypervisor, VNI) slice; a change recomputes only the slices the
topology marked dirty, so the cost of a VM change depends on its network, not on the fabric.
A slice is a tuple of distinct flows in a deterministic order (a tuple is a quarter of the size
of a frozenset and needs no hashing to build; a fabric holds ~10,000 flows per 1,000 VMs).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache

from hypetunnel.compiler.flows import Flow, Slice, clear_pairs
from hypetunnel.compiler.gcpolicy import BULK_SLICES, long_lived_allocations, settle
from hypetunnel.compiler.pipeline import base_flows, clear_memos, network_slice
from hypetunnel.compiler.topology import Topology, VmView
from hypetunnel.compiler.tunnels import TunnelPort, tunnel_port, tunnel_port_name

_BASE: Slice = tuple(sorted(base_flows(), key=lambda f: (f.table, f.priority)))
BASE_SLICE = -1  # slice key of the flows every switch has (VNIs are positive)
# Port names are looked up for every remote host of every slice: parse each address once.
_tunnel_name = lru_cache(maxsize=1 << 16)(tunnel_port_name)
_tunnel_port = lru_cache(maxsize=1 << 16)(tunnel_port)


def clear_caches() -> None:
    """Empty every memo and interning table of the compiler: what a fresh process starts with.
    Only for measurements; compiled state keeps working (it just stops sharing with new flows)."""
    clear_memos()
    clear_pairs()
    _tunnel_name.cache_clear()
    _tunnel_port.cache_clear()


Members = list[tuple[VmView, tuple[str, ...]]]  # a network's VMs, each with its live ports' hosts


def _changed(old: Mapping[str, int], new: Mapping[str, int]) -> set[str]:
    """Keys added, removed or renumbered between two port maps."""
    return {k for k, _ in old.items() ^ new.items()}  # set operations on the items, in C


@dataclass(frozen=True, slots=True)
class SwitchDesired:
    hypervisor: str
    tunnels: frozenset[TunnelPort]
    flows: frozenset[Flow]


class FabricCompiler:
    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self._ofports: dict[str, dict[str, int]] = {}  # hypervisor -> port name -> ofport
        self._vm_ports: dict[str, dict[str, int]] = {}  # hypervisor -> vm id -> ofport
        self._slices: dict[str, dict[int, Slice]] = {}
        # Tunnels are kept per slice too, so a change costs its slices, not the switch's.
        self._slice_tunnels: dict[str, dict[int, tuple[TunnelPort, ...]]] = {}
        # Indexes of _slice_tunnels, kept with it slice by slice (_set_slice_tunnels), so that
        # neither tunnels(hv) nor a port observation walks every slice of the switch:
        # hv -> tunnel -> number of slices using it (its keys are tunnels(hv)), and
        # hv -> tunnel port name -> VNIs of the slices that use a tunnel of that name.
        self._tunnel_refs: dict[str, dict[TunnelPort, int]] = {}
        self._tunnel_users: dict[str, dict[str, set[int]]] = {}
        # hv -> frozenset of _tunnel_refs[hv]: dropped only when that key set changes (a move
        # changes some slices' tunnels on every host of the network, rarely the switch's set).
        self._tunnel_union: dict[str, frozenset[TunnelPort]] = {}
        # Slices made stale by port observations, kept apart from the topology's dirty sets:
        # ports never change which tunnels a switch needs, so they must not void that cache.
        self._stale: set[tuple[str, int]] = set()
        self._stale_switches: set[str] = set()
        # Change journal, so a reconciler diffs only what changed: hv -> VNI -> generation of
        # the slice's last change, in generation order (an entry moves to the end on change).
        # One entry per VNI the switch ever hosted, so it is bounded without any consumer.
        self.generation = 0
        self._changed: dict[str, dict[int, int]] = {}

    # -- observed state ------------------------------------------------------------------
    def set_ports(self, hypervisor: str, ofports: Mapping[str, int],
                  vm_ports: Mapping[str, int]) -> None:
        """OpenFlow port numbers on a switch, by port name and by bound VM id."""
        old_ports = self._ofports.get(hypervisor)
        old_vms = self._vm_ports.get(hypervisor)
        # Equality is a C loop that stops at a length difference; the key diffs below cost
        # ~10x more, and a tunnel port change (most reports during a move) leaves vm_ports as is.
        same_ports, same_vms = old_ports == ofports, old_vms == vm_ports
        if same_ports and same_vms:
            return
        if old_ports is None or old_vms is None:
            self._ofports[hypervisor] = dict(ofports)
            self._vm_ports[hypervisor] = dict(vm_ports)
            self._stale_switches.add(hypervisor)
            return
        # Only the slices that refer to a changed port are stale (a VM plug must not rebuild
        # the whole switch): a VM's port is used by its network's slice, a tunnel port by the
        # slices of the networks of that encapsulation with a host behind that tunnel.
        if not same_vms:
            self._vm_ports[hypervisor] = dict(vm_ports)
            topo = self.topology
            for vid in _changed(old_vms, vm_ports):
                vm = topo.vms.get(vid)
                if vm is not None:
                    self._stale.add((hypervisor, vm.vni))
        if same_ports:
            return
        self._ofports[hypervisor] = dict(ofports)
        # Slices not dirty yet have current tunnel sets, so this is exact for them.
        users = self._tunnel_users.get(hypervisor)
        if users:
            for name in _changed(old_ports, ofports):
                vnis = users.get(name)
                if vnis:
                    self._stale.update((hypervisor, vni) for vni in vnis)

    # -- compilation ---------------------------------------------------------------------
    def recompute(self) -> set[str]:
        """Rebuild every dirty slice; return the hypervisors whose desired state may differ."""
        topo = self.topology
        dirty, switches = topo.take_dirty()
        dirty |= self._stale
        switches |= self._stale_switches
        self._stale, self._stale_switches = set(), set()
        touched = set(switches)
        for hv in switches:
            # Every slice is rebuilt; the old ones are kept until then so that a slice that
            # comes out the same is not reported as changed.
            dirty.update((hv, vni) for vni in self._slices.get(hv, ()))
            self._slice_tunnels[hv] = {}
            self._tunnel_refs[hv] = {}
            self._tunnel_users[hv] = {}
            self._tunnel_union.pop(hv, None)
            for vni in topo.networks_on.get(hv, ()):
                dirty.add((hv, vni))
        if dirty:
            self.generation += 1
        if len(dirty) >= BULK_SLICES:
            with long_lived_allocations():
                self._rebuild(dirty, touched)
        elif dirty:
            self._rebuild(dirty, touched)
            settle()  # what the change built is long-lived: out of the collector's way
        return touched

    def _rebuild(self, dirty: set[tuple[str, int]], touched: set[str]) -> None:
        topo = self.topology
        gen = self.generation
        # What every host of a network shares, derived once per network and rebuild.
        members: dict[int, Members] = {}
        remotes: dict[int, list[tuple[str, TunnelPort]]] = {}
        for hv, vni in dirty:
            touched.add(hv)
            flows = self._slice(hv, vni, members)
            slices = self._slices.setdefault(hv, {})
            old = slices.get(vni)
            if old != (flows or None):  # a slice rebuilt the same is no change for anyone
                if flows:
                    slices[vni] = flows
                else:
                    del slices[vni]
                journal = self._changed.setdefault(hv, {})
                journal.pop(vni, None)
                journal[vni] = gen
            hosted = vni in topo.networks_on.get(hv, ())
            self._set_slice_tunnels(hv, vni, self._tunnels_of(hv, vni, remotes) if hosted else ())

    def _set_slice_tunnels(self, hv: str, vni: int, tunnels: tuple[TunnelPort, ...]) -> None:
        """Record one slice's tunnels, and keep the switch's tunnel indexes in step with it."""
        per_slice = self._slice_tunnels.setdefault(hv, {})
        old = per_slice.get(vni, ())
        if tunnels == old:
            return
        if tunnels:
            per_slice[vni] = tunnels
        else:
            del per_slice[vni]
        refs = self._tunnel_refs.setdefault(hv, {})
        for t in old:
            n = refs[t] - 1
            if n:
                refs[t] = n
            else:
                del refs[t]
                self._tunnel_union.pop(hv, None)
        for t in tunnels:
            n = refs.get(t, 0)
            refs[t] = n + 1
            if not n:
                self._tunnel_union.pop(hv, None)
        # By name (two tunnels may share one if two hypervisors claim one underlay address).
        users = self._tunnel_users.setdefault(hv, {})
        old_names = {t.name for t in old}
        new_names = {t.name for t in tunnels}
        for name in old_names - new_names:
            vnis = users[name]
            vnis.discard(vni)
            if not vnis:
                del users[name]
        for name in new_names - old_names:
            users.setdefault(name, set()).add(vni)

    def _tunnels_of(self, hv: str, vni: int,
                    cache: dict[int, list[tuple[str, TunnelPort]]] | None = None
                    ) -> tuple[TunnelPort, ...]:
        """Tunnels from hv to the other hosts of one network (in its encapsulation)."""
        ends = None if cache is None else cache.get(vni)
        if ends is None:
            ends = self._tunnel_ends(vni)
            if cache is not None:
                cache[vni] = ends
        return tuple(t for remote, t in ends if remote != hv)

    def _tunnel_ends(self, vni: int) -> list[tuple[str, TunnelPort]]:
        """(host, the tunnel port that reaches it) for every reachable host of a network."""
        topo = self.topology
        net = topo.networks.get(vni)
        if net is None:
            return []
        out = []
        for remote in topo.hosts.get(vni, {}):
            r = topo.hypervisors.get(remote)
            if r is not None and r.underlay_ip is not None:
                out.append((remote, _tunnel_port(net.encapsulation, r.underlay_ip, remote)))
        return out

    def _members(self, vni: int) -> Members:
        """The network's bound VMs (by id), each with where its port is live."""
        topo = self.topology
        location, secondary, vms = topo.location, topo.secondary, topo.vms
        out: Members = []
        for vid in sorted(topo.members.get(vni, ())):
            here = location.get(vid)
            if here is None:
                continue
            other = secondary.get(vid)
            out.append((vms[vid], (here,) if other is None or other == here else (here, other)))
        return out

    def _slice(self, hv: str, vni: int, members: dict[int, Members]) -> Slice:
        topo = self.topology
        net = topo.networks.get(vni)
        if net is None or hv not in topo.hypervisors or vni not in topo.networks_on.get(hv, ()):
            return ()
        ofports = self._ofports.get(hv, {})
        vm_ports = self._vm_ports.get(hv, {})

        def tunnel_ofport(remote: str, encapsulation: str) -> int | None:
            r = topo.hypervisors.get(remote)
            if r is None or r.underlay_ip is None:
                return None
            return ofports.get(_tunnel_name(encapsulation, r.underlay_ip))

        where = members.get(vni)
        if where is None:
            where = members[vni] = self._members(vni)
        return network_slice(net, where, hv, vm_ports.get, tunnel_ofport)

    # -- results ---------------------------------------------------------------------------
    def tunnels(self, hv: str) -> frozenset[TunnelPort]:
        """Tunnel ports this switch needs: one per (remote hypervisor sharing a network,
        encapsulation of that network). Independent of observed ports, so it can be created
        before any flow refers to it."""
        topo = self.topology
        if topo.dirty or topo.dirty_switches:
            # Changes not compiled yet: answer from the topology itself.
            return frozenset().union(*(self._tunnels_of(hv, vni)
                                       for vni in topo.networks_on.get(hv, ())))
        # Every change to a switch's tunnels dirties one of its slices, and recompute() keeps
        # the refcounts in step and drops the cached set when its keys change: it is current.
        union = self._tunnel_union.get(hv)
        if union is None:
            union = frozenset(self._tunnel_refs.get(hv, ()))
            self._tunnel_union[hv] = union
        return union

    def slices(self, hv: str) -> SwitchSlices:
        """The switch's desired flows by slice, with what changed since a generation: what a
        reconciler needs to diff only the change (FlowReconciler.apply_slices)."""
        return SwitchSlices(self, hv)

    def flows(self, hv: str) -> frozenset[Flow]:
        """Every desired flow of the switch (a new set: O(flows of the switch))."""
        out = set(_BASE)
        for flows in self._slices.get(hv, {}).values():
            out.update(flows)
        return frozenset(out)

    def desired(self, hv: str) -> SwitchDesired:
        return SwitchDesired(hv, self.tunnels(hv), self.flows(hv))

    def ofports(self, hv: str) -> dict[str, int]:
        return dict(self._ofports.get(hv, {}))

    def vm_ports(self, hv: str) -> dict[str, int]:
        return dict(self._vm_ports.get(hv, {}))

    def flow_count(self, hv: str) -> int:
        return len(_BASE) + sum(len(f) for f in self._slices.get(hv, {}).values())


@dataclass(frozen=True, slots=True)
class SwitchSlices:
    """A live view of one switch's desired flows, as slices keyed by VNI (+ BASE_SLICE)."""

    source: FabricCompiler
    hypervisor: str

    @property
    def generation(self) -> int:
        """The compiler's generation: slices changed after a generation g are changed_since(g)."""
        return self.source.generation

    def changed_since(self, generation: int) -> list[int]:
        journal = self.source._changed.get(self.hypervisor, {})
        out = []
        for vni, gen in reversed(journal.items()):  # newest first: stop at the first old one
            if gen <= generation:
                break
            out.append(vni)
        return out

    def slice(self, key: int) -> Slice:
        if key == BASE_SLICE:
            return _BASE
        return self.source._slices.get(self.hypervisor, {}).get(key, ())

    def items(self) -> Iterator[tuple[int, Slice]]:
        yield BASE_SLICE, _BASE
        yield from self.source._slices.get(self.hypervisor, {}).items()
