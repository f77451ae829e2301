"""The incremental compiler: topology + observed ports -> desired state per switch.

Desired flows are kept per (hypervisor, VNI) slice; a change recomputes only the slices the
topology marked dirty, so the cost of a VM change depends on its network, not on the fabric.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hypetunnel.compiler.flows import Flow
from hypetunnel.compiler.pipeline import base_flows, network_slice
from hypetunnel.compiler.topology import Topology
from hypetunnel.compiler.tunnels import TunnelPort, tunnel_port, tunnel_port_name

_BASE = base_flows()


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
        self._slices: dict[str, dict[int, frozenset[Flow]]] = {}

    # -- observed state ------------------------------------------------------------------
    def set_ports(self, hypervisor: str, ofports: Mapping[str, int],
                  vm_ports: Mapping[str, int]) -> None:
        """OpenFlow port numbers on a switch, by port name and by bound VM id."""
        if (self._ofports.get(hypervisor) == ofports
                and self._vm_ports.get(hypervisor) == vm_ports):
            return
        self._ofports[hypervisor] = dict(ofports)
        self._vm_ports[hypervisor] = dict(vm_ports)
        self.topology.dirty_switches.add(hypervisor)

    # -- compilation ---------------------------------------------------------------------
    def recompute(self) -> set[str]:
        """Rebuild every dirty slice; return the hypervisors whose desired state may differ."""
        dirty, switches = self.topology.take_dirty()
        touched = set(switches)
        for hv in switches:
            self._slices[hv] = {}
            for vni in self.topology.networks_on.get(hv, ()):
                dirty.add((hv, vni))
        for hv, vni in dirty:
            touched.add(hv)
            flows = self._slice(hv, vni)
            slices = self._slices.setdefault(hv, {})
            if flows:
                slices[vni] = flows
            else:
                slices.pop(vni, None)
        return touched

    def _slice(self, hv: str, vni: int) -> frozenset[Flow]:
        topo = self.topology
        net = topo.networks.get(vni)
        if net is None or hv not in topo.hypervisors or vni not in topo.networks_on.get(hv, ()):
            return frozenset()
        ofports = self._ofports.get(hv, {})
        vm_ports = self._vm_ports.get(hv, {})

        def tunnel_ofport(remote: str, encapsulation: str) -> int | None:
            r = topo.hypervisors.get(remote)
            if r is None or r.underlay_ip is None:
                return None
            return ofports.get(tunnel_port_name(encapsulation, r.underlay_ip))

        members = [(vm, topo.location[vm.id]) for vm in topo.bound_members(vni)]
        return network_slice(net, members, hv, vm_ports.get, tunnel_ofport)

    # -- results ---------------------------------------------------------------------------
    def tunnels(self, hv: str) -> frozenset[TunnelPort]:
        """Tunnel ports this switch needs: one per (remote hypervisor sharing a network,
        encapsulation of that network). Independent of observed ports, so it can be created
        before any flow refers to it."""
        topo = self.topology
        out: set[TunnelPort] = set()
        for vni in topo.networks_on.get(hv, ()):
            net = topo.networks.get(vni)
            if net is None:
                continue
            for remote in topo.hosts.get(vni, {}):
                r = topo.hypervisors.get(remote)
                if remote != hv and r is not None and r.underlay_ip is not None:
                    out.add(tunnel_port(net.encapsulation, r.underlay_ip, remote))
        return frozenset(out)

    def flows(self, hv: str) -> frozenset[Flow]:
        out = set(_BASE)
        for flows in self._slices.get(hv, {}).values():
            out.update(flows)
        return frozenset(out)

    def desired(self, hv: str) -> SwitchDesired:
        return SwitchDesired(hv, self.tunnels(hv), self.flows(hv))

    def flow_count(self, hv: str) -> int:
        return len(_BASE) + sum(len(f) for f in self._slices.get(hv, {}).values())
