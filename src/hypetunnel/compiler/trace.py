"""Packet tracing through desired flows, without a switch: where would this frame go?

FlowTable runs one switch's flows the way OVS would (highest priority match per table,
apply-actions in order, write-metadata, goto). FabricTrace follows frames across switches
through tunnels. Unit tests assert forwarding behaviour with it; `hypetunnel trace` can show
an operator the same walk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from hypetunnel.compiler.flows import OFPP_IN_PORT, Flow, MatchValue, Output, RegMove, SetField
from hypetunnel.compiler.pipeline import drop_reason
from hypetunnel.compiler.tunnels import tunnel_port_name

Packet = dict[str, object]
_ENCAP_BY_PREFIX = {"vx": "vxlan", "gr": "gre", "gn": "geneve"}


def _as_int(v: object) -> int:
    if isinstance(v, int):
        return v
    s = str(v)
    if ":" in s:
        return int(s.replace(":", ""), 16)
    return int(IPv4Address(s))


def _matches(pkt: Packet, fields: Iterable[tuple[str, MatchValue]]) -> bool:
    for name, want in fields:
        have = pkt.get(name, 0 if name in ("reg0", "metadata", "tunnel_id") else None)
        if have is None:
            return False
        if isinstance(want, tuple):
            value, mask = (_as_int(x) for x in want)
            if _as_int(have) & mask != value & mask:
                return False
        elif _as_int(have) != _as_int(want):
            return False
    return True


@dataclass
class FlowTable:
    flows: Iterable[Flow]
    tables: dict[int, list[Flow]] = field(init=False)

    def __post_init__(self) -> None:
        self.tables = {}
        for f in self.flows:
            self.tables.setdefault(f.table, []).append(f)
        for fl in self.tables.values():
            fl.sort(key=lambda f: -f.priority)

    def lookup(self, table: int, pkt: Packet) -> Flow | None:
        return next((f for f in self.tables.get(table, ()) if _matches(pkt, f.match)), None)

    def process(self, pkt: Packet, in_port: int) -> list[tuple[int, Packet]]:
        """Outputs (port, frame as sent) for a frame arriving on in_port."""
        return self.walk(pkt, in_port).outputs

    def walk(self, pkt: Packet, in_port: int) -> Walk:
        """The frame's outputs, and the table and flow (None: a miss) where it stopped."""
        pkt = {**pkt, "in_port": in_port}
        out: list[tuple[int, Packet]] = []
        table: int | None = 0
        last = 0
        flow: Flow | None = None
        while table is not None:
            last = table
            flow = self.lookup(table, pkt)
            if flow is None:
                break  # table miss: drop
            for a in flow.actions:
                if isinstance(a, Output):
                    port = in_port if a.port == OFPP_IN_PORT else a.port
                    if a.port == OFPP_IN_PORT or port != in_port:  # OVS never hairpins
                        out.append((port, dict(pkt)))
                elif isinstance(a, SetField):
                    pkt[a.field] = a.value
                elif isinstance(a, RegMove):
                    pkt[a.dst] = pkt.get(a.src)
            if flow.metadata is not None:
                pkt["metadata"] = flow.metadata
            table = flow.goto
        return Walk(out, last, flow)


@dataclass(frozen=True)
class Walk:
    outputs: list[tuple[int, Packet]]
    table: int  # the last table the frame was looked up in
    flow: Flow | None  # the flow it ended at there; None for a table miss


@dataclass(frozen=True)
class Drop:
    """A switch that sent a frame nowhere: where, at which flow, and why."""

    hypervisor: str
    at_source: bool  # on the sending VM's own hypervisor, before any tunnel
    table: int
    flow: Flow | None
    reason: str


@dataclass(frozen=True)
class Delivery:
    vm: str  # vm id that received the frame
    hypervisor: str
    packet: Packet
    hops: tuple[str, ...]  # hypervisors the frame crossed, in order


@dataclass
class FabricTrace:
    """Follow a frame from a VM through every switch it reaches."""

    flows: Mapping[str, Iterable[Flow]]  # hypervisor -> its flows
    ports: Mapping[str, Mapping[str, int]]  # hypervisor -> port name -> ofport
    vm_ports: Mapping[str, Mapping[str, int]]  # hypervisor -> vm id -> ofport
    underlay_ip: Mapping[str, str]  # hypervisor -> underlay address
    tunnel_log: list[tuple[str, str, int]] = field(default_factory=list)  # (from, to, vni)
    drops: list[Drop] = field(default_factory=list)  # every switch the frame died on

    def send(self, vm_id: str, pkt: Packet) -> list[Delivery]:
        for hv, vms in self.vm_ports.items():
            if vm_id in vms:
                return self._run(hv, vms[vm_id], pkt, (hv,), budget=8)
        raise KeyError(f"{vm_id} is not bound to any switch")

    def _run(self, hv: str, in_port: int, pkt: Packet, hops: tuple[str, ...],
             budget: int) -> list[Delivery]:
        if budget == 0:
            raise RuntimeError(f"forwarding loop: {' -> '.join(hops)}")
        table = FlowTable(self.flows.get(hv, ()))
        by_port = {p: n for n, p in self.ports.get(hv, {}).items()}
        vm_by_port = {p: v for v, p in self.vm_ports.get(hv, {}).items()}
        out: list[Delivery] = []
        walk = table.walk(pkt, in_port)
        if not walk.outputs:
            self.drops.append(Drop(hv, len(hops) == 1, walk.table, walk.flow,
                                   drop_reason(walk.table, walk.flow)))
        for port, frame in walk.outputs:
            if port in vm_by_port:
                clean = {k: v for k, v in frame.items()
                         if k not in ("in_port", "metadata", "reg0", "tunnel_id")}
                out.append(Delivery(vm_by_port[port], hv, clean, hops))
                continue
            name = by_port.get(port, "")
            remote = next((r for r, ip in self.underlay_ip.items()
                           if name[2:] and name == tunnel_port_name(
                               _ENCAP_BY_PREFIX.get(name[:2], "vxlan"), ip)), None)
            if remote is None:
                continue
            encap = _ENCAP_BY_PREFIX[name[:2]]
            vni = int(frame.get("tunnel_id", 0))  # type: ignore[call-overload]
            self.tunnel_log.append((hv, remote, vni))
            back = self.ports.get(remote, {}).get(tunnel_port_name(encap, self.underlay_ip[hv]))
            if back is None:
                continue  # the remote has no tunnel to us: the frame is lost there
            inner = {k: v for k, v in frame.items() if k not in ("in_port", "metadata", "reg0")}
            out.extend(self._run(remote, back, inner, (*hops, remote), budget - 1))
        return out
