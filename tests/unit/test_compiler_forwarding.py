"""Forwarding behaviour of the compiled pipeline, asserted by tracing frames through it."""

from __future__ import annotations

import pytest

from hypetunnel.compiler.compile import FabricCompiler
from hypetunnel.compiler.from_intent import sync_topology
from hypetunnel.compiler.pipeline import base_flows
from hypetunnel.compiler.topology import Topology
from hypetunnel.model.intent import Intent, network_mtu
from tests.unit.fabric_fixture import Fabric

BCAST = "ff:ff:ff:ff:ff:ff"

INTENT = {
    "fabric": {"encapsulation": "vxlan"},
    "hypervisors": [{"name": f"hv{i}", "underlay_ip": f"172.31.0.1{i}"} for i in (1, 2, 3)],
    "tenants": [
        {"name": "acme", "networks": [
            {"name": "front", "cidr": "10.1.0.0/24", "vni": 5001},
            {"name": "back", "cidr": "10.2.0.0/24", "vni": 5002}],
         "vms": [
            {"name": "web1", "network": "front", "hypervisor": "hv1", "ip": "10.1.0.10",
             "mac": "02:00:00:00:01:10"},
            {"name": "web2", "network": "front", "hypervisor": "hv2", "ip": "10.1.0.11",
             "mac": "02:00:00:00:01:11"},
            {"name": "app1", "network": "back", "hypervisor": "hv2", "ip": "10.2.0.10",
             "mac": "02:00:00:00:02:10"}]},
        {"name": "globex", "encapsulation": "gre", "networks": [
            {"name": "front", "cidr": "10.1.0.0/24", "vni": 6001}],
         "vms": [
            {"name": "web1", "network": "front", "hypervisor": "hv1", "ip": "10.1.0.10",
             "mac": "02:00:00:00:03:10"},
            {"name": "db1", "network": "front", "hypervisor": "hv3", "ip": "10.1.0.11",
             "mac": "02:00:00:00:03:11"}]},
    ],
}
MAC = {"acme/web1": "02:00:00:00:01:10", "acme/web2": "02:00:00:00:01:11",
       "acme/app1": "02:00:00:00:02:10", "globex/web1": "02:00:00:00:03:10",
       "globex/db1": "02:00:00:00:03:11"}
IP = {"acme/web1": "10.1.0.10", "acme/web2": "10.1.0.11", "acme/app1": "10.2.0.10",
      "globex/web1": "10.1.0.10", "globex/db1": "10.1.0.11"}


@pytest.fixture
def fabric() -> Fabric:
    return Fabric(Intent.model_validate(INTENT))


def ip_frame(src: str, dst_mac: str, dst_ip: str, **over: object) -> dict[str, object]:
    return {"eth_src": MAC[src], "eth_dst": dst_mac, "eth_type": 0x0800, "ipv4_src": IP[src],
            "ipv4_dst": dst_ip, **over}


def arp_request(src: str, target_ip: str, **over: object) -> dict[str, object]:
    return {"eth_src": MAC[src], "eth_dst": BCAST, "eth_type": 0x0806, "arp_op": 1,
            "arp_sha": MAC[src], "arp_spa": IP[src], "arp_tha": "00:00:00:00:00:00",
            "arp_tpa": target_ip, **over}


def test_same_network_unicast_crosses_one_tunnel_with_the_network_vni(fabric: Fabric) -> None:
    trace = fabric.trace()
    got = trace.send("acme/web1", ip_frame("acme/web1", MAC["acme/web2"], "10.1.0.11"))
    assert [(d.vm, d.hypervisor) for d in got] == [("acme/web2", "hv2")]
    assert trace.tunnel_log == [("hv1", "hv2", 5001)]


