"""Where a VM is: switch reports + intent, through moves and late reports (MAC mobility)."""

from __future__ import annotations

from hypetunnel.compiler.trace import FabricTrace
from hypetunnel.controller.bindings import BindingTable
from hypetunnel.model.intent import Intent
from tests.unit.fabric_fixture import Fabric
from tests.unit.test_compiler_forwarding import INTENT, MAC, ip_frame

WEB2 = "acme/web2"


def table(f: Fabric) -> BindingTable:
    t = BindingTable(f.topology)
    for hv, vms in f.vm_ports.items():
        t.observe(hv, set(vms))
    t.set_intent({"acme/web1": "hv1", WEB2: "hv2", "acme/app1": "hv2", "globex/web1": "hv1",
                  "globex/db1": "hv3"})
    return t


def add_port(f: Fabric, vid: str, hv: str) -> None:
    port = 1 + len(f.ports[hv])
    f.ports[hv][f"vm-{vid}"] = port
    f.vm_ports[hv][vid] = port
    f.compiler.set_ports(hv, f.ports[hv], f.vm_ports[hv])


def drop_port(f: Fabric, vid: str, hv: str) -> None:
    del f.ports[hv][f"vm-{vid}"]
    del f.vm_ports[hv][vid]
    f.compiler.set_ports(hv, f.ports[hv], f.vm_ports[hv])


def deliveries(f: Fabric) -> list[tuple[str, str]]:
    trace: FabricTrace = f.trace()
    got = trace.send("acme/web1", ip_frame("acme/web1", MAC[WEB2], "10.1.0.11"))
    return sorted((d.vm, d.hypervisor) for d in got)


def test_hot_move_prepares_destination_then_sends_to_both_then_to_the_new_place() -> None:
    f = Fabric(Intent.model_validate(INTENT))
    t = table(f)
    t.set_intent({**t.intended, WEB2: "hv3"})  # the move is asked for: hv3 is prepared
    f.converge()
    assert any(x.remote_hypervisor == "hv3" for x in f.compiler.tunnels("hv1"))
    assert deliveries(f) == [(WEB2, "hv2")]
    add_port(f, WEB2, "hv3")  # make: the destination port is plugged
    t.observe("hv3", set(f.vm_ports["hv3"]))
    f.converge()
    assert f.topology.locations(WEB2) == ["hv3", "hv2"]
    assert deliveries(f) == [(WEB2, "hv2"), (WEB2, "hv3")]  # both ends live
    drop_port(f, WEB2, "hv2")  # break: the old port goes
    t.observe("hv2", set(f.vm_ports["hv2"]))
    f.converge()
    assert deliveries(f) == [(WEB2, "hv3")]
    assert WEB2 not in t.moving


def test_a_late_report_from_an_old_location_never_wins() -> None:
    f = Fabric(Intent.model_validate(INTENT))
    t = table(f)
    for dst, src in (("hv3", "hv2"), ("hv1", "hv3")):  # A=hv2 -> B=hv3 -> C=hv1
        t.set_intent({**t.intended, WEB2: dst})
        add_port(f, WEB2, dst)
        t.observe(dst, set(f.vm_ports[dst]))
        drop_port(f, WEB2, src)
        t.observe(src, set(f.vm_ports[src]))
    f.converge()
    add_port(f, WEB2, "hv2")  # the delayed event from A
    t.observe("hv2", set(f.vm_ports["hv2"]))
    f.converge()
    assert f.topology.locations(WEB2) == ["hv1"]
    assert t.ignored == {WEB2: "hv2"}
    trace = f.trace()
    got = trace.send("globex/web1", ip_frame("globex/web1", MAC["globex/db1"], "10.1.0.11"))
    assert [d.vm for d in got] == ["globex/db1"]  # other tenants untouched
    got = f.trace().send("acme/web1", ip_frame("acme/web1", MAC[WEB2], "10.1.0.11"))
    assert [(d.vm, d.hypervisor) for d in got] == [(WEB2, "hv1")]


def test_a_vm_seen_where_the_intent_does_not_place_it_is_followed() -> None:
    f = Fabric(Intent.model_validate(INTENT))
    t = table(f)
    drop_port(f, WEB2, "hv2")
    t.observe("hv2", set(f.vm_ports["hv2"]))
    add_port(f, WEB2, "hv3")  # moved behind the controller's back: reality wins
    t.observe("hv3", set(f.vm_ports["hv3"]))
    f.converge()
    assert f.topology.locations(WEB2) == ["hv3"]
    assert not any(x.remote_hypervisor == "hv2" for x in f.compiler.tunnels("hv1"))
