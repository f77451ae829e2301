"""Names and namespace primitives of the lab.

Every namespace name starts with "ht-<lab>-", and lab names have no dash, so one lab's prefix is
never a prefix of another's: two labs coexist, and a lab can sweep its own namespaces by prefix.
Links are created directly inside their namespaces (never in the root namespace), so interface
names only need to be unique within one namespace; they still must fit in 15 characters.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess

from hypetunnel.lab.proc import LabError, pid_alive, run, wait_until

IFNAMSIZ = 15  # usable characters of a Linux interface name
LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,15}$")
HOST_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
VM_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*(/[a-z0-9][a-z0-9-]*)?$")
UNDERLAY_BRIDGE = "br0"
VM_IFNAME = "eth0"  # the VM's interface, as a guest would see it
HV_UPLINK = "eth0"  # the hypervisor's underlay NIC
SERVICE_IFNAME = "mgmt0"  # a service namespace's interface on the management overlay


# --- names ---------------------------------------------------------------------------------


def check_lab_name(lab: str) -> str:
    if not LAB_NAME_RE.match(lab):
        raise LabError(f"lab name {lab!r} must match {LAB_NAME_RE.pattern} (no dash: it is a "
                       "namespace prefix)")
    return lab


def check_hypervisor_name(name: str) -> str:
    # "ul", "vm-*" and "svc-*" are the underlay's, the VMs' and the services' namespaces
    # within the lab prefix.
    if (not HOST_NAME_RE.match(name) or name == "ul" or name.startswith("vm-")
            or name.startswith("svc-")):
        raise LabError(f"hypervisor name {name!r} must match {HOST_NAME_RE.pattern} and be "
                       "neither 'ul' nor start with 'vm-' or 'svc-'")
    return name


def check_service_name(name: str) -> str:
    if not HOST_NAME_RE.match(name):
        raise LabError(f"service name {name!r} must match {HOST_NAME_RE.pattern}")
    return name


def check_vm_id(vm_id: str) -> str:
    if not VM_ID_RE.match(vm_id) or len(vm_id) > 64:
        raise LabError(f"VM id {vm_id!r} must look like 'tenant/vm'")
    return vm_id


def lab_prefix(lab: str) -> str:
    return f"ht-{check_lab_name(lab)}-"


def underlay_netns(lab: str) -> str:
    return lab_prefix(lab) + "ul"


def hypervisor_netns(lab: str, hypervisor: str) -> str:
    return lab_prefix(lab) + check_hypervisor_name(hypervisor)


def vm_netns(lab: str, vm_id: str) -> str:
    # "/" cannot be in a file name; "." never appears in tenant or VM names, so the mapping is
    # one-to-one ("a-b/c" and "a/b-c" stay distinct).
    return lab_prefix(lab) + "vm-" + check_vm_id(vm_id).replace("/", ".")


def service_netns(lab: str, service: str) -> str:
    return lab_prefix(lab) + "svc-" + check_service_name(service)


def _digest(key: str, length: int) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:length]


def hashed_ifname(prefix: str, key: str) -> str:
    """prefix + hash of key, exactly 15 characters: stable, unique in practice, always legal.

    The readable key goes into the link's alias (ip link shows it) and OVS external_ids.
    """
    room = IFNAMSIZ - len(prefix)
    if room < 8:
        raise LabError(f"interface prefix {prefix!r} leaves too little room for a hash")
    return prefix + _digest(key, room)


def vm_port_name(vm_id: str) -> str:
    """The hypervisor-side end of a VM's veth, the br-int port (Nova's "tap<port uuid>")."""
    return hashed_ifname("tap", check_vm_id(vm_id))


def service_port_name(service: str) -> str:
    """The hypervisor-side end of a service namespace's veth, a br-mgmt port."""
    return hashed_ifname("svc", check_service_name(service))


def uplink_port_name(hypervisor: str) -> str:
    """The underlay-namespace end of a hypervisor's uplink veth (a switch port)."""
    return hashed_ifname("ul", check_hypervisor_name(hypervisor))


# --- namespaces ----------------------------------------------------------------------------


def netns_list() -> list[str]:
    cp = run(["ip", "-j", "netns", "list"], check=False)
    if cp.returncode != 0 or not cp.stdout.strip():
        return []
    return [entry["name"] for entry in json.loads(cp.stdout)]


def netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def netns_add(name: str, quiet: bool = True) -> None:
    """Create a namespace with lo up; quiet disables IPv6 so no RS/MLD chatter disturbs
    packet captures."""
    if not netns_exists(name):
        run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])
    if quiet:
        for key in ("all", "default"):
            run(["sysctl", "-q", "-w", f"net.ipv6.conf.{key}.disable_ipv6=1"], netns=name)


def netns_pids(name: str) -> list[int]:
    cp = run(["ip", "netns", "pids", name], check=False)
    return [int(p) for p in cp.stdout.split() if p.isdigit()]


def kill_netns_processes(name: str, timeout: float = 5) -> None:
    """SIGKILL every process living in the namespace and wait until they are gone; a process
    left behind would keep the namespace (and its links) alive after `ip netns del`."""
    if not netns_exists(name):
        return
    killed: set[int] = set()

    def all_dead() -> bool:
        # A dying process leaves `ip netns pids` (its namespaces are released early in exit)
        # before it is really gone, so wait on every pid ever killed, not just on the list.
        for pid in netns_pids(name):
            if pid not in killed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        return not any(pid_alive(p) for p in killed)

    wait_until(all_dead, timeout, f"processes of namespace {name} to die")


def netns_del(name: str) -> None:
    if netns_exists(name):
        run(["ip", "netns", "del", name], check=False)


# --- links ---------------------------------------------------------------------------------


def ip(netns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["ip", "-n", netns, *args], check=check)


def veth_between(ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
    """One veth pair, each end born in its namespace (no name ever lives in the root ns)."""
    ip(ns_a, "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b)


def link_exists(netns: str, name: str) -> bool:
    return ip(netns, "link", "show", "dev", name, check=False).returncode == 0


def tx_offload_off(netns: str, ifname: str) -> None:
    # The userspace datapath hands packets to AF_PACKET without finishing partial checksums:
    # with TX checksum offload on, TCP segments leave with bad checksums and are dropped.
    run(["ethtool", "-K", ifname, "tx", "off"], netns=netns)
