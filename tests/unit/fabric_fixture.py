"""Build a compiled fabric in memory: topology + invented port numbers, ready to trace."""

from __future__ import annotations

from hypetunnel.compiler.compile import FabricCompiler
from hypetunnel.compiler.from_intent import sync_topology
from hypetunnel.compiler.topology import Topology
from hypetunnel.compiler.trace import FabricTrace
from hypetunnel.model.intent import Intent


class Fabric:
    def __init__(self, intent: Intent) -> None:
        self.intent = intent
        self.topology = Topology()
        self.compiler = FabricCompiler(self.topology)
        sync_topology(self.topology, intent)
        self.ports: dict[str, dict[str, int]] = {h.name: {} for h in intent.hypervisors}
        self.vm_ports: dict[str, dict[str, int]] = {h.name: {} for h in intent.hypervisors}
        for t in intent.tenants:
            for v in t.vms:
                if v.hypervisor:
                    self.plug(f"{t.name}/{v.name}", v.hypervisor)
        self.converge()

    def plug(self, vid: str, hv: str) -> None:
        for other, vms in self.vm_ports.items():
            if vid in vms and other != hv:
                del vms[vid]
                del self.ports[other][f"vm-{vid}"]
                self.compiler.set_ports(other, self.ports[other], self.vm_ports[other])
        port = 1 + len(self.ports[hv])
        self.ports[hv][f"vm-{vid}"] = port
        self.vm_ports[hv][vid] = port
        self.topology.bind(vid, hv)
        self.compiler.set_ports(hv, self.ports[hv], self.vm_ports[hv])

    def converge(self) -> set[str]:
        """Recompute, create the tunnel ports the compiler asks for (as OVSDB would), repeat."""
        touched: set[str] = set()
        while True:
            touched |= self.compiler.recompute()
            changed = False
            for hv in self.ports:
                for t in self.compiler.tunnels(hv):
                    if t.name not in self.ports[hv]:
                        self.ports[hv][t.name] = 100 + len(self.ports[hv])
                        changed = True
                        self.compiler.set_ports(hv, self.ports[hv], self.vm_ports[hv])
            if not changed:
                return touched

    def trace(self) -> FabricTrace:
        return FabricTrace(
            flows={hv: self.compiler.flows(hv) for hv in self.ports},
            ports=self.ports, vm_ports=self.vm_ports,
            underlay_ip={h.name: str(h.underlay_ip) for h in self.intent.hypervisors})
