"""Bare lab hosts: what a freshly racked, freshly installed server is before Ansible runs.

A bare host is a namespace "ht-<lab>-<name>" (the same name as a lab hypervisor's) with
- eth0, cabled to the underlay switch, holding its underlay address (Open vSwitch is
  installed on this machine but nothing of it runs or is configured in the namespace);
- oob0, cabled to the operator's out-of-band switch: a Linux bridge in the operator's
  namespace "ht-<lab>-op", which holds the operator's address. SSH goes over oob0 only, so
  the openvswitch role moving eth0's address onto br-phy never cuts Ansible's connection;
- an sshd on its out-of-band address (lab/sshd.py);
- its own root directory <lab dir>/hosts/<name>, where the roles write every path.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from hypetunnel.lab import management as mgmt
from hypetunnel.lab.hypervisor import cable_uplink
from hypetunnel.lab.netns import (
    HV_UPLINK,
    hashed_ifname,
    hypervisor_netns,
    ip,
    lab_prefix,
    link_exists,
    netns_add,
    uplink_port_name,
    veth_between,
)
from hypetunnel.lab.proc import LabError
from hypetunnel.lab.sshd import HostSshd
from hypetunnel.lab.state import LabBareHost, LabState

OOB_BRIDGE = "broob"  # the operator's out-of-band switch
OOB_IFNAME = "oob0"
OPERATOR_OFFSET = 1  # the operator is <oob subnet>.1
HOST_OFFSET = 10  # host i is .10+i on the underlay, the management and the oob network


def operator_netns(lab: str) -> str:
    return lab_prefix(lab) + "op"


def operator_ip(state: LabState) -> str:
    return str(IPv4Network(state.oob_subnet).network_address + OPERATOR_OFFSET)


def hosts_dir(state: LabState) -> Path:
    return Path(state.directory) / "hosts"


def operator_key(state: LabState) -> Path:
    """The operator's ssh private key (its .pub is every host's authorized key)."""
    return Path(state.directory) / "ansible" / "id_ed25519"


def host_sshd(host: LabBareHost) -> HostSshd:
    return HostSshd(Path(host.root), host.oob_ip, host.netns)


def build_operator(state: LabState) -> None:
    """The operator's namespace with the out-of-band switch and the operator's address."""
    ns = operator_netns(state.name)
    state.note_netns(ns)
    netns_add(ns)
    if not link_exists(ns, OOB_BRIDGE):
        ip(ns, "link", "add", OOB_BRIDGE, "type", "bridge")
    ip(ns, "link", "set", OOB_BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0")
    net = IPv4Network(state.oob_subnet)
    ip(ns, "addr", "replace", f"{operator_ip(state)}/{net.prefixlen}", "dev", OOB_BRIDGE)
    ip(ns, "link", "set", OOB_BRIDGE, "up")


def new_host(state: LabState, name: str, underlay_ip: str | None) -> LabBareHost:
    """Addresses and names of the next host (nothing is built yet)."""
    index = state.next_index
    net = IPv4Network(state.underlay_subnet)
    address = IPv4Address(underlay_ip) if underlay_ip else net.network_address + HOST_OFFSET + index
    if address not in net:
        raise LabError(f"underlay IP {address} of host {name} is outside {net}")
    taken = {h.underlay_ip for h in state.hypervisors.values()}
    taken |= {h.underlay_ip for h in state.bare_hosts.values()}
    if str(address) in taken:
        raise LabError(f"underlay IP {address} of host {name} is already taken")
    oob = IPv4Network(state.oob_subnet)
    oob_ip = oob.network_address + HOST_OFFSET + index
    if oob_ip not in oob or oob_ip == oob.broadcast_address:
        raise LabError(f"out-of-band subnet {oob} has no room for host {index}")
    mgmt_net = IPv4Network(state.mgmt_subnet)
    return LabBareHost(
        name=name, netns=hypervisor_netns(state.name, name), index=index,
        underlay_ip=str(address), prefixlen=net.prefixlen, uplink=uplink_port_name(name),
        oob_ip=str(oob_ip), oob_prefixlen=oob.prefixlen, oob_port=hashed_ifname("oob", name),
        root=str(hosts_dir(state) / name),
        mgmt_ip=str(mgmt.allocate_address(state, mgmt.HV_HOST_OFFSET + index)),
        mgmt_prefixlen=mgmt_net.prefixlen)


def build_host(state: LabState, host: LabBareHost) -> None:
    """Namespace, cables, addresses and sshd; every step tolerates being done already."""
    state.note_netns(host.netns)
    netns_add(host.netns)
    cable_uplink(state, host.netns, host.name, host.uplink)
    ip(host.netns, "addr", "replace", f"{host.underlay_ip}/{host.prefixlen}", "dev", HV_UPLINK)
    op = operator_netns(state.name)
    if not link_exists(op, host.oob_port):
        veth_between(op, host.oob_port, host.netns, OOB_IFNAME)
    ip(op, "link", "set", host.oob_port, "alias", f"out-of-band of {host.name}",
       "master", OOB_BRIDGE, "up")
    ip(host.netns, "addr", "replace", f"{host.oob_ip}/{host.oob_prefixlen}", "dev", OOB_IFNAME)
    ip(host.netns, "link", "set", OOB_IFNAME, "up")
    sshd = host_sshd(host)
    sshd.configure(Path(f"{operator_key(state)}.pub").read_text().strip(), host.name)
    sshd.start()
