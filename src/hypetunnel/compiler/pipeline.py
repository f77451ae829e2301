"""The br-int pipeline: pure functions from one network's view on one switch to flows.

Tables (OpenFlow 1.3, one integration bridge per hypervisor, network = metadata = VNI):
  0  CLASSIFY   VM port: only the VM's own MAC+IP may enter (anti-spoofing) -> network.
                Tunnel port + tunnel_id: -> network, reg0=1 ("came from a tunnel").
  10 ARP        ARP requests for known VM addresses answered here, on the source hypervisor;
                any other ARP request from a local VM: dropped (counted, per network).
  20 L2         (network, dst MAC) -> local port, or -> tunnel with the VNI (from local only).
                Broadcast/multicast -> FLOOD; unknown unicast from a local VM: dropped
                (counted, per network).
  30 FLOOD      Head-end replication to the network's local ports and, for frames from a
                local VM only (split horizon), to every other hypervisor hosting the network.
Anything unmatched is dropped (no table-miss flow except the explicit, counted drops).
A tunnel's latency probe (table CLASSIFY, P_PROBE: only frames that came in through a tunnel
with the probe key) is sent back through the tunnel it came from, and its answer is handed to
the controller (fcaps/latency.py).

Why unknown unicast and unanswered ARP die at the source: the controller knows every MAC and IP
of a network and port security lets no VM use another, so a frame the tables cannot place has
no receiver anywhere. Flooding it would only let one VM make every peer hypervisor receive a
copy of each frame it sends to a random MAC. A VM being moved is known at both of its ports
(moving_vm_flows), so nothing to it is dropped. A VM in the intent but not plugged in yet has no
flows, so frames to it count here too until its port is bound (they would be lost on the
planned hypervisor anyway, after crossing the underlay).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache

from hypetunnel.compiler.flows import (
    OFPP_IN_PORT,
    Action,
    Flow,
    Output,
    RegMove,
    SetField,
    Slice,
    match,
)
from hypetunnel.compiler.topology import NetworkView, VmView
from hypetunnel.model.intent import PROBE_VNI

T_CLASSIFY, T_ARP, T_L2, T_FLOOD = 0, 10, 20, 30
ETH_IP, ETH_ARP = 0x0800, 0x0806
MULTICAST = ("01:00:00:00:00:00", "01:00:00:00:00:00")
FROM_TUNNEL = 1
# Source drops: one flow per network and table, with no actions (OpenFlow drops the packet and
# counts it). Priorities lie under every forwarding flow of their table and above the base.
P_UNOWNED_ARP = 10  # table ARP: a request the responder could not answer
P_UNKNOWN_DST = 10  # table L2: a local VM's unicast to no known MAC

# Tunnel latency probes: a key no tenant network has (the intent reserves it), so a frame
# carrying it in br-int came through one of our tunnels from a switch: VMs can neither send
# nor receive one. (Not the management overlay's: a switch that has that overlay's bridge
# hands frames with its key to that bridge's exact-key port, never to br-int's key=flow one.)
# The controller sends a request out of a tunnel port; the far switch turns it into an answer
# out of the port it came in by; the near switch hands the answer to the controller.
PROBE_KEY = PROBE_VNI
PROBE_ETH_TYPE = 0x88B5  # IEEE 802 local experimental EtherType 1
PROBE_REQUEST = "02:48:54:00:00:01"
PROBE_ANSWER = "02:48:54:00:00:02"
P_PROBE = 300
OFPP_CONTROLLER = 0xFFFFFFFD

PortOf = Callable[[str], int | None]  # port name -> OpenFlow port number, None if not there yet

# A slice is rebuilt whole when one VM of its network changes, and a VM's ARP flow appears on
# every host of its network, so the per-VM flows are memoized on their (immutable) inputs: a VM
# change then builds a few new flows instead of every flow of the network on every host (a slice
# rebuilt the same is the same objects, cheap to compare), and identical flows are shared.
# Bounded so that churn cannot grow it forever; sized for a 100,000-VM fabric.
_memo = lru_cache(maxsize=1 << 19)
# Actions are values too, and few: one Output per port number, one SetField per (field, value).
# Shared, each costs its flows one pointer instead of an object (a quarter of a compiled
# fabric's objects were copies of the same ~100 actions per switch).
_action = lru_cache(maxsize=1 << 16)


@_action
def output(port: int) -> Output:
    return Output(port)


@_action
def set_field(name: str, value: int | str) -> SetField:
    return SetField(name, value)


SET_FROM_TUNNEL = SetField("reg0", FROM_TUNNEL)
TO_IN_PORT = Output(OFPP_IN_PORT)
# The ARP responder's moves: the same three on every responder flow.
ARP_REPLY = SetField("arp_op", 2)
ARP_MOVES = (RegMove("eth_src", "eth_dst", 48), RegMove("arp_sha", "arp_tha", 48),
             RegMove("arp_spa", "arp_tpa", 32))


def base_flows() -> frozenset[Flow]:
    """Flows every switch has regardless of networks."""
    return frozenset({
        Flow(T_CLASSIFY, 0, match()),  # explicit drop, so dropped packets are counted
        Flow(T_ARP, 0, match(), goto=T_L2),
        *probe_flows(),
    })


def probe_flows() -> tuple[Flow, Flow]:
    probe = {"tunnel_id": PROBE_KEY, "eth_type": PROBE_ETH_TYPE}
    return (
        Flow(T_CLASSIFY, P_PROBE, match(**probe, eth_dst=PROBE_REQUEST),
             (SetField("eth_dst", PROBE_ANSWER), TO_IN_PORT)),
        Flow(T_CLASSIFY, P_PROBE, match(**probe, eth_dst=PROBE_ANSWER),
             (Output(OFPP_CONTROLLER),)),
    )


def local_port_flows(vm: VmView, ofport: int) -> list[Flow]:
    """Port security: the VM may only send IPv4 and ARP with its own addresses."""
    return list(_local_port_flows(vm, ofport))


@_memo
def _local_port_flows(vm: VmView, ofport: int) -> tuple[Flow, ...]:
    return (
        Flow(T_CLASSIFY, 100, match(in_port=ofport, eth_src=vm.mac, eth_type=ETH_IP,
                                    ipv4_src=vm.ip), metadata=vm.vni, goto=T_ARP),
        Flow(T_CLASSIFY, 100, match(in_port=ofport, eth_src=vm.mac, eth_type=ETH_ARP,
                                    arp_sha=vm.mac, arp_spa=vm.ip), metadata=vm.vni, goto=T_ARP),
        Flow(T_L2, 100, match(metadata=vm.vni, eth_dst=vm.mac), (output(ofport),)),
    )


@_memo
def tunnel_ingress_flow(vni: int, tunnel_ofport: int) -> Flow:
    # Frames from tunnels skip the ARP responder: the sending hypervisor already answered
    # what it could, and a request that crossed the fabric must reach the VM.
    return Flow(T_CLASSIFY, 100, match(in_port=tunnel_ofport, tunnel_id=vni),
                (SET_FROM_TUNNEL,), metadata=vni, goto=T_L2)


def _remote_vm_flow(vm: VmView, tunnel_ofport: int) -> Flow:
    # reg0=0: only frames from local VMs may go into a tunnel (split horizon).
    return Flow(T_L2, 100, match(metadata=vm.vni, eth_dst=vm.mac, reg0=0),
                (set_field("tunnel_id", vm.vni), output(tunnel_ofport)))


# The largest memo (a VM's flow on every other host of its network, ~3.5 per VM) is split by
# tunnel port number: a dict grows by rehashing all of it at once, and in one dict that was a
# 16 ms pause inside one VM change at 100,000 VMs (349,526 entries; 1.5 ms at 10,000). In 16
# parts, each grows at its own time, by a sixteenth. Same bound in all.
REMOTE_SHARDS = 16
_remote_memos = [lru_cache(maxsize=(1 << 19) // REMOTE_SHARDS)(_remote_vm_flow)
                 for _ in range(REMOTE_SHARDS)]


def remote_vm_flow(vm: VmView, tunnel_ofport: int) -> Flow:
    return _remote_memos[tunnel_ofport % REMOTE_SHARDS](vm, tunnel_ofport)


def moving_vm_flows(vm: VmView, ofport: int | None, tunnels: list[int]) -> list[Flow]:
    """A VM live in two places during a move: frames to it go to both (the old port until it
    is gone, the new one from its first moment), so the switchover loses nothing."""
    out: list[Flow] = []
    to_tunnels: tuple[Action, ...] = ()
    if tunnels:
        to_tunnels = (set_field("tunnel_id", vm.vni), *(output(t) for t in sorted(tunnels)))
    if ofport is None:
        out.append(Flow(T_L2, 100, match(metadata=vm.vni, eth_dst=vm.mac, reg0=0), to_tunnels))
        return out
    out.extend(f for f in local_port_flows(vm, ofport) if f.table == T_CLASSIFY)
    out.append(Flow(T_L2, 100, match(metadata=vm.vni, eth_dst=vm.mac, reg0=0),
                    (output(ofport), *to_tunnels)))
    out.append(Flow(T_L2, 100, match(metadata=vm.vni, eth_dst=vm.mac, reg0=FROM_TUNNEL),
                    (output(ofport),)))
    return out


@_memo
def source_drop_flows(vni: int) -> tuple[Flow, Flow]:
    """Frames from this network's local VMs that no VM could receive: dropped and counted."""
    return (
        Flow(T_ARP, P_UNOWNED_ARP, match(metadata=vni, eth_type=ETH_ARP, arp_op=1)),
        Flow(T_L2, P_UNKNOWN_DST, match(metadata=vni, reg0=0)),
    )


