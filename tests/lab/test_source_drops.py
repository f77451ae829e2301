"""Real frames a VM sends to nobody die on its own hypervisor: not one leaves on the underlay.

A VM floods its hypervisor with frames to random MACs and with ARP requests for addresses no VM
owns (a raw socket inside the VM). tcpdump on the underlay must see none of them encapsulated,
while traffic to a real VM, ARP for an owned address and a broadcast still cross; and the two
per-network drop flows `trace` names count exactly what was sent.

The test runs in a network of its own (two VMs, on hv1 and hv2), so nothing else the shared lab
does can touch its counters; it removes the network and its VMs again, even on failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

import pytest

from hypetunnel.lab import datacenter
from hypetunnel.lab.netns import UNDERLAY_BRIDGE
from hypetunnel.lab.proc import wait_until
from hypetunnel.lab.state import LabVM
from tests.lab.conftest import LabFabric

pytestmark = pytest.mark.lab

NET = f"sd{os.getpid() % 100000}"
CIDR_PREFIX = "10.66.0"  # no network of the bundled example uses it
N_UNKNOWN = 25  # IPv4 frames to random MACs
N_UNOWNED_ARP = 25  # ARP requests for addresses no VM of the network has
N_KNOWN = 5  # control: frames to the real peer's MAC, which must cross
PORT_UNKNOWN, PORT_KNOWN, PORT_BROADCAST = 40404, 40405, 40406
UNOWNED = [f"{CIDR_PREFIX}.{200 + i}" for i in range(N_UNOWNED_ARP)]

# Runs inside the VM. argv: ifname src_mac src_ip, then "ip DST_MAC DST_IP PORT" or
# "arp TARGET_IP" items, one frame each, sent in order.
_SENDER = r"""
import socket, struct, sys
ifname, mac, ip = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), sys.argv[3]
src = socket.inet_aton(ip)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))

def checksum(b):
    total = sum(struct.unpack(f"!{len(b) // 2}H", b))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF

items = sys.argv[4:]
while items:
    kind = items.pop(0)
    if kind == "ip":
        dmac, dip, port = items.pop(0), items.pop(0), int(items.pop(0))
        udp = struct.pack("!HHHH", 40000, port, 16, 0) + b"hypetunl"
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, src,
                          socket.inet_aton(dip))
        hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
        frame = bytes.fromhex(dmac.replace(":", "")) + mac + b"\x08\x00" + hdr + udp
    else:
        target = socket.inet_aton(items.pop(0))
        arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + src + b"\x00" * 6 + target
        frame = b"\xff" * 6 + mac + b"\x08\x06" + arp
    s.send(frame)
