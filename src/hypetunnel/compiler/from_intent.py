"""Bring a Topology in line with a resolved intent, touching only what differs."""

from __future__ import annotations

from hypetunnel.compiler.topology import HypervisorView, NetworkView, Topology, VmView
from hypetunnel.model.intent import Intent, network_encapsulation, vm_id


def views(intent: Intent) -> tuple[dict[str, HypervisorView], dict[int, NetworkView],
                                    dict[str, VmView]]:
    hvs = {h.name: HypervisorView(h.name, str(h.underlay_ip) if h.underlay_ip else None)
           for h in intent.hypervisors}
    nets: dict[int, NetworkView] = {}
    vms: dict[str, VmView] = {}
    for t in intent.tenants:
        encap = network_encapsulation(intent.fabric, t)
        vni_of = {}
        for n in t.networks:
            if n.vni is None:
                raise ValueError(f"network {t.name}/{n.name} has no VNI: resolve the intent first")
            nets[n.vni] = NetworkView(n.vni, t.name, n.name, encap)
            vni_of[n.name] = n.vni
        for v in t.vms:
            if v.ip is None or v.mac is None:
                raise ValueError(f"VM {t.name}/{v.name} has no address: resolve the intent first")
            vid = vm_id(t.name, v.name)
            vms[vid] = VmView(vid, vni_of[v.network], v.mac, str(v.ip))
    return hvs, nets, vms


def sync_topology(topo: Topology, intent: Intent) -> None:
    hvs, nets, vms = views(intent)
    for name in [n for n in topo.hypervisors if n not in hvs]:
        topo.remove_hypervisor(name)
    for hv in hvs.values():
        topo.set_hypervisor(hv)
    for vid in [v for v in topo.vms if v not in vms]:
        topo.remove_vm(vid)
    for vni in [n for n in topo.networks if n not in nets]:
        topo.remove_network(vni)
    for net in nets.values():
        topo.set_network(net)
    for vm in vms.values():
        topo.set_vm(vm)
