"""The management overlay of the namespace lab: br-mgmt on every hypervisor, a loop-free VXLAN
mesh on the reserved VNI, OVSDB reachable over it, service namespaces for controllers and etcd,
and partitions (cut/heal) of a service. Real packets, real OVS (userspace datapath).

Run with -s to see the measured cost of the overlay per hypervisor.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from hypetunnel.compiler.tunnels import tunnel_port_name
from hypetunnel.lab.management import MGMT_BRIDGE
from hypetunnel.lab.management import tunnel_port_name as mgmt_port_name
from hypetunnel.lab.netns import lab_prefix, netns_list, pid_alive
from hypetunnel.lab.proc import LabError, run, wait_until
from hypetunnel.lab.state import LabHypervisor
from hypetunnel.lab.topology import Lab
from hypetunnel.model.intent import MANAGEMENT_VNI

pytestmark = [pytest.mark.lab, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

TENANT_VNI = 100
VM_NET = IPv4Network("10.9.0.0/24")
_QUAD = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3})\b")
MARKER = 1111  # ICMP payload size of the ping that closes a capture
_OUTER = re.compile(r"IP (\S+?)\.\d+ > (\S+?)\.4789: VXLAN.*?vni (\d+)")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    lab = Lab(f"m{os.getpid() % 10_000_000}{secrets.token_hex(2)}")
    try:
        for name in ("hv1", "hv2", "hv3"):
            lab.add_hypervisor(name)
        lab.add_service("ctl", "hv1")
        lab.add_service("etcd", "hv2")
        yield lab
    finally:
        lab.down()
    assert not [n for n in netns_list() if n.startswith(lab_prefix(lab.name))]


def _ping_ok(lab: Lab, src: str, dst_ip: str) -> bool:
    return lab.exec(src, ["ping", "-c1", "-W1", dst_ip], check=False).returncode == 0


def _reach(lab: Lab, src: str, dst_ip: str) -> None:
    """First answer within a deadline, then zero loss."""
    wait_until(lambda: _ping_ok(lab, src, dst_ip), 10, f"{src} -> {dst_ip}")
    cp = lab.exec(src, ["ping", "-c3", "-i0.2", "-W2", dst_ip], check=False)
    assert " 0% packet loss" in cp.stdout, cp.stdout


@dataclass(frozen=True)
class Frame:
    """One VXLAN frame seen on the underlay: outer addresses, VNI, inner summary line."""
    src: str
    dst: str
    vni: int
    inner: str

    def inner_ips(self) -> set[IPv4Address]:
        return {IPv4Address(q) for q in _QUAD.findall(self.inner)}


def _underlay_frames(lab: Lab, action: Callable[[], object], window: float = 0) -> list[Frame]:
    """VXLAN frames on the underlay switch while action runs. With window: every frame of the
    window seconds after the capture was armed (a fixed measuring window, not a wait); without:
    until a marker ping sent after the action has been captured."""
    pcap = lab.directory / f"ul-{secrets.token_hex(4)}.pcap"
    argv = ["tcpdump", "-i", "br0", "-nn", "-U", "-w", str(pcap), "udp port 4789"]
    if window:
        argv = ["timeout", "--signal=INT", str(window), *argv]
    proc = lab.spawn("ul", argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        said = [proc.stderr.readline()]
        while said[-1] and "listening" not in said[-1]:
            said.append(proc.stderr.readline())
        assert "listening" in said[-1], said
        action()
        if window:
            proc.wait(timeout=window + 10)
        else:
            hv2 = lab.hypervisor("hv2")
            lab.exec("hv1", ["ping", "-c1", "-W2", "-s", str(MARKER), str(hv2.mgmt_ip)])
            wait_until(lambda: f"length {MARKER + 8}" in _read_pcap(pcap), 10,
                       "the marker ping in the capture")
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    lines = _read_pcap(pcap).splitlines()
    frames = []
    for outer, inner in zip(lines, [*lines[1:], ""], strict=True):
        m = _OUTER.search(outer)
        if m and f"length {MARKER + 8}" not in inner:
            frames.append(Frame(m.group(1), m.group(2), int(m.group(3)), inner))
    return frames


def _read_pcap(pcap: Path) -> str:
    return run(["tcpdump", "-r", str(pcap), "-nn"], check=False).stdout


# --- reachability ----------------------------------------------------------------------------


def test_every_hypervisor_reaches_every_other_over_the_management_overlay(lab: Lab) -> None:
    hvs = list(lab.hypervisors.values())
    for a, b in itertools.permutations(hvs, 2):
        _reach(lab, a.name, str(b.mgmt_ip))
    for hv in hvs:
        assert hv.ovs.vsctl("get", "Bridge", MGMT_BRIDGE, "fail_mode") == "secure"
        assert hv.ovs.vsctl("get-controller", MGMT_BRIDGE) == ""
        assert hv.ovsdb_tcp == f"tcp:{hv.mgmt_ip}:6640"
        # The MAC every peer's flows name is the one the bridge really has.
        mac = lab.exec(hv.name, ["cat", f"/sys/class/net/{MGMT_BRIDGE}/address"]).stdout
        assert mac.strip() == hv.mgmt_mac


def test_service_reaches_remote_hypervisor_and_its_ovsdb_over_tcp(lab: Lab) -> None:
    hv3 = lab.hypervisor("hv3")
    assert lab.netns_of("ctl") == f"{lab_prefix(lab.name)}svc-ctl"
    _reach(lab, "ctl", str(hv3.mgmt_ip))
    _reach(lab, "ctl", lab.service("etcd").mgmt_ip)  # service to service across hypervisors
    assert hv3.ovsdb_tcp is not None
    cp = lab.exec("ctl", ["ovsdb-client", "--timeout=10", "list-dbs", hv3.ovsdb_tcp])
    assert "Open_vSwitch" in cp.stdout.split()
    # A full read of the remote switch's configuration, as a controller would do it.
    show = lab.exec("ctl", ["ovs-vsctl", f"--db={hv3.ovsdb_tcp}", "--timeout=10", "list-br"])
    assert set(show.stdout.split()) == {"br-phy", "br-int", MGMT_BRIDGE}
    # State survives in the state file for any other process.
    assert Lab.load(lab.name).service("ctl") == lab.service("ctl")


def test_switch_connects_to_a_controller_in_a_service_namespace(lab: Lab) -> None:
    ctl, hv3 = lab.service("ctl"), lab.hypervisor("hv3")
    listener = lab.spawn("ctl", [
        sys.executable, "-c",
        "import socket,sys\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(({ctl.mgmt_ip!r}, 6653)); s.listen(); print('ready', flush=True)\n"
        "c, a = s.accept(); print(a[0], flush=True)\n"], stdout=subprocess.PIPE)
    try:
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "ready"
        lab.set_controllers("hv3", [f"tcp:{ctl.mgmt_ip}:6653"])
        out, _ = listener.communicate(timeout=15)
        assert out.strip() == hv3.mgmt_ip  # ovs-vswitchd came over br-mgmt
    finally:
        lab.set_controllers("hv3", [])
        if listener.poll() is None:
            listener.kill()
            listener.wait(timeout=10)


# --- loop freedom and VNI separation --------------------------------------------------------


def test_broadcast_reaches_each_peer_once_and_is_never_reflooded(lab: Lab) -> None:
    ctl = lab.service("ctl")
    ctl_hv = lab.hypervisor(ctl.hypervisor)
    target = str(IPv4Network(lab.mgmt_subnet).network_address + 250)  # nobody has it
    def arp_broadcast() -> None:
        # arping exits 1 when nobody answers (expected: nobody has the address) and 2 when it
        # could not send at all; a missing arping raises. Only a sent broadcast may pass.
        cp = lab.exec("ctl", ["arping", "-c1", "-w1", "-I", "mgmt0", target], check=False)
        assert cp.returncode == 1, f"arping did not send one unanswered request: {cp}"

    frames = _underlay_frames(lab, arp_broadcast, window=1.5)
    probes = [f for f in frames if f"who-has {target} " in f.inner]
    peers = {h.underlay_ip for h in lab.hypervisors.values() if h.name != ctl_hv.name}
    print(f"\n[broadcast] {len(frames)} VXLAN frames in 1.5 s for one ARP broadcast")
    # Exactly one copy to each peer, all from the sender: split horizon, no storm.
    assert sorted(f.dst for f in probes) == sorted(peers), frames
    assert {f.src for f in probes} == {ctl_hv.underlay_ip}
    assert {f.vni for f in probes} == {MANAGEMENT_VNI}
    assert len(frames) <= 6, frames


@pytest.fixture
def tenant(lab: Lab) -> Iterator[tuple[str, str]]:
    """A tenant network on br-int between hv1 and hv2, programmed by hand as a controller
    would: one key=flow VXLAN port per side, next to br-mgmt's key=16777215 port to the same
    peer."""
    hv1, hv2 = lab.hypervisor("hv1"), lab.hypervisor("hv2")
    done: list[tuple[LabHypervisor, str]] = []
    try:
        vm1 = lab.add_vm("acme/m1", "hv1", "02:00:00:00:09:01", "10.9.0.1", 24, mtu=1450)
        vm2 = lab.add_vm("acme/m2", "hv2", "02:00:00:00:09:02", "10.9.0.2", 24, mtu=1450)
        for local, remote, vm in ((hv1, hv2, vm1), (hv2, hv1, vm2)):
            tun = tunnel_port_name("vxlan", remote.underlay_ip)
            local.ovs.vsctl("add-port", "br-int", tun, "--", "set", "Interface", tun,
                            "type=vxlan", f"options:remote_ip={remote.underlay_ip}",
                            "options:key=flow")
            done.append((local, tun))
            tport = local.ovs.vsctl("get", "Interface", tun, "ofport")
            vport = local.ovs.vsctl("get", "Interface", vm.port, "ofport")
            local.ovs.ofctl("add-flow", f"table=0,priority=100,in_port={vport},actions="
                            f"set_field:{TENANT_VNI}->tun_id,output:{tport}",
                            bridge_mgmt="br-int")
            local.ovs.ofctl("add-flow", f"table=0,priority=100,in_port={tport},"
                            f"tun_id={TENANT_VNI},actions=output:{vport}", bridge_mgmt="br-int")
        yield vm1.vm_id, vm2.ip
    finally:
        for hv, tun in done:
            hv.ovs.vsctl("--if-exists", "del-port", "br-int", tun)
            hv.ovs.ofctl("del-flows", bridge_mgmt="br-int")
        for vm_id in ("acme/m1", "acme/m2"):
            if vm_id in lab.vms:
                lab.remove_vm(vm_id)


def test_tenant_and_management_tunnels_to_one_peer_demultiplex_by_vni(
        lab: Lab, tenant: tuple[str, str]) -> None:
    vm, vm_peer_ip = tenant
    hv1, hv2 = lab.hypervisor("hv1"), lab.hypervisor("hv2")
    # Both kinds of port to the same remote exist side by side on one ovs-vswitchd.
    ports = hv1.ovs.vsctl("--columns=name,options", "list", "Interface")
    assert f"key={MANAGEMENT_VNI}" in ports.replace('"', "") and "key=flow" in ports
    assert mgmt_port_name(hv2.underlay_ip) in hv1.ovs.vsctl("list-ports", MGMT_BRIDGE)
    _reach(lab, vm, vm_peer_ip)
    _reach(lab, "hv1", str(hv2.mgmt_ip))

    def both() -> None:
        lab.exec(vm, ["ping", "-c3", "-i0.2", "-W2", vm_peer_ip])
        lab.exec("hv1", ["ping", "-c3", "-i0.2", "-W2", str(hv2.mgmt_ip)])
        lab.exec("ctl", ["ovsdb-client", "--timeout=10", "list-dbs", str(hv2.ovsdb_tcp)])

    frames = _underlay_frames(lab, both)
    mgmt_net = IPv4Network(lab.mgmt_subnet)
    tenant_frames = [f for f in frames if f.vni == TENANT_VNI]
    mgmt_frames = [f for f in frames if f.vni == MANAGEMENT_VNI]
    assert len(tenant_frames) >= 6 and len(mgmt_frames) >= 6, frames
    assert {f.vni for f in frames} == {TENANT_VNI, MANAGEMENT_VNI}
    # No tenant frame on the management VNI and no management frame on a tenant VNI.
    for f in tenant_frames:
        assert f.inner_ips() and all(a in VM_NET for a in f.inner_ips()), f
    for f in mgmt_frames:
        assert f.inner_ips() and all(a in mgmt_net for a in f.inner_ips()), f
    assert any("6640" in f.inner for f in mgmt_frames)  # OVSDB rode the management VNI


# --- partitions and restarts ----------------------------------------------------------------


def test_cut_service_partitions_it_both_ways_and_heal_restores_it(lab: Lab) -> None:
    ctl, etcd = lab.service("ctl"), lab.service("etcd")
    hv1, hv3 = lab.hypervisor("hv1"), lab.hypervisor("hv3")
    _reach(lab, "ctl", str(hv3.mgmt_ip))
    lab.cut_service("ctl")
    try:
        assert lab.service("ctl").cut
        assert not _ping_ok(lab, "ctl", str(hv3.mgmt_ip))  # out, to a remote hypervisor
        assert not _ping_ok(lab, "ctl", str(hv1.mgmt_ip))  # out, to its own hypervisor
        assert not _ping_ok(lab, "hv1", ctl.mgmt_ip)  # in, from its own hypervisor
        assert not _ping_ok(lab, "etcd", ctl.mgmt_ip)  # in, over a tunnel
        _reach(lab, "etcd", str(hv3.mgmt_ip))  # the rest of the overlay is untouched
    finally:
        lab.heal_service("ctl")
    assert not lab.service("ctl").cut
    _reach(lab, "ctl", str(hv3.mgmt_ip))
    _reach(lab, "etcd", ctl.mgmt_ip)
    _reach(lab, "hv1", ctl.mgmt_ip)
    assert etcd.mgmt_ip != ctl.mgmt_ip


def test_restarted_hypervisor_rejoins_the_overlay(lab: Lab) -> None:
    hv2 = lab.hypervisor("hv2")
    old = [p for p in hv2.ovs.pids() if pid_alive(p)]
    lab.kill_hypervisor("hv2")
    assert not [p for p in old if pid_alive(p)]
    assert not _ping_ok(lab, "hv1", str(hv2.mgmt_ip))
    lab.restart_hypervisor("hv2")
    _reach(lab, "hv1", str(hv2.mgmt_ip))
    _reach(lab, "ctl", lab.service("etcd").mgmt_ip)  # etcd's port on hv2 came back too
    cp = lab.exec("ctl", ["ovsdb-client", "--timeout=10", "list-dbs", str(hv2.ovsdb_tcp)])
    assert "Open_vSwitch" in cp.stdout


# --- cost, and the old behaviour ------------------------------------------------------------


def _rss_kib(hv: LabHypervisor) -> int:
    total = 0
    for pid in hv.ovs.pids():
        with open(f"/proc/{pid}/status") as f:
            total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return total


def test_cost_per_hypervisor_and_hypervisor_without_overlay(lab: Lab) -> None:
    t0 = time.monotonic()
    plain = lab.add_hypervisor("plain", management=False)
    t_plain = time.monotonic() - t0
    t0 = time.monotonic()
    meshed = lab.add_hypervisor("meshed")
    t_meshed = time.monotonic() - t0
    hv1 = lab.hypervisor("hv1")
    try:
        assert plain.mgmt_ip is None and plain.ovsdb_tcp is None
        assert MGMT_BRIDGE not in plain.ovs.vsctl("list-br").split()
        assert mgmt_port_name(plain.underlay_ip) not in hv1.ovs.vsctl("list-ports", MGMT_BRIDGE)
        with pytest.raises(LabError):
            lab.add_service("nope", "plain")
        _reach(lab, "meshed", str(hv1.mgmt_ip))
        _reach(lab, "ctl", str(meshed.mgmt_ip))
        rss_plain, rss_meshed = _rss_kib(plain), _rss_kib(meshed)
        print(f"\n[cost] add_hypervisor: {t_plain:.2f} s without, {t_meshed:.2f} s with the "
              f"management overlay ({len(lab.hypervisors) - 2} peers); OVS RSS "
              f"{rss_plain} KiB without, {rss_meshed} KiB with (+{rss_meshed - rss_plain} KiB)")
    finally:
        lab.remove_hypervisor("plain")
        lab.remove_hypervisor("meshed")
    # Every other hypervisor dropped its tunnel to the one that left.
    assert mgmt_port_name(meshed.underlay_ip) not in hv1.ovs.vsctl("list-ports", MGMT_BRIDGE)
    _reach(lab, "ctl", str(lab.hypervisor("hv3").mgmt_ip))


def test_remove_service_deletes_its_namespace_and_port(lab: Lab) -> None:
    for bad in (lambda: lab.add_service("hv1", "hv3"), lambda: lab.add_service("ctl", "hv3"),
                lambda: lab.add_hypervisor("svc-x"), lambda: lab.add_hypervisor("ctl")):
        with pytest.raises(LabError):
            bad()  # names stay unambiguous for netns_of/exec/spawn
    svc = lab.add_service("tmp", "hv3")
    hv3 = lab.hypervisor("hv3")
    proc = lab.spawn("tmp", ["sleep", "300"])
    try:
        _reach(lab, "ctl", svc.mgmt_ip)
        lab.remove_service("tmp")
        proc.wait(timeout=10)
        assert svc.netns not in netns_list()
        assert svc.port not in hv3.ovs.vsctl("list-ports", MGMT_BRIDGE)
        assert svc.mac not in hv3.ovs.ofctl("dump-flows", bridge_mgmt=MGMT_BRIDGE)
    finally:
        if "tmp" in lab.services:
            lab.remove_service("tmp")
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