def test_identical_ips_in_other_tenant_are_unreachable(fabric: Fabric) -> None:
    trace = fabric.trace()
    # acme/web1 aims at globex/db1, which has the same IP as acme/web2.
    assert trace.send("acme/web1", ip_frame("acme/web1", MAC["globex/db1"], "10.1.0.11")) == []
    # Same hypervisor, same IP, other tenant: still nothing.
    assert trace.send("acme/web1", ip_frame("acme/web1", MAC["globex/web1"], "10.1.0.10")) == []


def test_arp_for_known_vm_is_answered_locally_with_own_tenants_mac(fabric: Fabric) -> None:
    trace = fabric.trace()
    got = trace.send("acme/web1", arp_request("acme/web1", "10.1.0.11"))
    assert len(got) == 1 and got[0].vm == "acme/web1" and got[0].hops == ("hv1",)
    reply = got[0].packet
    assert reply["arp_op"] == 2
    assert reply["arp_sha"] == MAC["acme/web2"] and reply["arp_spa"] == "10.1.0.11"
    assert reply["arp_tha"] == MAC["acme/web1"] and reply["arp_tpa"] == "10.1.0.10"
    assert reply["eth_dst"] == MAC["acme/web1"] and reply["eth_src"] == MAC["acme/web2"]
    assert trace.tunnel_log == []  # broadcast suppressed
    got = trace.send("globex/web1", arp_request("globex/web1", "10.1.0.11"))
    assert got[0].packet["arp_sha"] == MAC["globex/db1"]


def test_broadcast_reaches_only_hypervisors_hosting_the_network(fabric: Fabric) -> None:
    trace = fabric.trace()
    got = trace.send("acme/web1", ip_frame("acme/web1", BCAST, "10.1.0.255"))
    assert {d.vm for d in got} == {"acme/web2"}
    assert {(a, b) for a, b, _ in trace.tunnel_log} == {("hv1", "hv2")}  # never hv3
    trace.tunnel_log.clear()
    got = trace.send("globex/web1", ip_frame("globex/web1", BCAST, "10.1.0.255"))
    assert {d.vm for d in got} == {"globex/db1"}
    assert trace.tunnel_log == [("hv1", "hv3", 6001)]


def test_spoofed_source_mac_or_ip_gets_nothing_through(fabric: Fabric) -> None:
    trace = fabric.trace()
    dst = MAC["acme/web2"]
    assert trace.send("acme/web1", ip_frame("acme/web1", dst, "10.1.0.11",
                                            eth_src="02:00:00:00:09:99")) == []
    assert trace.send("acme/web1", ip_frame("acme/web1", dst, "10.1.0.11",
                                            ipv4_src="10.1.0.77")) == []
    assert trace.send("acme/web1", arp_request("acme/web1", "10.1.0.99",
                                               arp_spa="10.1.0.77")) == []
    assert trace.send("acme/web1", arp_request("acme/web1", "10.1.0.99",
                                               arp_sha="02:00:00:00:09:99")) == []
    # Non-IP, non-ARP ethertypes are dropped too.
    assert trace.send("acme/web1", {"eth_src": MAC["acme/web1"], "eth_dst": dst,
                                    "eth_type": 0x86DD}) == []


def test_tunnels_only_between_hypervisors_sharing_a_network(fabric: Fabric) -> None:
    c = fabric.compiler
    remotes = {hv: {(t.remote_hypervisor, t.encapsulation) for t in c.tunnels(hv)}
               for hv in ("hv1", "hv2", "hv3")}
    assert remotes == {"hv1": {("hv2", "vxlan"), ("hv3", "gre")},
                       "hv2": {("hv1", "vxlan")},
                       "hv3": {("hv1", "gre")}}


