"""A lab hypervisor: a network namespace with an uplink into the underlay and its own Open
vSwitch, set up the way a real compute node is before any controller talks to it.

Userspace tunnelling (datapath_type=netdev) wants the tunnel endpoint address on an OVS bridge
port: OVS routes, ARPs and emits encapsulated packets itself, so the underlay IP lives on
br-phy's internal port and the uplink NIC (eth0) is a plain port of br-phy. ovs-vswitchd runs
inside the namespace; it routes tunnel packets by the underlay route the lab gives it, not by a
copy of the kernel's table (see ovs.ROUTES_NOTE: that copy is flushed on every link change).
"""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path

from hypetunnel.lab.netns import (
    HV_UPLINK,
    UNDERLAY_BRIDGE,
    ip,
    kill_netns_processes,
    link_exists,
    netns_add,
    netns_del,
    pid_alive,
    tx_offload_off,
    underlay_netns,
    veth_between,
)
from hypetunnel.lab.pki import configure_ovs
from hypetunnel.lab.proc import run
from hypetunnel.lab.state import LabHypervisor, LabState

PHYS_BRIDGE = "br-phy"
INTEGRATION_BRIDGE = "br-int"
CONTROLLER_MAX_BACKOFF_MS = 1000  # reconnect fast after a controller restart or failover


def build_hypervisor(state: LabState, hv: LabHypervisor) -> None:
    """Create (or finish creating) the hypervisor; every step tolerates being done already."""
    state.note_netns(hv.netns)
    netns_add(hv.netns)
    cable_uplink(state, hv.netns, hv.name, hv.uplink)
    mtu = str(state.underlay_mtu)

    if hv.ovs_dir not in state.ovs_dirs:
        state.ovs_dirs.append(hv.ovs_dir)
        state.save()
    ovs = hv.ovs
    pids = ovs.pids()
    if len(pids) < 2 or not all(pid_alive(p) for p in pids):
        if pids:
            ovs.stop()  # half-started by a crashed build: start both daemons afresh
        ovs.start()
    dp = hv.datapath_type
    ovs.vsctl("--may-exist", "add-br", PHYS_BRIDGE,
              "--", "set", "Bridge", PHYS_BRIDGE, f"datapath_type={dp}",
              "--", "--may-exist", "add-port", PHYS_BRIDGE, HV_UPLINK,
              "--", "set", "Interface", HV_UPLINK, f"mtu_request={mtu}",
              "--", "set", "Interface", PHYS_BRIDGE, f"mtu_request={mtu}")
    configure_endpoint(state, hv)
    if state.tls_dir:  # before any remote or controller needs it
        configure_ovs(hv, Path(state.tls_dir))
    ovs.vsctl("--may-exist", "add-br", INTEGRATION_BRIDGE,
              "--", "set", "Bridge", INTEGRATION_BRIDGE, f"datapath_type={dp}",
              "fail_mode=secure", "protocols=OpenFlow13", "other_config:disable-in-band=true")
    set_controllers(hv)


def cable_uplink(state: LabState, netns: str, host: str, uplink: str) -> None:
    """Cable a host namespace's eth0 to a port (`uplink`) of the underlay switch."""
    ul = underlay_netns(state.name)
    mtu = str(state.underlay_mtu)
    # The userspace datapath reads its ports (the uplink, service and VM veths) through packet
    # sockets, so the namespace's kernel sees their frames too, and by default it answers an
    # ARP request for the tunnel endpoint from the uplink with the uplink's own MAC: a second,
    # wrong answer beside br-phy's. A peer's OVS that learns it sends its tunnel frames to a
    # MAC its native tunnelling does not terminate: every overlay to this hypervisor,
    # management included, went dark in the middle of a test. Answer only on the interface
    # that holds the address (br-phy, br-mgmt), as the system datapath does by design.
    run(["sysctl", "-q", "-w", "net.ipv4.conf.all.arp_ignore=1"], netns=netns)
    if not link_exists(ul, uplink):
        veth_between(ul, uplink, netns, HV_UPLINK)
    ip(ul, "link", "set", uplink, "alias", f"uplink of {host}", "mtu", mtu,
       "master", UNDERLAY_BRIDGE, "up")
    ip(netns, "link", "set", HV_UPLINK, "mtu", mtu, "up")
    tx_offload_off(ul, uplink)
    tx_offload_off(netns, HV_UPLINK)


def configure_endpoint(state: LabState, hv: LabHypervisor) -> None:
    """The tunnel endpoint address on br-phy's internal port. Needed again after ovs-vswitchd
    restarts: with the userspace datapath that port is a tap the daemon owns, gone with it."""
    ip(hv.netns, "addr", "replace", f"{hv.underlay_ip}/{hv.prefixlen}", "dev", PHYS_BRIDGE)
    ip(hv.netns, "link", "set", PHYS_BRIDGE, "mtu", str(state.underlay_mtu), "up")
    tx_offload_off(hv.netns, PHYS_BRIDGE)
    if not hv.ovs.system_routes:  # the underlay route, given by hand (ovs.ROUTES_NOTE)
        subnet = ipaddress.ip_interface(f"{hv.underlay_ip}/{hv.prefixlen}").network
        hv.ovs.add_route(str(subnet), PHYS_BRIDGE)


def set_controllers(hv: LabHypervisor) -> None:
    """Point br-int at the given OpenFlow controllers (replacing any previous set)."""
    if not hv.controller_targets:
        hv.ovs.vsctl("del-controller", INTEGRATION_BRIDGE)
        return
    args: list[str] = []
    refs = []
    for i, target in enumerate(hv.controller_targets):
        args += ["--", f"--id=@c{i}", "create", "Controller", f"target={_quote(target)}",
                 f"max_backoff={CONTROLLER_MAX_BACKOFF_MS}"]
        refs.append(f"@c{i}")
    args += ["--", "set", "Bridge", INTEGRATION_BRIDGE, f"controller=[{','.join(refs)}]"]
    hv.ovs.vsctl(*args)


def _quote(value: str) -> str:
    # OVSDB string syntax: targets contain ':' which must be quoted.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def restart_ovs(state: LabState, hv: LabHypervisor) -> None:
    """Start a killed Open vSwitch again on its old database (bridges, ports, controllers
    survive there) and give the endpoint its address back."""
    hv.ovs.start()
    hv.ovs.vsctl("show")  # waits for the daemon to be connected to its database
    configure_endpoint(state, hv)


def destroy_hypervisor(state: LabState, hv: LabHypervisor) -> None:
    """Stop OVS, delete the namespace (its uplink veth goes with it) and the OVS directory."""
    ovs = hv.ovs
    if ovs.pids():
        ovs.stop()
    kill_netns_processes(hv.netns)
    netns_del(hv.netns)
    state.forget_netns(hv.netns)
    shutil.rmtree(Path(hv.ovs_dir), ignore_errors=True)
    if hv.ovs_dir in state.ovs_dirs:
        state.ovs_dirs.remove(hv.ovs_dir)
        state.save()