"""


@dataclass
class UnderlayWatch:
    """tcpdump on the underlay bridge, read while it runs: a test can wait for a line."""

    f: LabFabric
    lines: list[str] = field(default_factory=list)
    _proc: subprocess.Popen[str] | None = None
    _reader: threading.Thread | None = None

    def __enter__(self) -> UnderlayWatch:
        self._proc = subprocess.Popen(
            ["ip", "netns", "exec", self.f.lab.underlay_netns, "tcpdump", "-l", "-nn", "-v",
             "-i", UNDERLAY_BRIDGE, "udp port 4789 or udp port 6081 or ip proto 47"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self._proc.stderr is not None and self._proc.stdout is not None
        first = self._proc.stderr.readline()  # "listening on ..." once the capture is armed
        if "listening" not in first:
            self.__exit__()
            raise RuntimeError(f"tcpdump did not start: {first}")
        self._reader = threading.Thread(target=self._read, args=(self._proc.stdout,),
                                        daemon=True)
        self._reader.start()
        return self

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:  # until tcpdump exits
            self.lines.append(line)

    def wait_for(self, what: Callable[[list[str]], bool], label: str) -> None:
        wait_until(lambda: what(list(self.lines)), 15, label)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.communicate(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=10)


@dataclass(frozen=True)
class PrivateNet:
    vni: int
    a: LabVM  # the sender, on hv1
    b: LabVM  # its peer, on hv2


@pytest.fixture(scope="module")
def net(fabric: LabFabric) -> Iterator[PrivateNet]:
    api = fabric.api
    try:
        api.create_network("acme", {"name": NET, "cidr": f"{CIDR_PREFIX}.0/24"})
        for vm, hv in ((f"{NET}a", "hv1"), (f"{NET}b", "hv2")):
            api.create_vm("acme", {"name": vm, "network": NET, "hypervisor": hv})
        datacenter.sync_vms(fabric.lab, api)
        datacenter.wait_converged(api, 60)
        nets = {n["name"]: n for n in api.list_networks("acme")}
        a, b = fabric.lab.vm(f"acme/{NET}a"), fabric.lab.vm(f"acme/{NET}b")
        assert a.ip not in UNOWNED and b.ip not in UNOWNED
        yield PrivateNet(int(nets[NET]["vni"]), a, b)
    finally:
        for vm in (f"{NET}a", f"{NET}b"):
            if any(v["name"] == vm for v in api.list_vms("acme")):
                api.delete_vm("acme", vm)
        if any(n["name"] == NET for n in api.list_networks("acme")):
            api.delete_network("acme", NET)
        datacenter.sync_vms(fabric.lab, api)
        datacenter.wait_converged(api, 60)


def n_packets(f: LabFabric, hv: str, cookie: str) -> int:
    dump = f.lab.hypervisor(hv).ovs.ofctl("dump-flows", f"cookie={cookie}/-1",
                                          bridge_mgmt="br-int")
    counts = re.findall(r"n_packets=(\d+)", dump)
    assert len(counts) == 1, f"expected one flow with cookie {cookie} on {hv}: {dump}"
    return int(counts[0])


def random_macs(n: int) -> list[str]:
    # Locally administered unicast, never one the controller allocates (02:00:...).
    return [":".join(["02", "dd", *(f"{b:02x}" for b in os.urandom(4))]) for _ in range(n)]


def test_trace_names_the_drop_flows(fabric: LabFabric, net: PrivateNet) -> None:
    out = fabric.api.trace(net.a.vm_id, "acme/web1")  # a MAC of another network
    assert out["verdict"] == "dropped at source: unknown destination MAC"
    assert out["tunnels"] == []
    out = fabric.api.trace(net.a.vm_id, UNOWNED[0], "arp")
    assert out["verdict"] == \
        "dropped at source: ARP request for an address no VM of the network owns"
    assert out["tunnels"] == []


def test_frames_to_nobody_never_reach_the_underlay_and_are_counted(
        fabric: LabFabric, net: PrivateNet) -> None:
    a, b = net.a, net.b
    [unknown] = fabric.api.trace(a.vm_id, "acme/web1")["drops"]
    [unowned] = fabric.api.trace(a.vm_id, UNOWNED[0], "arp")["drops"]
    assert unknown["hypervisor"] == unowned["hypervisor"] == a.hypervisor
    base_unknown = n_packets(fabric, a.hypervisor, unknown["cookie"])
    base_unowned = n_packets(fabric, a.hypervisor, unowned["cookie"])
    bcast = f"{CIDR_PREFIX}.255"
    frames: list[str] = []
    for mac in random_macs(N_UNKNOWN):
        frames += ["ip", mac, UNOWNED[0], str(PORT_UNKNOWN)]
    for ip in UNOWNED:
        frames += ["arp", ip]
    controls: list[str] = []
    for _ in range(N_KNOWN):
        controls += ["ip", b.mac, b.ip, str(PORT_KNOWN)]
    controls += ["ip", "ff:ff:ff:ff:ff:ff", bcast, str(PORT_BROADCAST)]

    def send(items: list[str]) -> None:
        fabric.lab.exec(a.vm_id, ["python3", "-c", _SENDER, a.ifname, a.mac, a.ip, *items])

    with UnderlayWatch(fabric) as watch:
        # Normal traffic first: the kernel's ARP for the peer (owned) is answered on hv1, and
        # the ping crosses the tunnel.
        fabric.lab.exec(a.vm_id, ["ip", "neigh", "flush", "dev", a.ifname])
        ping = fabric.lab.exec(a.vm_id, ["ping", "-c", "2", "-i", "0.2", "-W", "2", b.ip],
                               check=False)
        assert ping.returncode == 0, ping.stdout
        send(frames)
        # The controls go after the frames to nobody, on the same path: once tcpdump has
        # printed them, it would have printed any earlier frame that left hv1.
        send(controls)
        watch.wait_for(lambda ls: sum(f".{PORT_KNOWN}:" in ln for ln in ls) >= N_KNOWN
                       and any(f"{bcast}.{PORT_BROADCAST}:" in ln for ln in ls),
                       "the control frames on the underlay")
        lines = list(watch.lines)
    assert [ln for ln in lines if f".{PORT_UNKNOWN}:" in ln] == []
    assert [ln for ln in lines if "who-has" in ln and any(f"who-has {ip} " in ln
                                                          for ip in UNOWNED)] == []
    assert any(f"vni {net.vni}" in ln for ln in lines), "the controls went in the network's VNI"

    def counted() -> tuple[int, int]:
        return (n_packets(fabric, a.hypervisor, unknown["cookie"]) - base_unknown,
                n_packets(fabric, a.hypervisor, unowned["cookie"]) - base_unowned)

    # OVS folds datapath statistics into its flows' counters a little later: poll.
    wait_until(lambda: all(c >= n for c, n in zip(counted(), (N_UNKNOWN, N_UNOWNED_ARP),
                                                  strict=True)), 15, "the drop counters",
               interval=0.2)
    assert counted() == (N_UNKNOWN, N_UNOWNED_ARP)
