"""Tunnel health by BFD on the HA lab, from a real fault: an nftables drop on the underlay
switch between two hypervisors breaks their tunnel (tenant traffic and BFD alike, the
management overlay spared), BFD sees it, the controller raises `tunnel_down` for that tunnel
only, held open while it flaps (dampening), and cleared once it forwards again. BFD state
changes recreate no port and no flow."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hypetunnel.cli.democmd import bundled_example
from hypetunnel.compiler.tunnels import tunnel_port_name
from hypetunnel.fcaps.latency import PROBE_INTERVAL
from hypetunnel.fcaps.tunnels import DAMPEN
from hypetunnel.lab import datacenter, hapair
from hypetunnel.lab.proc import wait_until
from hypetunnel.lab.topology import Lab
from hypetunnel.model.intent import MANAGEMENT_VNI
from tests.lab.conftest import flow_tables, keep_failed_lab

pytestmark = pytest.mark.lab

# hv2-hv3 carries only acme's VXLAN tunnel; hv3 hosts only the etcd witness.
A, B = "hv2", "hv3"
TUNNEL = f"tunnel/{A}-{B}"
TABLE = "bfdrop"  # nftables table in the lab's underlay namespace


def nft(lab: Lab, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", lab.underlay_netns, "nft", "-f", "-"],
                          input=script, text=True, capture_output=True, check=check,
                          timeout=20)


def cut(lab: Lab, between: tuple[str, str] = (A, B)) -> None:
    """Drop VXLAN between two hypervisors' underlay addresses (A and B unless told), both
    ways, on the underlay bridge, except the management overlay's VNI (the controllers and
    etcd talk over it)."""
    a, b = (lab.hypervisor(h).underlay_ip for h in between)
    rules = "\n".join(f"    ip saddr {s} ip daddr {d} udp dport 4789 "
                      f"@th,96,24 != {MANAGEMENT_VNI} counter drop"
                      for s, d in ((a, b), (b, a)))
    nft(lab, f"table bridge {TABLE} {{\n  chain drops {{\n    type filter hook forward "
             f"priority 0; policy accept;\n{rules}\n  }}\n}}\n")


def heal(lab: Lab) -> None:
    nft(lab, f"delete table bridge {TABLE}", check=False)


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    name = f"bf{os.getpid() % 10000}"
    datacenter.down(name)
    lab: Lab | None = None
    try:
        lab = datacenter.up(bundled_example(), name, timeout=90, ha=True)
        yield lab
    finally:
        if lab is not None:
            heal(lab)
        if not keep_failed_lab(request):
            datacenter.down(name)


def tunnel_ports(lab: Lab) -> dict[str, list[str]]:
    """Each hypervisor's HypeTunnel tunnel ports (those the fabric has towards its peers)."""
    ips = {h.underlay_ip: n for n, h in lab.hypervisors.items()}
    out: dict[str, list[str]] = {}
    for name, hv in lab.hypervisors.items():
        ports = hv.ovs.vsctl("list-ports", "br-int").split()
        out[name] = sorted(p for p in ports for ip, peer in ips.items() if peer != name
                           and p in (tunnel_port_name(e, ip) for e in ("vxlan", "gre")))
    return out


def bfd(lab: Lab, hv: str, port: str) -> dict[str, str]:
    raw = lab.hypervisor(hv).ovs.vsctl("get", "Interface", port, "bfd_status")
    return dict(re.findall(r'(\w+)="?([^",}]*)"?', raw))


def uuids(lab: Lab) -> dict[str, str]:
    return {f"{hv}/{p}": lab.hypervisor(hv).ovs.vsctl("get", "Interface", p, "_uuid")
            for hv, ports in tunnel_ports(lab).items() for p in ports}


def all_forwarding(lab: Lab) -> bool:
    return all(bfd(lab, hv, p).get("forwarding") == "true"
               for hv, ports in tunnel_ports(lab).items() for p in ports)


def alarms(lab: Lab) -> list[dict[str, Any]]:
    with hapair.active_api(lab) as api:
        return [a for a in api.alarms(True) if a["kind"] == "tunnel_down"]


def open_tunnel_alarms(lab: Lab) -> list[dict[str, Any]]:
    return [a for a in alarms(lab) if a["cleared"] is None]