# Why a flow without actions drops, by (table, priority): what `trace` tells an operator.
DROP_REASONS: dict[tuple[int, int], str] = {
    (T_CLASSIFY, 0): "not admitted (port security, or a port or VNI the switch does not know)",
    (T_ARP, P_UNOWNED_ARP): "ARP request for an address no VM of the network owns",
    (T_L2, P_UNKNOWN_DST): "unknown destination MAC",
}


def drop_reason(table: int, flow: Flow | None) -> str:
    """Why a frame stopped in `table` at `flow` (None: no flow matched)."""
    if flow is None:
        if table == T_L2:
            return "unknown destination MAC (arrived from a tunnel)"
        return f"no flow matches in table {table}"
    if any(isinstance(a, Output) for a in flow.actions):
        return "no port to send it to but the one it came from"  # OVS never hairpins
    return DROP_REASONS.get((flow.table, flow.priority), f"dropped by a flow in table {table}")


@_memo
def arp_responder_flow(vm: VmView) -> Flow:
    """Turn an ARP request for vm.ip into the reply, sent back out of the asking port."""
    # The SetFields of the VM's own MAC and IP are in this flow only: not worth sharing.
    actions: tuple[Action, ...] = (
        ARP_MOVES[0],
        SetField("eth_src", vm.mac),
        ARP_REPLY,
        ARP_MOVES[1],
        ARP_MOVES[2],
        SetField("arp_sha", vm.mac),
        SetField("arp_spa", vm.ip),
        TO_IN_PORT,
    )
    return Flow(T_ARP, 100, match(metadata=vm.vni, eth_type=ETH_ARP, arp_op=1, arp_tpa=vm.ip),
                actions)


