"""`hypetunnel trace`: walk a tenant frame through every switch and tunnel it would cross.

The walk uses the tables the controller computed, which are exactly what is installed once the
status says converged; the answer is where the frame is delivered, over which tunnels with
which VNI, or that it is dropped.
"""

from __future__ import annotations

from typing import Any

from hypetunnel.compiler.compile import FabricCompiler
from hypetunnel.compiler.topology import Topology
from hypetunnel.compiler.trace import Drop, FabricTrace, Packet
from hypetunnel.errors import FieldError, NotFound

BROADCAST = "ff:ff:ff:ff:ff:ff"


class TraceNotFound(NotFound):
    """What a trace names does not exist. Carries its FieldError (query parameter and reason):
    the API answers a bare NotFound with only "not found"."""

    def __init__(self, param: str, reason: str) -> None:
        self.errors = [FieldError(param, reason)]
        super().__init__(f"{param}: {reason}")


def build_frame(topo: Topology, src: str, dst: str, kind: str) -> Packet:
    s = topo.vms.get(src)
    if s is None:
        raise TraceNotFound("src", f"unknown VM {src!r} (give the source as tenant/vm)")
    target = topo.vms.get(dst)
    if target is None:  # an IP: the VM of the source's network holding it, if any
        target = next((v for v in topo.vms.values() if v.vni == s.vni and v.ip == dst), None)
    dst_ip = target.ip if target else dst
    if kind == "arp":
        return {"eth_src": s.mac, "eth_dst": BROADCAST, "eth_type": 0x0806, "arp_op": 1,
                "arp_sha": s.mac, "arp_spa": s.ip, "arp_tha": "00:00:00:00:00:00",
                "arp_tpa": dst_ip}
    if target is None:
        raise TraceNotFound("dst", f"{dst!r} is neither a VM (tenant/vm) nor the address of a VM "
                                   f"in {src}'s network")
    return {"eth_src": s.mac, "eth_dst": target.mac, "eth_type": 0x0800, "ipv4_src": s.ip,
            "ipv4_dst": dst_ip}


def trace(topo: Topology, compiler: FabricCompiler, src: str, dst: str,
          kind: str = "ip") -> dict[str, Any]:
    frame = build_frame(topo, src, dst, kind)
    hvs = sorted(topo.hypervisors)
    tracer = FabricTrace(
        flows={hv: compiler.flows(hv) for hv in hvs},
        ports={hv: compiler.ofports(hv) for hv in hvs},
        vm_ports={hv: compiler.vm_ports(hv) for hv in hvs},
        underlay_ip={hv: v.underlay_ip for hv, v in topo.hypervisors.items()
                     if v.underlay_ip})
    if src not in topo.location:
        raise TraceNotFound("src", f"VM {src} is not bound to any switch (not plugged in yet)")
    deliveries = tracer.send(src, frame)
    return {
        "src": src, "dst": dst, "kind": kind, "frame": frame,
        "tunnels": [{"from": a, "to": b, "vni": v} for a, b, v in tracer.tunnel_log],
        "deliveries": [{"vm": d.vm, "hypervisor": d.hypervisor, "hops": list(d.hops),
                        "frame": d.packet} for d in deliveries],
        # A drop flow's cookie lets an operator read its packet counter on the switch.
        "drops": [{"hypervisor": d.hypervisor, "at_source": d.at_source, "table": d.table,
                   "cookie": f"{d.flow.cookie:#x}" if d.flow is not None else None,
                   "reason": d.reason} for d in tracer.drops],
        "verdict": (", ".join(f"delivered to {d.vm} on {d.hypervisor}" for d in deliveries)
                    or dropped_verdict(tracer.drops)),
    }


def dropped_verdict(drops: list[Drop]) -> str:
    if not drops:
        return "dropped"
    first = drops[0]  # where the frame first died: on its own hypervisor if it never left
    where = "at source" if first.at_source else f"on {first.hypervisor}"
    return f"dropped {where}: {first.reason}"
