"""Adopting a bare host once Ansible configured it: the lab's view of a role-built hypervisor.

The openvswitch role lays Open vSwitch out under the host's root (INTERFACES.md §3): run
directory <root>/var/run/openvswitch with db.sock, the pid files and ovs-vswitchd.ctl, so
that directory is exactly what the lab's OvsInstance handles, and the adopted hypervisor's
ovs_dir points at it. Adoption checks that what the roles promised is there and running; it
changes nothing on the host.
"""

from __future__ import annotations

from pathlib import Path

from hypetunnel.lab.hypervisor import INTEGRATION_BRIDGE, PHYS_BRIDGE
from hypetunnel.lab.ovs import OvsInstance
from hypetunnel.lab.proc import LabError, pid_alive
from hypetunnel.lab.state import LabBareHost, LabHypervisor

OVS_RUNDIR = "var/run/openvswitch"  # under the host's root, as the roles' ovs_rundir default


def ovs_rundir(host: LabBareHost) -> Path:
    return Path(host.root) / OVS_RUNDIR


def adopt(host: LabBareHost) -> LabHypervisor:
    """The lab hypervisor for a configured bare host; LabError naming what is missing."""
    ovs = OvsInstance(ovs_rundir(host), host.netns)
    daemons = {"ovsdb-server": ovs.db_sock, "ovs-vswitchd": ovs.directory / "ovs-vswitchd.ctl"}
    for daemon, sock in daemons.items():
        pid = ovs.pid(daemon)
        if pid is None or not pid_alive(pid) or not sock.exists():
            raise LabError(f"bare host {host.name}: no running {daemon} with {sock} and "
                           f"{daemon}.pid in {ovs.directory} (has the openvswitch role run?)")
    bridges = set(ovs.vsctl("list-br").split())
    missing = [b for b in (PHYS_BRIDGE, INTEGRATION_BRIDGE) if b not in bridges]
    if missing:
        raise LabError(f"bare host {host.name}: Open vSwitch has no {', '.join(missing)}")
    datapath = ovs.vsctl("get", "Bridge", INTEGRATION_BRIDGE, "datapath_type").strip('"')
    return LabHypervisor(
        name=host.name, netns=host.netns, index=host.index, underlay_ip=host.underlay_ip,
        prefixlen=host.prefixlen, ovs_dir=str(ovs.directory), uplink=host.uplink,
        controller_targets=[], datapath_type=datapath or "system", mgmt_ip=host.mgmt_ip,
        mgmt_prefixlen=host.mgmt_prefixlen, adopted=True)