def flood_flows(vni: int, local_ofports: Iterable[int],
                tunnel_ofports: Iterable[int]) -> list[Flow]:
    return list(_flood_flows(vni, tuple(sorted(set(local_ofports))),
                             tuple(sorted(set(tunnel_ofports)))))


def _flood_flows(vni: int, local_ports: tuple[int, ...],
                 tunnels: tuple[int, ...]) -> tuple[Flow, Flow, Flow]:
    # Memoized one flow at a time, each on what it depends on: a host joining or leaving the
    # network changes only the first flood flow on its peers, a VM port only the two floods
    # on its own switch. The others stay the same objects, so the reconciler compares them by
    # identity and never computes their cookie again.
    return (_to_flood(vni), _flood_from_local(vni, local_ports, tunnels),
            _flood_from_tunnel(vni, local_ports))


@_memo
def _to_flood(vni: int) -> Flow:
    return Flow(T_L2, 50, match(metadata=vni, eth_dst=MULTICAST), goto=T_FLOOD)


@_memo
def _flood_from_local(vni: int, local_ports: tuple[int, ...], tunnels: tuple[int, ...]) -> Flow:
    local = tuple(output(p) for p in local_ports)
    remote: tuple[Action, ...] = ()
    if tunnels:
        remote = (set_field("tunnel_id", vni), *(output(p) for p in tunnels))
    return Flow(T_FLOOD, 100, match(metadata=vni, reg0=0), local + remote)