def pings(lab: Lab, src: str, dst: str) -> bool:
    return lab.exec(src, ["ping", "-c", "1", "-W", "1", lab.vm(dst).ip],
                    check=False).returncode == 0


def bfd_detection_ms(lab: Lab, hv: str, port: str, since: float) -> float | None:
    """When ovs-vswitchd logged the port's BFD session going down, in ms after `since`."""
    log = (lab.hypervisor(hv).ovs.directory / "ovs-vswitchd.log").read_text(errors="replace")
    for line in log.splitlines():
        if f"{port}: BFD state change: up->down" not in line:
            continue
        stamp = datetime.strptime(line.split("|", 1)[0], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
        if stamp >= since - 0.05:
            return (stamp - since) * 1000
    return None


def test_bfd_runs_on_every_tunnel_port_with_100_ms_times_3(lab: Lab) -> None:
    ports = tunnel_ports(lab)
    assert ports[A] and ports[B] and len(ports["hv1"]) == 3  # hv1-hv2 VXLAN and GRE, hv1-hv3
    for hv, names in ports.items():
        for p in names:
            assert lab.hypervisor(hv).ovs.vsctl("get", "Interface", p, "bfd") == \
                '{enable="true", min_rx="100", min_tx="100", mult="3"}'
    wait_until(lambda: all_forwarding(lab), 30, "every BFD session to forward")
    assert open_tunnel_alarms(lab) == []


def test_an_underlay_drop_raises_tunnel_down_for_that_tunnel_only_dampened_then_cleared(
        lab: Lab) -> None:
    wait_until(lambda: all_forwarding(lab), 30, "every BFD session to forward")
    assert pings(lab, "acme/web2", "acme/web3")
    flows, ports = flow_tables(lab), uuids(lab)
    before = {a["id"] for a in alarms(lab)}
    port_a = tunnel_port_name("vxlan", lab.hypervisor(B).underlay_ip)  # A's port to B
    wall, t0 = time.time(), time.monotonic()
    cut(lab)
    try:
        wait_until(lambda: any(a["resource"] == TUNNEL for a in open_tunnel_alarms(lab)),
                   15, f"the tunnel_down alarm of {TUNNEL}")
        detected = time.monotonic() - t0
        [alarm] = open_tunnel_alarms(lab)  # that tunnel's only: hv1-hv2, hv1-hv3 forward
        assert alarm["id"] not in before
        assert alarm["severity"] == "major" and alarm["service_affecting"] is True
        # Raised at the first end's report; the other end's follows within its own detection
        # time and updates the text.
        assert ("tenants with VMs at both ends: acme" in alarm["text"]
                and (f"{A}->{B} vxlan" in alarm["text"] or f"{B}->{A} vxlan" in alarm["text"])
                ), alarm
        wait_until(lambda: all(f"{x}->{y} vxlan (" in open_tunnel_alarms(lab)[0]["text"]
                               for x, y in ((A, B), (B, A))), 10, "both ends in the alarm")
        assert not pings(lab, "acme/web2", "acme/web3")  # the tunnel is really broken
        assert pings(lab, "acme/web1", "acme/web3") and pings(lab, "acme/web1", "acme/web2")
        assert pings(lab, "globex/web1", "globex/web2")
        bfd_ms = bfd_detection_ms(lab, A, port_a, wall)
    finally:
        heal(lab)
    # Back: BFD comes up again; the alarm is held open (dampening), so a second cut within
    # the minute updates it instead of raising another.
    wait_until(lambda: bfd(lab, A, port_a).get("forwarding") == "true", 20,
               "BFD to forward again")
    wait_until(lambda: pings(lab, "acme/web2", "acme/web3"), 10, "web3 to answer web2")
    wait_until(lambda: "held open" in open_tunnel_alarms(lab)[0]["text"], 10,
               "the alarm to say it is held open")
    cut(lab)
    try:
        wait_until(lambda: "down 2 times" in open_tunnel_alarms(lab)[0]["text"], 15,
                   "the same alarm updated by the second down")
    finally:
        heal(lab)
    back = time.monotonic()
    wait_until(lambda: all_forwarding(lab), 20, "every BFD session to forward")
    wait_until(lambda: not open_tunnel_alarms(lab), DAMPEN + 20, "the alarm to clear")
    held = time.monotonic() - t0
    [done] = [a for a in alarms(lab) if a["id"] not in before]  # one alarm for both downs
    assert done["id"] == alarm["id"] and done["cleared"] - done["raised"] >= DAMPEN
    assert "forwarding" in done["text"]
    # BFD going down and up recreated no tunnel port and changed no flow.
    assert uuids(lab) == ports
    assert flow_tables(lab) == flows
    with hapair.active_api(lab) as api:
        states = [e["state"] for e in api.events(f"tunnel/{A}/{B}")]
        changes = [e["change"] for e in api.events(TUNNEL) if e.get("change")]
    assert states.count("bfd down") >= 2 and states.count("bfd up") >= 2, states
    assert changes.count("raised") == 1 and changes[-1] == "cleared", changes
    print(f"\n[bfd] {TUNNEL}: tunnel_down raised {detected * 1000:.0f} ms after the drop "
          f"(BFD at {A} reported it after "
          f"{'?' if bfd_ms is None else f'{bfd_ms:.0f}'} ms); a second cut updated it; "
          f"cleared {(time.monotonic() - back):.1f} s after the last heal, "
          f"{held:.1f} s after the first cut (dampening {DAMPEN:.0f} s)")


CUT_OFF = "hv3"  # hosts acme/web3 and acme/db2, with tunnels to hv1 and hv2
ISOLATE = "bfdisolate"


def isolate(lab: Lab, hv: str) -> None:
    """Drop every tenant VXLAN packet between `hv` and each other hypervisor, both ways (the
    management overlay's VNI spared: the controllers still reach it)."""
    me = lab.hypervisor(hv).underlay_ip
    rules = "\n".join(f"    ip saddr {s} ip daddr {d} udp dport 4789 "
                      f"@th,96,24 != {MANAGEMENT_VNI} counter drop"
                      for name, other in lab.hypervisors.items() if name != hv
                      for s, d in ((me, other.underlay_ip), (other.underlay_ip, me)))
    nft(lab, f"table bridge {ISOLATE} {{\n  chain drops {{\n    type filter hook forward "
             f"priority 0; policy accept;\n{rules}\n  }}\n}}\n")


def rejoin(lab: Lab) -> None:
    nft(lab, f"delete table bridge {ISOLATE}", check=False)


def partition_alarms(lab: Lab) -> list[dict[str, Any]]:
    with hapair.active_api(lab) as api:
        return [a for a in api.alarms(True) if a["kind"] == "hypervisor_partitioned"]


def set_partition_policy(lab: Lab, policy: str | None) -> None:
    with hapair.active_api(lab) as api:
        doc = api.get_intent()
        doc["fabric"]["fault_policy"] = {"partition": policy} if policy else None
        api.apply(doc)


def test_a_hypervisor_cut_off_from_every_peer_is_partitioned_and_drained_by_policy(
        lab: Lab) -> None:
    """The fabric's policy says drain: the hypervisor's VMs are moved away (hot) while the
    cut holds, and reach their peers again from where they went; it is made unschedulable."""
    wait_until(lambda: all_forwarding(lab), 30, "every BFD session to forward")
    vms = sorted(v for v, vm in lab.vms.items() if vm.hypervisor == CUT_OFF)
    assert vms == ["acme/db2", "acme/web3"]
    with hapair.active_api(lab) as api:
        before = {int(m["seq"]) for vm in vms for m in api.moves(vm)}
    set_partition_policy(lab, "drain")
    t0 = time.monotonic()
    isolate(lab, CUT_OFF)
    try:
        wait_until(lambda: any(a["cleared"] is None for a in partition_alarms(lab)), 15,
                   f"the hypervisor_partitioned alarm of {CUT_OFF}")
        detected = time.monotonic() - t0
        [alarm] = partition_alarms(lab)
        assert alarm["resource"] == f"hypervisor/{CUT_OFF}" and alarm["service_affecting"]
        assert "(to hv1, hv2)" in alarm["text"], alarm
        assert not pings(lab, "acme/web1", "acme/web3")  # really cut off
        assert pings(lab, "acme/web1", "acme/web2")  # the others are not

        def drained() -> list[dict[str, Any]]:
            with hapair.active_api(lab) as api:
                return [m for vm in vms for m in api.moves(vm) if int(m["seq"]) not in before]

        wait_until(lambda: len(drained()) == 2, 15, "both VMs' moves")
        assert {(m["kind"], m["from"]) for m in drained()} == {("hot", CUT_OFF)}
        assert {m["to"] for m in drained()} <= {"hv1", "hv2"}
        with hapair.active_api(lab) as api:
            datacenter.sync_vms(lab, api)  # the compute side moves them (hot)
            hv = next(h for h in api.get_intent()["hypervisors"] if h["name"] == CUT_OFF)
            assert hv["schedulable"] is False
        wait_until(lambda: pings(lab, "acme/web1", "acme/web3")
                   and pings(lab, "acme/db1", "acme/db2"), 20,
                   "the moved VMs to reach their peers, the cut still in place")
        reachable = time.monotonic() - t0
        # Its VMs gone, so are its tunnels: nothing is cut off any more.
        wait_until(lambda: all(a["cleared"] is not None for a in partition_alarms(lab)), 15,
                   "the partition alarm to clear")
        print(f"\n[bfd] {CUT_OFF} partitioned: alarm {detected * 1000:.0f} ms after the cut, "
              f"its 2 VMs drained by policy and reachable again {reachable:.1f} s after it")
    finally:
        rejoin(lab)
        set_partition_policy(lab, None)
        with hapair.active_api(lab) as api:
            api.undrain(CUT_OFF)


End = tuple[str, str, str]  # hypervisor, remote hypervisor, encapsulation


def tunnel_ends(lab: Lab) -> set[End]:
    ips = {h.underlay_ip: n for n, h in lab.hypervisors.items()}
    ports = tunnel_ports(lab)
    return {(hv, peer, e) for hv, names in ports.items() for ip, peer in ips.items()
            for e in ("vxlan", "gre") if tunnel_port_name(e, ip) in names}


def latencies(lab: Lab) -> dict[End, float]:
    """hypetunnel_tunnel_latency_seconds from the active controller."""
    with hapair.active_api(lab) as api:
        text = api.metrics()
    return {(s.labels["hypervisor"], s.labels["remote"], s.labels["encapsulation"]): s.value
            for family in text_string_to_metric_families(text)
            if family.name == "hypetunnel_tunnel_latency_seconds" for s in family.samples}


def test_every_forwarding_tunnel_has_a_latency_and_a_cut_one_loses_it(lab: Lab) -> None:
    """Probes through the data path (fcaps/latency.py): a figure per tunnel end whose BFD
    forwards, under a millisecond or so between namespaces; cut, that tunnel's figures go
    (its probes are dropped with its traffic) while the others' stay; healed, they return."""
    wait_until(lambda: all_forwarding(lab), 30, "every BFD session to forward")
    ends = tunnel_ends(lab)
    # Any VXLAN tunnel will do (an earlier test may have moved every VM off some host).
    pair = min((min(e[0], e[1]), max(e[0], e[1])) for e in ends if e[2] == "vxlan")
    cut_ends = {e for e in ends if {e[0], e[1]} == set(pair) and e[2] == "vxlan"}
    assert len(cut_ends) == 2, ends  # the cut drops VXLAN between the pair, both ways
    wait_until(lambda: ends <= set(latencies(lab)), 3 * PROBE_INTERVAL, "a figure per end")
    got = latencies(lab)
    assert all(0 < got[e] < 0.05 for e in ends), got
    cut(lab, pair)
    try:
        wait_until(lambda: not cut_ends & set(latencies(lab)), 3 * PROBE_INTERVAL,
                   "the cut tunnel's figures to go")
        assert ends - cut_ends <= set(latencies(lab))
    finally:
        heal(lab)
    wait_until(lambda: ends <= set(latencies(lab)), 4 * PROBE_INTERVAL, "the figures back")
    print("\n[latency] tunnel round trips, ms: " + ", ".join(
        f"{a}->{b} {e} {v * 1000:.3f}" for (a, b, e), v in sorted(got.items())))

