"""The fabric state: what the network should be, from the intent and what the switches report.

It holds the Topology, the incremental compiler and the binding table, and answers "which flows
and tunnel ports does hypervisor X need". It knows no session, no socket and no role: the
runtime feeds it intents and observations and asks it for the desired state of each switch.
"""

from __future__ import annotations

from typing import Any

from hypetunnel.compiler.compile import FabricCompiler, SwitchSlices
from hypetunnel.compiler.flows import Flow
from hypetunnel.compiler.from_intent import sync_topology
from hypetunnel.compiler.topology import Topology
from hypetunnel.compiler.tunnels import TunnelPort
from hypetunnel.controller.bindings import BindingTable
from hypetunnel.model.intent import Intent, vm_id
from hypetunnel.southbound.observation import SwitchObservation


class FabricState:
    def __init__(self) -> None:
        self.topology = Topology()
        self.compiler = FabricCompiler(self.topology)
        self.bindings = BindingTable(self.topology)
        self.intent = Intent()

    # -- inputs ----------------------------------------------------------------------------------
    def apply_intent(self, intent: Intent) -> None:
        self.intent = intent
        sync_topology(self.topology, intent)
        self.bindings.set_intent({vm_id(t.name, v.name): v.hypervisor
                                  for t in intent.tenants for v in t.vms if v.hypervisor})

    def observe(self, hypervisor: str, obs: SwitchObservation) -> None:
        """One switch's latest OVSDB snapshot: its VM ports (bindings) and port numbers."""
        bindings = obs.bindings()
        self.bindings.observe(hypervisor, set(bindings))
        ofports = {name: p.ofport for name, p in obs.ports.items() if p.ofport > 0}
        self.compiler.set_ports(hypervisor, ofports,
                                {vid: p.ofport for vid, p in bindings.items()})

    def forget(self, hypervisor: str) -> None:
        """Its reports no longer count (retired, or lost with its VMs)."""
        self.bindings.forget(hypervisor)

    def recompute(self) -> set[str]:
        """Recompile what changed since the last call; the hypervisors whose state changed."""
        return set(self.compiler.recompute())

    # -- desired state per switch ----------------------------------------------------------------
    def flows(self, hypervisor: str) -> frozenset[Flow]:
        return self.compiler.flows(hypervisor)

    def slices(self, hypervisor: str) -> SwitchSlices:
        return self.compiler.slices(hypervisor)

    def tunnels(self, hypervisor: str) -> frozenset[TunnelPort]:
        return self.compiler.tunnels(hypervisor)

    def flow_count(self, hypervisor: str) -> int:
        return self.compiler.flow_count(hypervisor)

    # -- views -----------------------------------------------------------------------------------
    def vms(self) -> tuple[int, int]:
        """(VMs in the intent, of them bound to a switch)."""
        wanted = [vm_id(t.name, v.name) for t in self.intent.tenants for v in t.vms]
        return len(wanted), sum(1 for v in wanted if v in self.topology.location)

    def locations(self) -> dict[str, str]:
        """VM id -> hypervisor where its port is, as the switches report it."""
        return dict(self.topology.location)

    def seen(self, vm: str) -> set[str]:
        """Every hypervisor reporting a port of `vm` now (two during a hot move)."""
        return set(self.bindings.seen.get(vm, ()))

    def overlay(self, hypervisors: list[str]) -> dict[str, Any]:
        out = []
        topo = self.topology
        for name in hypervisors:
            vnis = sorted(topo.networks_on.get(name, ()))
            out.append({
                "hypervisor": name,
                "tunnels": [{"name": t.name, "remote": t.remote_hypervisor,
                             "remote_ip": t.remote_ip, "encapsulation": t.encapsulation}
                            for t in sorted(self.compiler.tunnels(name))],
                "networks": [{"vni": v, "tenant": topo.networks[v].tenant,
                              "network": topo.networks[v].name,
                              "encapsulation": topo.networks[v].encapsulation,
                              "local_vms": sorted(vid for vid, h in topo.location.items()
                                                  if h == name and vid in topo.vms
                                                  and topo.vms[vid].vni == v)}
                             for v in vnis if v in topo.networks],
                "flows": self.compiler.flow_count(name),
            })
        return {"hypervisors": out}

    def trace(self, src: str, dst: str, kind: str = "ip") -> dict[str, Any]:
        from hypetunnel.controller.tracing import trace

        return trace(self.topology, self.compiler, src, dst, kind)
