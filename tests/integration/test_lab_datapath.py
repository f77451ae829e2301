"""The namespace lab carries real packets: two hypervisors, one VM on each, br-int programmed by
hand (no controller) with one tunnel port per side. Proves ARP, ping at full VM MTU with DF, TCP
throughput, the encapsulation on the wire, and that down() leaves nothing behind.

Throughputs are printed (run with -s to see them).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hypetunnel.compiler.tunnels import tunnel_port_name
from hypetunnel.lab.netns import lab_prefix, netns_list, pid_alive
from hypetunnel.lab.proc import run, wait_until
from hypetunnel.lab.state import DEFAULT_ROOT, LabHypervisor, LabVM
from hypetunnel.lab.topology import Lab
from hypetunnel.model.intent import ENCAP_OVERHEAD

pytestmark = [pytest.mark.lab, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

VNI = 100
IPERF_PORT = 5201
# How each encapsulation shows in `tcpdump -v` of the underlay, VNI/key 100 = 0x64.
WIRE = {
    "vxlan": ("udp port 4789", "vni 100"),
    "gre": ("ip proto 47", "key=0x64"),
    "geneve": ("udp port 6081", "vni 0x64"),
}


def _lab_name() -> str:
    return f"t{os.getpid() % 10_000_000}{secrets.token_hex(2)}"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    lab = Lab(_lab_name())
    try:
        lab.create_underlay()
        lab.add_hypervisor("hv1")
        lab.add_hypervisor("hv2")
        yield lab
    finally:
        lab.down()


@dataclass
class Overlay:
    lab: Lab
    encap: str
    mtu: int
    vm1: LabVM
    vm2: LabVM


def _ofport(hv: LabHypervisor, iface: str) -> str:
    wait_until(lambda: int(hv.ovs.vsctl("get", "Interface", iface, "ofport")) > 0, 10,
               f"ofport of {iface}")
    return hv.ovs.vsctl("get", "Interface", iface, "ofport")


def _program(local: LabHypervisor, remote: LabHypervisor, vm: LabVM, encap: str) -> str:
    """What a controller would do, by hand: one flow-keyed tunnel port and two flows."""
    tun = tunnel_port_name(encap, remote.underlay_ip)
    local.ovs.vsctl("add-port", "br-int", tun, "--", "set", "Interface", tun, f"type={encap}",
                    f"options:remote_ip={remote.underlay_ip}", "options:key=flow")
    tport, vport = _ofport(local, tun), _ofport(local, vm.port)
    local.ovs.ofctl("add-flow", f"table=0,priority=100,in_port={vport},"
                    f"actions=set_field:{VNI}->tun_id,output:{tport}", bridge_mgmt="br-int")
    local.ovs.ofctl("add-flow", f"table=0,priority=100,in_port={tport},tun_id={VNI},"
                    f"actions=output:{vport}", bridge_mgmt="br-int")
    return tun


@pytest.fixture(params=["vxlan", "gre", "geneve"])
def overlay(request: pytest.FixtureRequest, lab: Lab) -> Iterator[Overlay]:
    encap: str = request.param
    mtu = lab.underlay_mtu - ENCAP_OVERHEAD[encap]
    hv1, hv2 = lab.hypervisor("hv1"), lab.hypervisor("hv2")
    tuns: list[tuple[LabHypervisor, str]] = []
    try:
        vm1 = lab.add_vm(f"acme/{encap}1", "hv1", "02:00:00:00:01:01", "10.9.0.1", 24, mtu=mtu)
        vm2 = lab.add_vm(f"acme/{encap}2", "hv2", "02:00:00:00:01:02", "10.9.0.2", 24, mtu=mtu)
        tuns.append((hv1, _program(hv1, hv2, vm1, encap)))
        tuns.append((hv2, _program(hv2, hv1, vm2, encap)))
        yield Overlay(lab, encap, mtu, vm1, vm2)
    finally:
        for hv, tun in tuns:
            hv.ovs.vsctl("--if-exists", "del-port", "br-int", tun)
            hv.ovs.ofctl("del-flows", bridge_mgmt="br-int")
        for vm_id in [v for v in lab.vms if v.startswith(f"acme/{encap}")]:
            lab.remove_vm(vm_id)


def _ping_ok(lab: Lab, src: str, dst_ip: str, *extra: str) -> bool:
    cp = lab.exec(src, ["ping", "-c1", "-W1", *extra, dst_ip], check=False)
    return cp.returncode == 0


def _iperf(lab: Lab, server: str, server_ip: str, client: str) -> float:
    """Mbit/s received over a 2 s TCP run."""
    srv = lab.spawn(server, ["iperf3", "-s", "-1", "-B", server_ip, "-p", str(IPERF_PORT)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: bool(lab.exec(server, ["ss", "-Htln", f"sport = :{IPERF_PORT}"])
                                .stdout.strip()), 10, "iperf3 server to listen")
        cp = lab.exec(client, ["iperf3", "-c", server_ip, "-p", str(IPERF_PORT), "-t", "2",
                               "-J"], timeout=30)
        return float(json.loads(cp.stdout)["end"]["sum_received"]["bits_per_second"]) / 1e6
    finally:
        srv.kill()
        srv.wait(timeout=10)


def test_overlay_ping_arp_full_mtu_and_tcp(overlay: Overlay) -> None:
    lab, vm1, vm2 = overlay.lab, overlay.vm1, overlay.vm2
    # The very first packet to a new tunnel endpoint is dropped while OVS resolves the remote
    # endpoint's MAC on the underlay; so poll for the first answer, then demand zero loss.
    wait_until(lambda: _ping_ok(lab, vm1.vm_id, vm2.ip), 15, f"first ping over {overlay.encap}")
    cp = lab.exec(vm1.vm_id, ["ping", "-c5", "-i0.2", "-W2", vm2.ip])
    assert " 0% packet loss" in cp.stdout
    # ARP went through the tunnel: VM1 learnt VM2's real MAC.
    neigh = lab.exec(vm1.vm_id, ["ip", "neigh", "show", vm2.ip]).stdout
    assert vm2.mac in neigh
    # A full-size frame with DF: VM MTU + encapsulation fits the underlay exactly.
    cp = lab.exec(vm1.vm_id, ["ping", "-c2", "-W2", "-M", "do", "-s", str(overlay.mtu - 28),
                              vm2.ip], check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    mbps = _iperf(lab, vm2.vm_id, vm2.ip, vm1.vm_id)
    print(f"\n[throughput] {overlay.encap} overlay, VM MTU {overlay.mtu}: {mbps:.0f} Mbit/s")
    assert mbps > 20


def test_overlay_encapsulation_on_the_wire(overlay: Overlay, tmp_path: Path) -> None:
    lab, vm1, vm2 = overlay.lab, overlay.vm1, overlay.vm2
    wait_until(lambda: _ping_ok(lab, vm1.vm_id, vm2.ip), 15, f"first ping over {overlay.encap}")
    bpf, vni_text = WIRE[overlay.encap]
    pcap, log = tmp_path / "ul.pcap", tmp_path / "tcpdump.log"
    with log.open("w") as err:
        dump = lab.spawn("ul", ["tcpdump", "-i", "br0", "-nn", "-U", "-c", "4", "-w", str(pcap),
                                bpf], stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_until(lambda: "listening on" in log.read_text(), 10, "tcpdump to listen")
        lab.exec(vm1.vm_id, ["ping", "-c2", "-i0.2", "-W2", vm2.ip])
        dump.wait(timeout=10)
    finally:
        if dump.poll() is None:
            dump.kill()
            dump.wait(timeout=10)
    text = run(["tcpdump", "-r", str(pcap), "-nn", "-v"]).stdout
    hv1, hv2 = lab.hypervisor("hv1"), lab.hypervisor("hv2")
    for a, b in ((hv1, hv2), (hv2, hv1)):  # outer header: hypervisor to hypervisor, both ways
        assert re.search(rf"{re.escape(a.underlay_ip)}(\.\d+)? > {re.escape(b.underlay_ip)}\b",
                         text), text
    assert vni_text in text, text
    assert f"{vm1.ip} > {vm2.ip}: ICMP echo request" in text, text


def test_underlay_throughput_through_ovs_userspace(lab: Lab) -> None:
    hv2 = lab.hypervisor("hv2")
    wait_until(lambda: _ping_ok(lab, "hv1", hv2.underlay_ip), 10, "underlay ping")
    mbps = _iperf(lab, "hv2", hv2.underlay_ip, "hv1")
    print(f"\n[throughput] underlay br-phy to br-phy, MTU {lab.underlay_mtu}: {mbps:.0f} Mbit/s")
    assert mbps > 20


def _lab_processes(lab: Lab) -> list[int]:
    return [p for hv in lab.hypervisors.values() for p in hv.ovs.pids() if pid_alive(p)]


def test_hypervisor_is_set_up_like_a_compute_node_and_down_removes_everything() -> None:
    lab = Lab(_lab_name())
    sock = f"unix:{lab.directory}/of.sock"
    sleeper: subprocess.Popen[str] | None = None
    pids: list[int] = []
    try:
        hv = lab.add_hypervisor("hv1", controller_targets=[sock, "tcp:127.0.0.1:6653"])
        vm = lab.add_vm("acme/web1", "hv1", "02:00:00:00:02:01", "10.9.1.1", 24, mtu=1450)
        ovs = hv.ovs
        assert ovs.vsctl("get", "Bridge", "br-int", "fail_mode") == "secure"
        assert ovs.vsctl("get", "Bridge", "br-int", "protocols") == '[OpenFlow13]'
        assert ovs.vsctl("get", "Bridge", "br-int", "datapath_type") == "netdev"
        assert ovs.vsctl("get", "Bridge", "br-int", "other_config:disable-in-band") == '"true"'
        targets = ovs.vsctl("--columns=target,max_backoff", "list", "Controller")
        assert sock in targets and "tcp:127.0.0.1:6653" in targets
        assert targets.count("1000") == 2
        assert ovs.vsctl("get", "Interface", vm.port, "external_ids:iface-id") == '"acme/web1"'
        assert hv.ovsdb == f"unix:{hv.ovs_dir}/db.sock"
        assert lab.exec("hv1", ["ip", "-br", "addr", "show", "br-phy"]).stdout.count(
            hv.underlay_ip) == 1
        assert "02:00:00:00:02:01" in lab.exec("web1", ["ip", "link", "show", "eth0"]).stdout
        assert lab.name in Lab.list()
        # A hypervisor can leave the lab alone, with its VMs, OVS and namespace.
        hv2 = lab.add_hypervisor("hv2")
        gone = lab.add_vm("acme/gone", "hv2", "02:00:00:00:02:02", "10.9.1.2", 24)
        hv2_pids = [p for p in hv2.ovs.pids() if pid_alive(p)]
        lab.remove_hypervisor("hv2")
        assert not [p for p in hv2_pids if pid_alive(p)]
        assert not [n for n in netns_list() if n in (hv2.netns, gone.netns)]
        assert set(lab.hypervisors) == {"hv1"} and set(lab.vms) == {"acme/web1"}
        assert not Path(hv2.ovs_dir).exists()
        # A process left running inside a VM must not survive down().
        sleeper = lab.spawn("acme/web1", ["sleep", "300"])
        pids = [*_lab_processes(lab), sleeper.pid]
        assert len(pids) == 3
    finally:
        # From another process, as `hypetunnel lab down` would.
        other = subprocess.run(
            [sys.executable, "-c", f"from hypetunnel.lab.topology import Lab; "
             f"Lab.load({lab.name!r}).down()"], capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")})
        lab.down()  # idempotent, and also the safety net if the subprocess failed
    assert other.returncode == 0, other.stderr
    assert sleeper is not None
    sleeper.wait(timeout=10)
    assert not [n for n in netns_list() if n.startswith(lab_prefix(lab.name))]
    assert not [p for p in pids if pid_alive(p)]
    assert not (DEFAULT_ROOT / lab.name).exists()
    assert lab.name not in Lab.list()
    Lab.destroy(lab.name)  # no state at all: still fine


def test_down_cleans_a_half_built_lab() -> None:
    lab = Lab(_lab_name())
    try:
        lab.add_hypervisor("hv1")
        # Simulate the worst crash: the state file lost every record of the hypervisor, its
        # namespaces and its OVS; down() must still find them by the lab's name prefix.
        state = json.loads((lab.directory / "state.json").read_text())
        state.update(hypervisors={}, namespaces=[], ovs_dirs=[], underlay_ready=False)
        (lab.directory / "state.json").write_text(json.dumps(state))
        ovs_pids = [p for p in lab.hypervisor("hv1").ovs.pids() if pid_alive(p)]
        assert ovs_pids
    finally:
        Lab.load(lab.name).down()
    assert not [n for n in netns_list() if n.startswith(lab_prefix(lab.name))]
    assert not [p for p in ovs_pids if pid_alive(p)]
    assert not lab.directory.exists()


@pytest.mark.parametrize("overlay", ["vxlan"], indirect=True)
def test_hot_move_keeps_a_tcp_stream_alive(overlay: Overlay) -> None:
    """move_vm re-homes VM1 from hv1 onto hv2 while an iperf3 stream from VM1 runs."""
    lab, vm1, vm2 = overlay.lab, overlay.vm1, overlay.vm2
    wait_until(lambda: _ping_ok(lab, vm1.vm_id, vm2.ip), 15, "first ping")
    srv = lab.spawn(vm2.vm_id, ["iperf3", "-s", "-1", "-B", vm2.ip, "-p", str(IPERF_PORT)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # The client must not start before the server listens, or it fails at once.
    wait_until(lambda: f":{IPERF_PORT}" in lab.exec(vm2.vm_id, ["ss", "-Hltn"]).stdout, 10,
               "iperf3 server to listen")
    cli = lab.spawn(vm1.vm_id, ["iperf3", "-c", vm2.ip, "-p", str(IPERF_PORT), "-t", "6", "-i",
                                "0.5", "-J"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        # iperf3 has a control and a data connection; move once both are up.
        wait_until(lambda: len(lab.exec(vm2.vm_id, ["ss", "-Htn", "state", "established"])
                               .stdout.splitlines()) >= 2, 10, "iperf3 data connection")
        moved = lab.move_vm(vm1.vm_id, "hv2")
        assert moved.hypervisor == "hv2"
        hv1, hv2 = lab.hypervisor("hv1"), lab.hypervisor("hv2")
        # The "controller" follows the VM: on hv2 the two VMs are now local to each other.
        p1, p2 = _ofport(hv2, vm1.port), _ofport(hv2, vm2.port)
        for a, b in ((p1, p2), (p2, p1)):
            hv2.ovs.ofctl("add-flow", f"table=0,priority=200,in_port={a},actions=output:{b}",
                          bridge_mgmt="br-int")
        assert vm1.port not in hv1.ovs.vsctl("list-ports", "br-int")
        out, _ = cli.communicate(timeout=30)
    finally:
        for p in (cli, srv):
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
    assert cli.returncode == 0, out[-2000:]
    result = json.loads(out)
    # The same connection still carries data after the move (TCP may back off for a while
    # after the gap these hand-written flows leave: no controller pre-programs hv2 here).
    late = result["intervals"][-4:]
    print("\n[hot move] Mbit/s per 0.5 s:",
          [round(i["sum"]["bits_per_second"] / 1e6) for i in result["intervals"]])
    assert any(i["sum"]["bytes"] > 0 for i in late), late
    # Same MAC and address inside the VM, on its new interface (eth0 <-> eth1 alternate, so
    # the old one stayed up until the new one was ready).
    link = lab.exec(vm1.vm_id, ["ip", "-br", "link", "show", moved.ifname]).stdout
    assert vm1.mac in link
    assert _ping_ok(lab, vm1.vm_id, vm2.ip)


def test_kill_and_restart_hypervisor_ovs(lab: Lab) -> None:
    hv1, hv2 = lab.hypervisor("hv1"), lab.hypervisor("hv2")
    vm = lab.add_vm("acme/killme", "hv2", "02:00:00:00:03:01", "10.9.2.1", 24, mtu=1450)
    try:
        old = [p for p in hv2.ovs.pids() if pid_alive(p)]
        assert len(old) == 2
        lab.kill_hypervisor("hv2")
        assert not [p for p in old if pid_alive(p)]
        # With the userspace datapath br-phy is a tap owned by ovs-vswitchd: it died with it.
        assert not _ping_ok(lab, "hv1", hv2.underlay_ip)
        lab.restart_hypervisor("hv2")
        assert len([p for p in hv2.ovs.pids() if pid_alive(p)]) == 2
        wait_until(lambda: _ping_ok(lab, "hv1", hv2.underlay_ip), 15, "underlay after restart")
        # The VM's port came back from the database, iface-id and all.
        assert int(_ofport(hv2, vm.port)) > 0
        assert hv2.ovs.vsctl("get", "Interface", vm.port, "external_ids:iface-id") == \
            '"acme/killme"'
        assert _ping_ok(lab, "hv2", hv1.underlay_ip)
    finally:
        lab.remove_vm(vm.vm_id)


def test_vm_in_a_namespace_the_caller_owns(lab: Lab) -> None:
    ns = f"htcaller{os.getpid()}"
    run(["ip", "netns", "add", ns])
    try:
        vm = lab.add_vm("acme/own", "hv1", "02:00:00:00:04:01", "10.9.3.1", 24, netns=ns)
        assert not vm.owns_netns
        assert lab.netns_of("acme/own") == ns
        assert "10.9.3.1/24" in run(["ip", "-n", ns, "-br", "addr", "show", "eth0"]).stdout
        lab.remove_vm("acme/own")
        # The caller's namespace stays; only the lab's interface left it.
        assert os.path.exists(f"/run/netns/{ns}")
        assert run(["ip", "-n", ns, "link", "show", "eth0"], check=False).returncode != 0
        assert vm.port not in lab.hypervisor("hv1").ovs.vsctl("list-ports", "br-int")
    finally:
        run(["ip", "netns", "del", ns], check=False)
