"""Frames no VM can receive die on the sender's hypervisor, counted: unknown unicast and ARP
requests for addresses no VM of the network owns. Needed broadcast still floods, a VM being
moved is reached on both of its ports, and a VM not plugged in yet is reached once it is."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from hypetunnel.compiler.flows import Flow
from hypetunnel.compiler.pipeline import P_UNKNOWN_DST, P_UNOWNED_ARP, T_ARP, T_L2
from hypetunnel.compiler.trace import FlowTable
from hypetunnel.model.intent import Intent
from tests.unit.fabric_fixture import Fabric
from tests.unit.test_compiler_forwarding import BCAST, INTENT, MAC, arp_request, ip_frame

RANDOM_MAC = "02:5e:00:12:34:56"
NEW_VM = {"name": "web9", "network": "front", "ip": "10.1.0.19", "mac": "02:00:00:00:01:19"}


@pytest.fixture
def fabric() -> Fabric:
    intent: dict[str, Any] = copy.deepcopy(INTENT)
    intent["tenants"][0]["vms"].append(NEW_VM)  # acme/web9: in the intent, on no hypervisor yet
    return Fabric(Intent.model_validate(intent))


def drop_flows(fabric: Fabric, hv: str, vni: int) -> dict[int, Flow]:
    """The source-drop flows of one network on one switch, by table."""
    return {f.table: f for f in fabric.compiler.flows(hv)
            if not f.actions and f.goto is None and ("metadata", vni) in f.match
            and (f.table, f.priority) in {(T_ARP, P_UNOWNED_ARP), (T_L2, P_UNKNOWN_DST)}}


def test_unicast_to_an_unknown_mac_never_enters_a_tunnel(fabric: Fabric) -> None:
    trace = fabric.trace()
    assert trace.send("acme/web1", ip_frame("acme/web1", RANDOM_MAC, "10.1.0.11")) == []
    assert trace.tunnel_log == []
    [drop] = trace.drops
    assert (drop.hypervisor, drop.at_source, drop.table) == ("hv1", True, T_L2)
    assert drop.flow == drop_flows(fabric, "hv1", 5001)[T_L2]
    assert drop.reason == "unknown destination MAC"


def test_another_tenants_mac_is_unknown_unicast_too(fabric: Fabric) -> None:
    # The example: acme/web1 -> globex's MAC was flooded to every acme host before.
    trace = fabric.trace()
    assert trace.send("acme/web1", ip_frame("acme/web1", MAC["globex/db1"], "10.1.0.11")) == []
    assert trace.tunnel_log == [] and [d.reason for d in trace.drops] == \
        ["unknown destination MAC"]


def test_arp_request_for_an_unowned_address_never_enters_a_tunnel(fabric: Fabric) -> None:
    trace = fabric.trace()
    for target in ("10.1.0.99", "10.1.0.1", "10.2.0.10"):  # nobody, the gateway, another net
        assert trace.send("acme/web1", arp_request("acme/web1", target)) == [], target
    # A unicast request (a cache refresh) to an unknown MAC is the same unowned request.
    assert trace.send("acme/web1", arp_request("acme/web1", "10.1.0.99",
                                               eth_dst=RANDOM_MAC)) == []
    assert trace.tunnel_log == []
    assert {(d.hypervisor, d.table, d.flow) for d in trace.drops} == \
        {("hv1", T_ARP, drop_flows(fabric, "hv1", 5001)[T_ARP])}


def test_arp_for_an_owned_address_is_still_answered(fabric: Fabric) -> None:
    trace = fabric.trace()
    [reply] = trace.send("acme/web1", arp_request("acme/web1", "10.1.0.11"))
    assert reply.vm == "acme/web1" and reply.packet["arp_sha"] == MAC["acme/web2"]
    assert trace.drops == [] and trace.tunnel_log == []


def test_broadcast_and_arp_replies_still_flood_the_network(fabric: Fabric) -> None:
    trace = fabric.trace()
    got = trace.send("acme/web1", ip_frame("acme/web1", BCAST, "10.1.0.255"))
    assert [(d.vm, d.hypervisor) for d in got] == [("acme/web2", "hv2")]
    # A gratuitous ARP reply (op 2) is no request: it is not the responder's to drop.
    announce = arp_request("acme/web1", "10.1.0.10", arp_op=2)
    assert [d.vm for d in trace.send("acme/web1", announce)] == ["acme/web2"]
    assert trace.drops == []


def test_every_network_has_its_own_counted_drops_only_where_it_has_local_vms(
        fabric: Fabric) -> None:
    cookies = set()
    for hv, vni in (("hv1", 5001), ("hv2", 5001), ("hv2", 5002), ("hv1", 6001), ("hv3", 6001)):
        flows = drop_flows(fabric, hv, vni)
        assert set(flows) == {T_ARP, T_L2}, (hv, vni)
        cookies |= {f.cookie for f in flows.values()}
    assert len(cookies) == 2 * 3  # per network, the same flows on each of its hosts
    assert drop_flows(fabric, "hv3", 5001) == {}  # acme/front has no VM on hv3


def test_frames_to_a_vm_being_moved_reach_both_ports_and_are_not_dropped(
        fabric: Fabric) -> None:
    # acme/web2 hot-moves hv2 -> hv3: its port is live on both while the move lasts.
    fabric.topology.expect("acme/web2", "hv3")
    fabric.ports["hv3"]["vm-acme/web2"] = port = 1 + len(fabric.ports["hv3"])
    fabric.vm_ports["hv3"]["acme/web2"] = port
    fabric.compiler.set_ports("hv3", fabric.ports["hv3"], fabric.vm_ports["hv3"])
    fabric.topology.set_secondary("acme/web2", "hv3")
    fabric.converge()
    trace = fabric.trace()
    got = trace.send("acme/web1", ip_frame("acme/web1", MAC["acme/web2"], "10.1.0.11"))
    assert sorted((d.vm, d.hypervisor) for d in got) == [("acme/web2", "hv2"),
                                                          ("acme/web2", "hv3")]
    assert [d for d in trace.drops if d.at_source] == []
    # The VM itself may ARP and send from its new port before the old one is gone.
    hv3 = FlowTable(fabric.compiler.flows("hv3"))
    out = hv3.walk(arp_request("acme/web2", "10.1.0.10"), port)
    assert [p for p, _ in out.outputs] == [port]  # answered in place, nothing dropped


def test_a_vm_not_plugged_in_yet_is_dropped_for_until_its_port_is_bound(
        fabric: Fabric) -> None:
    # web9 is planned on hv3: hv3 is prepared as a host of acme/front (tunnels, flood lists),
    # but frames to it are not sent there before its port exists; hv3 would drop them.
    fabric.topology.expect("acme/web9", "hv3")
    fabric.converge()
    assert any(t.remote_hypervisor == "hv3" for t in fabric.compiler.tunnels("hv1"))
    trace = fabric.trace()
    frame = ip_frame("acme/web1", NEW_VM["mac"], NEW_VM["ip"])
    assert trace.send("acme/web1", frame) == [] and trace.tunnel_log == []
    assert [d.reason for d in trace.drops] == ["unknown destination MAC"]
    assert trace.send("acme/web1", arp_request("acme/web1", NEW_VM["ip"])) == []
    fabric.plug("acme/web9", "hv3")
    fabric.converge()
    trace = fabric.trace()
    assert [(d.vm, d.hypervisor) for d in trace.send("acme/web1", frame)] == \
        [("acme/web9", "hv3")]
    [reply] = trace.send("acme/web1", arp_request("acme/web1", NEW_VM["ip"]))
    assert reply.packet["arp_sha"] == NEW_VM["mac"]


def test_unknown_mac_from_a_tunnel_is_not_counted_as_a_source_drop(fabric: Fabric) -> None:
    tun = next(p for n, p in fabric.ports["hv1"].items() if n.startswith("vx"))
    walk = FlowTable(fabric.compiler.flows("hv1")).walk(
        {"eth_src": MAC["acme/web2"], "eth_dst": RANDOM_MAC, "eth_type": 0x0800,
         "tunnel_id": 5001}, tun)
    assert walk.outputs == [] and walk.table == T_L2 and walk.flow is None


def test_a_flood_with_nobody_else_is_reported_as_such(fabric: Fabric) -> None:
    trace = fabric.trace()
    assert trace.send("acme/app1", ip_frame("acme/app1", BCAST, "10.2.0.255")) == []
    [drop] = trace.drops
    assert drop.at_source and drop.reason == "no port to send it to but the one it came from"