@_memo
def _flood_from_tunnel(vni: int, local_ports: tuple[int, ...]) -> Flow:
    return Flow(T_FLOOD, 100, match(metadata=vni, reg0=FROM_TUNNEL),
                tuple(output(p) for p in local_ports))


def network_slice(net: NetworkView, members: Iterable[tuple[VmView, Sequence[str]]], here: str,
                  local_port: Callable[[str], int | None],
                  tunnel_port: Callable[[str, str], int | None]) -> Slice:
    """All flows of one network on one switch.

    members: (vm, the hypervisors where its port is live: one, or both ends of a move), each VM
    once, in a deterministic order; local_port(vm_id) gives the VM's OpenFlow port
    on this switch; tunnel_port(remote_hypervisor, encapsulation) the tunnel's port number.
    Flows whose port does not exist yet are left out; they appear when OVS reports the port.
    The flows are distinct (the intent gives each VM of a network its own MAC and IP) and in
    an order that depends only on the inputs.
    """
    flows: list[Flow] = []
    local_ports: list[int] = []
    remote_ports: dict[str, int | None] = {}  # remote host -> tunnel port (None: not yet)
    encap = net.encapsulation
    # Every slice of a network is rebuilt when one of its VMs changes (on each of its hosts,
    # twice per move: before and after the tunnel ports exist), so the loop is per VM of the
    # network: the common case (live in one place) first, with names bound once.
    append, extend = flows.append, flows.extend
    arp, local, remote = arp_responder_flow, _local_port_flows, remote_vm_flow
    for vm, hvs in members:
        if len(hvs) == 1:
            hv = hvs[0]
            if hv == here:
                p = local_port(vm.id)
                if p is not None:
                    append(arp(vm))
                    local_ports.append(p)
                    extend(local(vm, p))
                continue
            if hv in remote_ports:
                t = remote_ports[hv]
            else:
                t = remote_ports[hv] = tunnel_port(hv, encap)
            if t is not None:
                append(arp(vm))
                append(remote(vm, t))
            continue
        p = local_port(vm.id) if here in hvs else None
        tunnels = []
        for hv in hvs:
            if hv == here:
                continue
            if hv in remote_ports:
                t = remote_ports[hv]
            else:
                t = remote_ports[hv] = tunnel_port(hv, encap)
            if t is not None:
                tunnels.append(t)
        if p is None and not tunnels:
            continue
        append(arp(vm))
        if p is not None:
            local_ports.append(p)
        extend(moving_vm_flows(vm, p, tunnels))
    tunnel_ports = list(dict.fromkeys(t for _, t in sorted(remote_ports.items())
                                      if t is not None))
    flows.extend(tunnel_ingress_flow(net.vni, t) for t in tunnel_ports)
    if local_ports:  # only frames from local VMs pass tables ARP and L2 with reg0=0
        flows.extend(flood_flows(net.vni, local_ports, tunnel_ports))
        flows.extend(source_drop_flows(net.vni))
    return tuple(flows)


def clear_memos() -> None:
    """Forget every memoized flow and action: a cold start, as in a fresh process (benchmarks
    use it so that one run does not compile from the previous run's memos)."""
    for memo in (_local_port_flows, tunnel_ingress_flow, *_remote_memos, source_drop_flows,
                 arp_responder_flow, _to_flood, _flood_from_local, _flood_from_tunnel, output,
                 set_field):
        memo.cache_clear()