def test_frame_from_a_tunnel_never_goes_back_into_a_tunnel(fabric: Fabric) -> None:
    # Pretend hv2 sends hv1 a frame for globex/db1's MAC in acme's VNI: hv1 must not relay it.
    trace = fabric.trace()
    hv1_ports = fabric.ports["hv1"]
    tun = next(p for n, p in hv1_ports.items() if n.startswith("vx"))
    from hypetunnel.compiler.trace import FlowTable

    table = FlowTable(fabric.compiler.flows("hv1"))
    out = table.process({"eth_src": MAC["acme/web2"], "eth_dst": "02:00:00:00:05:55",
                         "eth_type": 0x0800, "tunnel_id": 5001}, tun)
    assert out == []
    out = table.process({"eth_src": MAC["acme/web2"], "eth_dst": BCAST, "eth_type": 0x0800,
                         "tunnel_id": 5001}, tun)
    assert [p for p, _ in out] == [fabric.vm_ports["hv1"]["acme/web1"]]
    assert trace.tunnel_log == []


def test_unknown_vni_from_tunnel_is_dropped(fabric: Fabric) -> None:
    from hypetunnel.compiler.trace import FlowTable

    tun = next(p for n, p in fabric.ports["hv1"].items() if n.startswith("vx"))
    table = FlowTable(fabric.compiler.flows("hv1"))
    # globex's VNI arriving on acme's VXLAN tunnel from hv2 (which hosts no globex VM).
    assert table.process({"eth_src": "02:00:00:00:00:01", "eth_dst": MAC["globex/web1"],
                          "eth_type": 0x0800, "tunnel_id": 6001}, tun) == []


def test_vm_move_repoints_peers_and_touches_only_that_networks_hosts(fabric: Fabric) -> None:
    fabric.plug("acme/web2", "hv3")
    touched = fabric.converge()
    assert "hv3" in touched and "hv1" in touched
    trace = fabric.trace()
    got = trace.send("acme/web1", ip_frame("acme/web1", MAC["acme/web2"], "10.1.0.11"))
    assert [(d.vm, d.hypervisor) for d in got] == [("acme/web2", "hv3")]
    assert trace.tunnel_log == [("hv1", "hv3", 5001)]


def test_incremental_compile_equals_full_compile(fabric: Fabric) -> None:
    fabric.plug("acme/web2", "hv3")
    fabric.plug("globex/db1", "hv2")
    fabric.plug("acme/web2", "hv1")
    fabric.converge()
    fresh_topo = Topology()
    fresh = FabricCompiler(fresh_topo)
    sync_topology(fresh_topo, fabric.intent)
    for hv, vms in fabric.vm_ports.items():
        for vid in vms:
            fresh_topo.bind(vid, hv)
        fresh.set_ports(hv, fabric.ports[hv], vms)
    fresh.recompute()
    for hv in fabric.ports:
        assert fresh.flows(hv) == fabric.compiler.flows(hv), hv
        assert fresh.tunnels(hv) == fabric.compiler.tunnels(hv), hv


def test_unbinding_last_vm_removes_network_from_switch(fabric: Fabric) -> None:
    fabric.topology.bind("globex/db1", None)
    fabric.converge()
    assert fabric.compiler.tunnels("hv3") == frozenset()
    assert all(t.remote_hypervisor != "hv3" for t in fabric.compiler.tunnels("hv1"))
    assert fabric.compiler.flow_count("hv3") == len(base_flows())  # base flows only


def test_vm_mtu_accounts_for_encapsulation() -> None:
    intent = Intent.model_validate(INTENT)
    assert network_mtu(intent.fabric, "vxlan") == 1450
    assert network_mtu(intent.fabric, "gre") == 1458
    assert network_mtu(intent.fabric, "geneve") == 1450


def test_cookies_are_stable_content_hashes() -> None:
    """Cookies are what a restarted or peer controller compares with the switch: the value of a
    given flow must never change (a lazily computed cookie equals the eager one it replaced)."""
    from hypetunnel.compiler.flows import Flow, Output, SetField, match

    flow = Flow(20, 100, match(metadata=10001, eth_dst="02:00:00:00:01:02", reg0=0),
                (SetField("tunnel_id", 10001), Output(1234)))
    assert flow.cookie == 0x4854_2D95_1654_1E61
    assert hash(flow) == hash(Flow(20, 100, flow.match, flow.actions)) and flow == Flow(
        20, 100, flow.match, flow.actions)
