"""Plugging lab VMs into hypervisors, as Nova + os-vif do: a veth pair whose hypervisor end is a
br-int port tagged external_ids:iface-id=<vm id>. The lab never writes a flow: the controller
finds the port by its iface-id and programs it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from hypetunnel.lab.hypervisor import INTEGRATION_BRIDGE
from hypetunnel.lab.netns import (
    ip,
    kill_netns_processes,
    link_exists,
    netns_add,
    netns_del,
    netns_exists,
    tx_offload_off,
    veth_between,
)
from hypetunnel.lab.proc import LabError
from hypetunnel.lab.state import LabHypervisor, LabState, LabVM
from hypetunnel.southbound.ovsdb.snapshot import INSTALLED

log = logging.getLogger(__name__)

# How long a hot move waits for the controller's "installed" mark before switching over.
INSTALL_WAIT_S = 5.0
# How long both of a hot-moved VM's interfaces are up together (see move_vm).
SWITCHOVER_OVERLAP_S = 0.1


def plug_vm(state: LabState, vm: LabVM, hv: LabHypervisor) -> None:
    if vm.owns_netns:
        state.note_netns(vm.netns)
    if vm.owns_netns or not netns_exists(vm.netns):
        netns_add(vm.netns)
    if link_exists(vm.netns, vm.ifname) and not link_exists(hv.netns, vm.port):
        raise LabError(f"namespace {vm.netns} already has an {vm.ifname}")
    if not link_exists(hv.netns, vm.port):
        veth_between(hv.netns, vm.port, vm.netns, vm.ifname)
    _configure_hv_end(vm, hv, vm.port)
    ip(vm.netns, "link", "set", vm.ifname, "address", vm.mac, "mtu", str(vm.mtu))
    tx_offload_off(vm.netns, vm.ifname)
    ip(vm.netns, "link", "set", vm.ifname, "up")
    ip(vm.netns, "addr", "replace", f"{vm.ip}/{vm.prefixlen}", "dev", vm.ifname)
    if vm.gateway:
        ip(vm.netns, "route", "replace", "default", "via", vm.gateway)
    _add_port(vm, hv, vm.port)


def _configure_hv_end(vm: LabVM, hv: LabHypervisor, port: str) -> None:
    ip(hv.netns, "link", "set", port, "alias", vm.vm_id, "mtu", str(vm.mtu))
    tx_offload_off(hv.netns, port)
    ip(hv.netns, "link", "set", port, "up")


def _add_port(vm: LabVM, hv: LabHypervisor, port: str) -> None:
    # The external_ids Nova/os-vif write; iface-id is what the controller keys on.
    hv.ovs.vsctl("--may-exist", "add-port", INTEGRATION_BRIDGE, port,
                 "--", "set", "Interface", port,
                 f"external_ids:iface-id={_q(vm.vm_id)}",
                 f"external_ids:attached-mac={_q(vm.mac)}",
                 "external_ids:iface-status=active")


def _q(value: str) -> str:
    return f'"{value}"'


def _ip_batch(state: LabState, vm: LabVM, commands: list[str]) -> None:
    batch_file = Path(state.directory) / f"move-{vm.port}.ip"
    batch_file.write_text("\n".join(commands) + "\n")
    try:
        ip(vm.netns, "-batch", str(batch_file))
    finally:
        batch_file.unlink(missing_ok=True)


def unplug_vm(vm: LabVM, hv: LabHypervisor | None) -> None:
    """Delete the port, the veth and (if the lab made it) the namespace; tolerates a dead OVS
    or a half-plugged VM."""
    if hv is not None:
        hv.ovs.vsctl("--if-exists", "del-port", INTEGRATION_BRIDGE, vm.port, check=False)
        if netns_exists(hv.netns):
            ip(hv.netns, "link", "del", vm.port, check=False)
    if vm.owns_netns:
        kill_netns_processes(vm.netns)
        netns_del(vm.netns)
    elif netns_exists(vm.netns):
        ip(vm.netns, "link", "del", vm.ifname, check=False)


def move_vm(state: LabState, vm: LabVM, src: LabHypervisor, dst: LabHypervisor) -> None:
    """Re-home a running VM onto another hypervisor, as a live migration ends.

    Processes in the VM namespace keep running and keep their sockets: only the interface
    under them changes. The destination port is plugged first (as Nova does, so the controller
    can program it) and the controller's "installed" mark awaited; then the new interface takes
    the VM's MAC and address, both stay up for a short overlap, the old one goes, and finally
    the source port is unplugged.
    """
    # The new interface gets the other of two names, so the old one can stay up (same MAC and
    # address) until the new one is fully configured: the VM is never without a live link.
    new_if = "eth1" if vm.ifname == "eth0" else "eth0"
    if link_exists(vm.netns, new_if):
        ip(vm.netns, "link", "del", new_if)  # left over by an interrupted move
    veth_between(dst.netns, vm.port, vm.netns, new_if)
    _configure_hv_end(vm, dst, vm.port)
    ip(vm.netns, "link", "set", new_if, "mtu", str(vm.mtu))
    tx_offload_off(vm.netns, new_if)
    _add_port(vm, dst, vm.port)
    # As Nova waits for network-vif-plugged: switch over only once the controller has marked
    # the new port installed (its network programmed on every switch that carries it). A
    # controller that does not answer costs packets, never the move.
    if not dst.ovs.wait_until("Interface", vm.port, f"external_ids:{INSTALLED}=true",
                              timeout=INSTALL_WAIT_S):
        log.warning("%s: port %s not marked installed within %.0f s: switching over anyway",
                    vm.vm_id, vm.port, INSTALL_WAIT_S)

    _ip_batch(state, vm, [f"link set dev {new_if} address {vm.mac}",
                          f"link set dev {new_if} up",
                          f"addr add {vm.ip}/{vm.prefixlen} dev {new_if}"])
    # Both interfaces are live for a moment, as both ends of a live migration are while the
    # fabric clones frames to both: a frame whose copy reached the new port a little before it
    # came up still arrives through the old one. Without the overlap, one frame straddling the
    # swap (copy to the new end too early, copy to the old end too late) was lost in about
    # one move in five. This models a migration's switch-over; it is not a wait for a state.
    time.sleep(SWITCHOVER_OVERLAP_S)
    # The old interface's address goes before the interface: its connected route was the
    # preferred one (the older of two equal routes), so a reply routed just as `link del`
    # takes the device down would be dropped. Without the address, replies already leave by
    # the new interface while the old one still accepts what reaches it.
    rest = [f"addr del {vm.ip}/{vm.prefixlen} dev {vm.ifname}", f"link del dev {vm.ifname}"]
    if vm.gateway:
        rest.append(f"route replace default via {vm.gateway}")
    _ip_batch(state, vm, rest)
    vm.ifname = new_if
    # The old pair is gone from the kernel; drop its row so the source br-int forgets it.
    src.ovs.vsctl("--if-exists", "del-port", INTEGRATION_BRIDGE, vm.port, check=False)
