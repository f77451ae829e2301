"""The management overlay of the lab: how controllers, switches and the store reach each other.

Set up at enlistment, before any controller exists, and never touched by a controller:

- every hypervisor has a bridge br-mgmt whose internal port holds its management address;
- br-mgmt is joined to every other hypervisor's br-mgmt by a VXLAN port with the reserved
  VNI (options:key=MANAGEMENT_VNI). br-int's tunnel ports to the same peer use key=flow, and
  OVS looks up an exact key before key=flow, so both bridges share UDP port 4789 and each
  receives only its own traffic;
- service namespaces (a controller, an etcd member) hang off a hypervisor's br-mgmt by a veth.

A full mesh with NORMAL forwarding would loop broadcasts around every triangle, so br-mgmt is
fail_mode=secure with no controller and a static flow table computed from the lab state:
split horizon — a frame from a tunnel only goes to local ports; a frame from a local port goes
to the one port or tunnel behind its destination MAC (every MAC is known: enlistment pins
them), and a broadcast or unknown destination goes to every local port and every tunnel once.
secure rather than standalone: OpenFlow flows are not persistent, and after an ovs-vswitchd
restart a standalone bridge with no controller forwards with NORMAL — a mesh-wide storm —
whereas a secure one stays closed until restore() reprograms it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from hypetunnel.lab.hypervisor import PHYS_BRIDGE
from hypetunnel.lab.netns import (
    check_service_name,
    ip,
    kill_netns_processes,
    link_exists,
    netns_add,
    netns_del,
    pid_alive,
    tx_offload_off,
    veth_between,
)
from hypetunnel.lab.proc import LabError, run, wait_until
from hypetunnel.lab.state import OVSDB_TCP_PORT, LabHypervisor, LabService, LabState
from hypetunnel.model.intent import ENCAP_OVERHEAD, MANAGEMENT_VNI

MGMT_BRIDGE = "br-mgmt"
MGMT_ENCAP = "vxlan"
HV_HOST_OFFSET = 10  # hypervisor i gets <subnet>.10+i, like its underlay address
SERVICE_HOST_OFFSET = 100  # service k gets <subnet>.100+k
TUNNEL_OFPORT_BASE = 1000  # tunnel to hypervisor i: ofport 1000+i
SERVICE_OFPORT_BASE = 2000  # service k: ofport 2000+k
COOKIE = "0x4d474d54"  # "MGMT": tells br-mgmt's static flows apart in a dump
FROM_TUNNEL, FROM_LOCAL = 1, 2  # flow tables


# --- addresses ------------------------------------------------------------------------------


def mgmt_mtu(state: LabState) -> int:
    """Management frames are VXLAN-encapsulated on the underlay; the userspace datapath never
    fragments, so every management interface must leave room for the encapsulation."""
    return state.underlay_mtu - ENCAP_OVERHEAD[MGMT_ENCAP]


def mgmt_mac(address: str) -> str:
    """A locally administered MAC derived from the management IP: unique within the lab,
    known before the interface exists (so every br-mgmt can be told it at once)."""
    return "02:6d:" + ":".join(f"{b:02x}" for b in IPv4Address(address).packed)


def allocate_address(state: LabState, offset: int) -> IPv4Address:
    net = IPv4Network(state.mgmt_subnet)
    address = net.network_address + offset
    if address not in net or address in (net.network_address, net.broadcast_address):
        raise LabError(f"management subnet {net} has no room for host offset {offset}")
    taken = {h.mgmt_ip for h in state.hypervisors.values()}
    taken |= {s.mgmt_ip for s in state.services.values()}
    if str(address) in taken:
        raise LabError(f"management address {address} is already taken in lab {state.name}")
    return address


def tunnel_port_name(remote_ip: str) -> str:
    """br-mgmt's tunnel to a peer; "mg" keeps it apart from br-int's "vx…" ports (port names
    are unique across all bridges of one ovs-vswitchd)."""
    return f"mg{int(IPv4Address(remote_ip)):08x}"


def members(state: LabState) -> list[LabHypervisor]:
    return [h for h in state.hypervisors.values() if h.mgmt_ip]


def _running(hv: LabHypervisor) -> bool:
    pids = hv.ovs.pids()
    return len(pids) == 2 and all(pid_alive(p) for p in pids)


# --- enlistment ----------------------------------------------------------------------------


def enlist(state: LabState, hv: LabHypervisor) -> None:
    """Give a freshly built hypervisor its br-mgmt and address, mesh it with every member and
    let its OVSDB listen on the overlay. Tolerates being done already."""
    assert hv.mgmt_ip and hv.mgmt_mac
    hv.ovs.vsctl("--may-exist", "add-br", MGMT_BRIDGE,
                 "--", "set", "Bridge", MGMT_BRIDGE, f"datapath_type={hv.datapath_type}",
                 "fail_mode=secure", "protocols=OpenFlow13",
                 # The internal port's MAC would otherwise follow whichever port OVS picks.
                 f'other_config:hwaddr="{hv.mgmt_mac}"',
                 "other_config:disable-in-band=true",
                 "--", "set", "Interface", MGMT_BRIDGE, f"mtu_request={mgmt_mtu(state)}")
    _configure_address(state, hv)
    _listen_ovsdb(hv, secure=state.tls_dir is not None)
    peers = [p for p in members(state) if p.name != hv.name and _running(p)]
    warm_neighbours(hv, peers)
    program_all(state)


def restore(state: LabState, hv: LabHypervisor) -> None:
    """After an ovs-vswitchd/ovsdb-server restart: the br-mgmt tap (and its address), the
    runtime OVSDB remote, the tunnel neighbour cache and every flow died with the daemons."""
    _configure_address(state, hv)
    _listen_ovsdb(hv, secure=state.tls_dir is not None)
    warm_neighbours(hv, [p for p in members(state) if p.name != hv.name and _running(p)])
    program(state, hv)


def _configure_address(state: LabState, hv: LabHypervisor) -> None:
    mtu = str(mgmt_mtu(state))
    ip(hv.netns, "addr", "replace", f"{hv.mgmt_ip}/{hv.mgmt_prefixlen}", "dev", MGMT_BRIDGE)
    ip(hv.netns, "link", "set", MGMT_BRIDGE, "mtu", mtu, "up")
    tx_offload_off(hv.netns, MGMT_BRIDGE)


def _listen_ovsdb(hv: LabHypervisor, secure: bool = False) -> None:
    """ovsdb-server was started with a unix socket only; the TCP remote is added at runtime
    (not persistent: restore() adds it again). The address must exist before: the daemon binds
    it at once. secure: TLS only (pssl, the SSL table's certificate) and no plain remote."""
    remote = f"{'pssl' if secure else 'ptcp'}:{OVSDB_TCP_PORT}:{hv.mgmt_ip}"
    ctl = ["ovs-appctl", "-t", f"{hv.ovs_dir}/ovsdb-server.ctl"]
    remotes = run([*ctl, "ovsdb-server/list-remotes"]).stdout.split()
    for other in remotes:
        if other.endswith(f":{OVSDB_TCP_PORT}:{hv.mgmt_ip}") and other != remote:
            run([*ctl, "ovsdb-server/remove-remote", other])
    if remote not in remotes:
        run([*ctl, "ovsdb-server/add-remote", remote])
    wait_until(lambda: _listening(hv.netns, OVSDB_TCP_PORT), 10,
               f"ovsdb-server of {hv.name} to listen on {remote}")


def _listening(netns: str, port: int) -> bool:
    return bool(run(["ss", "-Htln", f"sport = :{port}"], netns=netns).stdout.strip())


def warm_neighbours(hv: LabHypervisor, peers: Iterable[LabHypervisor]) -> None:
    """The userspace datapath drops the first tunnel packet to a peer whose underlay MAC it has
    not resolved; tell both sides each other's br-phy MAC (as datacenter.warm_underlay does)."""
    mine = _phys_mac(hv)
    for peer in peers:
        hv.ovs.appctl("tnl/neigh/set", PHYS_BRIDGE, peer.underlay_ip, _phys_mac(peer))
        peer.ovs.appctl("tnl/neigh/set", PHYS_BRIDGE, hv.underlay_ip, mine)


def _phys_mac(hv: LabHypervisor) -> str:
    return run(["cat", f"/sys/class/net/{PHYS_BRIDGE}/address"], netns=hv.netns).stdout.strip()


# --- service namespaces --------------------------------------------------------------------


def new_service(state: LabState, name: str, hv: LabHypervisor, netns: str, port: str,
                mgmt_ip: str | None = None) -> LabService:
    """The record of a service namespace: address (default <subnet>.100+k), MAC, ofport."""
    check_service_name(name)
    if not hv.mgmt_ip:
        raise LabError(f"hypervisor {hv.name} has no management overlay")
    if name in state.services:
        raise LabError(f"lab {state.name} already has a service {name!r}")
    index = state.next_service_index
    net = IPv4Network(state.mgmt_subnet)
    offset = (SERVICE_HOST_OFFSET + index if mgmt_ip is None
              else int(IPv4Address(mgmt_ip)) - int(net.network_address))
    address = str(allocate_address(state, offset))
    return LabService(name=name, hypervisor=hv.name, netns=netns, index=index, mgmt_ip=address,
                      prefixlen=net.prefixlen, mac=mgmt_mac(address), port=port,
                      ofport=SERVICE_OFPORT_BASE + index)


def attach_service(state: LabState, svc: LabService, hv: LabHypervisor) -> None:
    """A namespace plugged into hv's br-mgmt with its own management address."""
    mtu = str(mgmt_mtu(state))
    state.note_netns(svc.netns)
    netns_add(svc.netns)
    if not link_exists(hv.netns, svc.port):
        veth_between(hv.netns, svc.port, svc.netns, svc.ifname)
    ip(hv.netns, "link", "set", svc.port, "alias", f"service {svc.name}", "mtu", mtu, "up")
    tx_offload_off(hv.netns, svc.port)
    ip(svc.netns, "link", "set", svc.ifname, "address", svc.mac, "mtu", mtu)
    tx_offload_off(svc.netns, svc.ifname)
    ip(svc.netns, "link", "set", svc.ifname, "up")
    ip(svc.netns, "addr", "replace", f"{svc.mgmt_ip}/{svc.prefixlen}", "dev", svc.ifname)
    hv.ovs.vsctl("--may-exist", "add-port", MGMT_BRIDGE, svc.port,
                 "--", "set", "Interface", svc.port, f"ofport_request={svc.ofport}",
                 f'external_ids:lab-service="{svc.name}"')
    _check_ofports(hv, {svc.port: svc.ofport})
    program_all(state)


def detach_service(state: LabState, svc: LabService) -> None:
    """Unplug and delete the namespace (its processes die first); tolerates half-made ones."""
    hv = state.hypervisors.get(svc.hypervisor)
    if hv is not None and _running(hv):
        hv.ovs.vsctl("--if-exists", "del-port", MGMT_BRIDGE, svc.port, check=False)
    kill_netns_processes(svc.netns)
    netns_del(svc.netns)  # the veth goes with it
    state.forget_netns(svc.netns)


# --- the static flow table -----------------------------------------------------------------


def program_all(state: LabState) -> None:
    """Bring every running member's tunnels and flows in line with the lab state; a member
    whose OVS is down is skipped (restore() programs it when it comes back)."""
    for hv in members(state):
        if _running(hv):
            program(state, hv)


def program(state: LabState, hv: LabHypervisor) -> None:
    _sync_tunnels(state, hv)
    flows = Path(hv.ovs_dir) / f"{MGMT_BRIDGE}.flows"
    flows.write_text("\n".join(bridge_flows(state, hv)) + "\n")
    # replace-flows sends only the difference: reprogramming never interrupts live traffic.
    hv.ovs.ofctl("replace-flows", str(flows), bridge_mgmt=MGMT_BRIDGE)


def _sync_tunnels(state: LabState, hv: LabHypervisor) -> None:
    wanted = {tunnel_port_name(p.underlay_ip): p for p in members(state) if p.name != hv.name}
    have = {p for p in hv.ovs.vsctl("list-ports", MGMT_BRIDGE).split() if p.startswith("mg")}
    args: list[str] = []
    for name in sorted(have - set(wanted)):
        args += ["--", "--if-exists", "del-port", MGMT_BRIDGE, name]
    for name, peer in sorted(wanted.items()):
        args += ["--", "--may-exist", "add-port", MGMT_BRIDGE, name,
                 "--", "set", "Interface", name, f"type={MGMT_ENCAP}",
                 f"options:remote_ip={peer.underlay_ip}", f"options:key={MANAGEMENT_VNI}",
                 f"ofport_request={TUNNEL_OFPORT_BASE + peer.index}",
                 f'external_ids:lab-peer="{peer.name}"']
    if args:
        hv.ovs.vsctl(*args)
    _check_ofports(hv, {n: TUNNEL_OFPORT_BASE + p.index for n, p in wanted.items()})


def _check_ofports(hv: LabHypervisor, wanted: dict[str, int]) -> None:
    """The flows name ports by number: make sure OVS honoured every ofport_request."""
    if not wanted:
        return
    out = json.loads(hv.ovs.vsctl("--format=json", "--columns=name,ofport", "list",
                                  "Interface"))
    got = {row[0]: row[1] for row in out["data"]}
    wrong = {n: got.get(n) for n, want in wanted.items() if got.get(n) != want}
    if wrong:
        raise LabError(f"{hv.name}: br-mgmt ports did not get their ofport_request: {wrong}")


def bridge_flows(state: LabState, hv: LabHypervisor) -> list[str]:
    """The whole br-mgmt flow table of one hypervisor, from the lab state alone."""
    local = [s for s in state.services.values() if s.hypervisor == hv.name]
    live = [s for s in local if not s.cut]
    # Local endpoints: MAC -> output port name ("LOCAL" is the internal port).
    endpoints = [(hv.mgmt_mac, "LOCAL"), *((s.mac, str(s.ofport)) for s in live)]
    peers = [p for p in members(state) if p.name != hv.name]
    tunnels = [str(TUNNEL_OFPORT_BASE + p.index) for p in peers]
    remote: list[tuple[str, str]] = []
    for p in peers:
        tun = str(TUNNEL_OFPORT_BASE + p.index)
        remote.append((str(p.mgmt_mac), tun))
        remote += [(s.mac, tun) for s in state.services.values() if s.hypervisor == p.name]

    def flow(table: int, priority: int, match: str, actions: str) -> str:
        m = f",{match}" if match else ""
        return f"cookie={COOKIE},table={table},priority={priority}{m},actions={actions}"

    def outputs(ports: Iterable[str]) -> str:
        return ",".join(f"output:{p}" for p in ports) or "drop"

    local_ports = [port for _, port in endpoints]
    out = [flow(0, 0, "", "drop")]
    # Table 0 classifies by ingress; a cut service is silenced on the way in.
    for s in local:
        if s.cut:
            out.append(flow(0, 1000, f"in_port={s.ofport}", "drop"))
    for t in tunnels:
        out.append(flow(0, 100, f"in_port={t}", f"goto_table:{FROM_TUNNEL}"))
    for port in local_ports:
        out.append(flow(0, 100, f"in_port={port}", f"goto_table:{FROM_LOCAL}"))
    # Both ingress tables deliver to known local MACs; a cut service gets nothing, not even
    # a flooded frame (it is left out of every output list).
    for table in (FROM_TUNNEL, FROM_LOCAL):
        for mac, port in endpoints:
            out.append(flow(table, 100, f"dl_dst={mac}", f"output:{port}"))
        for s in local:
            if s.cut:
                out.append(flow(table, 100, f"dl_dst={s.mac}", "drop"))
    # Split horizon: from a tunnel, broadcast/unknown goes to local ports only, never to
    # another tunnel — the only way a full mesh stays loop-free.
    out.append(flow(FROM_TUNNEL, 0, "", outputs(local_ports)))
    for mac, tun in remote:
        out.append(flow(FROM_LOCAL, 100, f"dl_dst={mac}", f"output:{tun}"))
    # OVS never outputs a frame back to its in_port, so the ingress port is skipped by itself.
    out.append(flow(FROM_LOCAL, 0, "", outputs([*local_ports, *tunnels])))
    return out
