"""Real packets through a real lab: reachability, isolation, encapsulation, scope, spoofing."""

from __future__ import annotations

import json
import subprocess

import pytest

from hypetunnel.lab.capture import capture, encapsulations
from hypetunnel.lab.proc import wait_until
from hypetunnel.lab.state import LabVM
from hypetunnel.lab.verify import summary, verify
from tests.lab.conftest import LabFabric

pytestmark = pytest.mark.lab


def cross_hv_pair(f: LabFabric, tenant: str) -> tuple[LabVM, LabVM]:
    vms = [v for v in f.lab.vms.values() if v.vm_id.startswith(f"{tenant}/")]
    for a in vms:
        for b in vms:
            if a.hypervisor != b.hypervisor and a.ip.rsplit(".", 1)[0] == b.ip.rsplit(".", 1)[0]:
                return a, b
    raise AssertionError(f"example has no cross-hypervisor pair in {tenant}")


def vni_of(f: LabFabric, tenant: str, vm: LabVM) -> int:
    intent = f.api.get_intent()
    t = next(t for t in intent["tenants"] if t["name"] == tenant)
    vm_net = next(v["network"] for v in t["vms"] if f"{tenant}/{v['name']}" == vm.vm_id)
    return int(next(n["vni"] for n in t["networks"] if n["name"] == vm_net))


def ping(f: LabFabric, src: LabVM, ip: str, count: int = 3) -> bool:
    cp = f.lab.exec(src.vm_id, ["ping", "-c", str(count), "-i", "0.2", "-W", "1", ip],
                    check=False)
    return cp.returncode == 0


def test_every_same_network_pair_reaches_and_no_other_pair_does(fabric: LabFabric) -> None:
    results, _ = verify(fabric.lab, fabric.api)
    s = summary(results)
    assert s["failures"] == []
    assert s["reach_total"] > 0 and s["isolation_total"] > 0
    # The example has same-IP VMs in different tenants; they must have been probed.
    ips: dict[str, list[str]] = {}
    for v in fabric.lab.vms.values():
        ips.setdefault(v.ip, []).append(v.vm_id)
    same_ip = [ids for ids in ips.values() if len({i.split("/")[0] for i in ids}) > 1]
    assert same_ip, "example must contain identical IPs in different tenants"
    probed = {(r.src, r.dst) for r in results if not r.expected}
    assert any((a, b) in probed for ids in same_ip for a in ids for b in ids if a != b)


@pytest.mark.parametrize("tenant", ["acme", "globex"])
def test_tcp_iperf3_across_hypervisors(fabric: LabFabric, tenant: str) -> None:
    a, b = cross_hv_pair(fabric, tenant)
    server = fabric.lab.spawn(b.vm_id, ["iperf3", "-s", "-1", "-B", b.ip],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: ":5201" in fabric.lab.exec(b.vm_id, ["ss", "-ltn"]).stdout, 10,
                   "iperf3 server to listen")
        cp = fabric.lab.exec(a.vm_id, ["iperf3", "-c", b.ip, "-t", "2", "-J"], check=False)
        assert cp.returncode == 0, cp.stdout[-500:]
        end = json.loads(cp.stdout)["end"]
        assert "sum_received" in end, cp.stdout[-1500:]
        bps = end["sum_received"]["bits_per_second"]
        assert bps > 10e6, f"{tenant}: only {bps / 1e6:.1f} Mbit/s"
    finally:
        server.kill()
        server.wait()


def test_underlay_carries_vxlan_vni_for_acme_and_gre_key_for_globex(fabric: LabFabric) -> None:
    pairs = {t: cross_hv_pair(fabric, t) for t in ("acme", "globex")}

    def pings() -> None:
        for a, b in pairs.values():
            assert ping(fabric, a, b.ip)

    seen = encapsulations(capture(fabric.lab, pings))
    acme_vni = vni_of(fabric, "acme", pairs["acme"][0])
    globex_vni = vni_of(fabric, "globex", pairs["globex"][0])
    assert ("vxlan", acme_vni) in {(e.kind, e.vni) for e in seen}
    assert ("gre", globex_vni) in {(e.kind, e.vni) for e in seen}
    assert not any(e.kind == "gre" and e.vni == acme_vni for e in seen)
    assert not any(e.kind == "vxlan" and e.vni == globex_vni for e in seen)


def test_broadcast_reaches_no_hypervisor_without_the_tenant(fabric: LabFabric) -> None:
    overlay = fabric.api.overlay()["hypervisors"]
    hosts = {h["hypervisor"]: {n["tenant"] for n in h["networks"]} for h in overlay}
    tenant = next(t for t in ("acme", "globex")
                  if any(t not in ts for ts in hosts.values()))
    outsiders = [hv for hv, ts in hosts.items() if tenant not in ts]
    insiders = [hv for hv, ts in hosts.items() if tenant in ts]
    src = next(v for v in fabric.lab.vms.values() if v.vm_id.startswith(f"{tenant}/"))
    subnet = src.ip.rsplit(".", 1)[0]

    def broadcast() -> None:
        fabric.lab.exec(src.vm_id, ["ping", "-b", "-c", "3", "-i", "0.2", "-W", "1",
                                    f"{subnet}.255"], check=False)

    lines = capture(fabric.lab, broadcast)
    ip_of = {hv: fabric.lab.hypervisor(hv).underlay_ip for hv in hosts}
    to = {hv: [ln for ln in lines if f"> {ip_of[hv]}." in ln or f"> {ip_of[hv]}:" in ln]
          for hv in hosts}
    assert any(to[hv] for hv in insiders if hv != src.hypervisor), "flood never left the source"
    for hv in outsiders:
        assert to[hv] == [], f"{tenant} broadcast reached {hv}: {to[hv][:2]}"


def test_forged_source_mac_or_ip_gets_nothing_through(fabric: LabFabric) -> None:
    a, b = cross_hv_pair(fabric, "acme")
    assert ping(fabric, a, b.ip)
    ex = fabric.lab.exec
    # Forged IP: a second address on the VM's interface, used as the source.
    forged_ip = b.ip.rsplit(".", 1)[0] + ".222"
    ex(a.vm_id, ["ip", "addr", "add", f"{forged_ip}/32", "dev", a.ifname])
    try:
        assert ex(a.vm_id, ["ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", forged_ip, b.ip],
                  check=False).returncode != 0
    finally:
        ex(a.vm_id, ["ip", "addr", "del", f"{forged_ip}/32", "dev", a.ifname])
    # Forged MAC.
    ex(a.vm_id, ["ip", "link", "set", a.ifname, "address", "02:66:66:66:66:66"])
    try:
        ex(a.vm_id, ["ip", "neigh", "flush", "dev", a.ifname])
        assert not ping(fabric, a, b.ip)
    finally:
        ex(a.vm_id, ["ip", "link", "set", a.ifname, "address", a.mac])
    ex(a.vm_id, ["ip", "neigh", "flush", "dev", a.ifname])
    assert ping(fabric, a, b.ip), "the genuine VM must work again"
