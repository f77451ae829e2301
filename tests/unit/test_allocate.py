"""resolve(): omitted VNIs, IPs, MACs and hypervisors are filled in, and kept stable."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest

from hypetunnel.errors import IntentInvalid
from hypetunnel.model.allocate import FIRST_VNI, mac_for, resolve
from hypetunnel.model.intent import Intent
from hypetunnel.model.validate import validate_intent


def intent(tenants: list[dict[str, Any]], hvs: tuple[str, ...] = ("hv1", "hv2", "hv3"),
           **extra: Any) -> Intent:
    return Intent.model_validate(
        {"hypervisors": [{"name": h} for h in hvs], "tenants": tenants, **extra})


def acme(vms: list[dict[str, Any]], networks: list[dict[str, Any]] | None = None
         ) -> dict[str, Any]:
    nets = networks if networks is not None else [{"name": "front", "cidr": "10.1.0.0/24"}]
    return {"name": "acme", "networks": nets, "vms": vms}


def vms_of(i: Intent, tenant: str = "acme") -> dict[str, Any]:
    t = i.tenant(tenant)
    assert t is not None
    return {v.name: v for v in t.vms}


def assert_complete(i: Intent) -> None:
    assert validate_intent(i) == []
    for t in i.tenants:
        assert all(n.vni is not None for n in t.networks)
        assert all(v.ip and v.mac and v.hypervisor for v in t.vms)


def test_vnis_lowest_free_from_1000_skipping_written_ones() -> None:
    nets = [{"name": "a", "cidr": "10.1.0.0/24", "vni": 1001},
            {"name": "b", "cidr": "10.2.0.0/24"},
            {"name": "c", "cidr": "10.3.0.0/24"}]
    r = resolve(intent([acme([], nets)]))
    assert [n.vni for n in r.tenants[0].networks] == [1001, FIRST_VNI, 1002]


def test_ips_start_at_the_second_host_and_skip_written_ones() -> None:
    r = resolve(intent([acme([{"name": "a", "network": "front"},
                              {"name": "b", "network": "front", "ip": "10.1.0.3"},
                              {"name": "c", "network": "front"}])]))
    vms = vms_of(r)
    assert (str(vms["a"].ip), str(vms["b"].ip), str(vms["c"].ip)) == (
        "10.1.0.2", "10.1.0.3", "10.1.0.4")
    assert_complete(r)


def test_identical_cidrs_in_two_tenants_allocate_independently() -> None:
    globex = {**acme([{"name": "a", "network": "front"}]), "name": "globex"}
    r = resolve(intent([acme([{"name": "a", "network": "front"}]), globex]))
    assert vms_of(r)["a"].ip == vms_of(r, "globex")["a"].ip == IPv4Address("10.1.0.2")
    assert_complete(r)


def test_mac_is_deterministic_local_unicast_and_bumped_on_collision() -> None:
    mac = mac_for("acme/a")
    assert mac == mac_for("acme/a") and mac != mac_for("acme/b")
    assert mac.startswith("02:") and len(mac) == 17
    # Someone else already has a's natural MAC: a gets the next one.
    r = resolve(intent([acme([{"name": "x", "network": "front", "mac": mac},
                              {"name": "a", "network": "front"}])]))
    assert vms_of(r)["a"].mac == mac_for("acme/a", 1)
    assert_complete(r)


def test_placement_spreads_least_loaded_first_ties_by_name() -> None:
    vms = [{"name": "pinned", "network": "front", "hypervisor": "hv1"}]
    vms += [{"name": f"v{i}", "network": "front"} for i in range(5)]
    r = resolve(intent([acme(vms)]))
    placed = {n: v.hypervisor for n, v in vms_of(r).items()}
    assert placed == {"pinned": "hv1", "v0": "hv2", "v1": "hv3", "v2": "hv1", "v3": "hv2",
                      "v4": "hv3"}


def test_no_hypervisor_to_place_on() -> None:
    with pytest.raises(IntentInvalid) as info:
        resolve(intent([acme([{"name": "a", "network": "front"}])], hvs=()))
    [e] = info.value.errors
    assert e.path == "tenants[0].vms[0].hypervisor" and "no hypervisor" in e.reason


def test_exhausted_network() -> None:
    nets = [{"name": "tiny", "cidr": "10.9.0.0/29"}]  # hosts .1-.6, .1 is the gateway: 5 free
    vms = [{"name": f"v{i}", "network": "tiny"} for i in range(6)]
    with pytest.raises(IntentInvalid) as info:
        resolve(intent([acme(vms, nets)]))
    [e] = info.value.errors
    assert e.path == "tenants[0].vms[5].ip" and "no free address" in e.reason


def test_written_values_are_kept_as_written() -> None:
    vm = {"name": "a", "network": "front", "hypervisor": "hv3", "ip": "10.1.0.77",
          "mac": "02:aa:00:00:00:01"}
    nets = [{"name": "front", "cidr": "10.1.0.0/24", "vni": 7777}]
    r = resolve(intent([acme([vm], nets)]))
    a = vms_of(r)["a"]
    assert (a.hypervisor, str(a.ip), a.mac) == ("hv3", "10.1.0.77", "02:aa:00:00:00:01")
    assert r.tenants[0].networks[0].vni == 7777


def test_resolve_is_stable_against_the_previous_resolution() -> None:
    vms = [{"name": f"v{i}", "network": "front"} for i in range(6)]
    nets = [{"name": "front", "cidr": "10.1.0.0/24"}, {"name": "back", "cidr": "10.2.0.0/24"}]
    first = resolve(intent([acme(vms, nets)]))
    # The same file, with the VMs listed in another order and a new VM first in line:
    again = intent([acme([{"name": "new", "network": "front"}, *reversed(vms)],
                         list(reversed(nets)))])
    second = resolve(again, first)
    before, after = vms_of(first), vms_of(second)
    for name, vm in before.items():
        assert after[name] == vm, name
    assert {n.name: n.vni for n in first.tenants[0].networks} == {
        n.name: n.vni for n in second.tenants[0].networks}
    assert after["new"].ip == IPv4Address("10.1.0.8")  # after v0..v5 = .2...7
    assert_complete(second)


def test_written_value_beats_a_kept_one_and_the_loser_moves() -> None:
    first = resolve(intent([acme([{"name": "a", "network": "front"}])]))
    assert vms_of(first)["a"].ip == IPv4Address("10.1.0.2")
    # b now asks explicitly for a's address: a gets a new one, b gets what it asked for.
    second = resolve(intent([acme([{"name": "a", "network": "front"},
                                   {"name": "b", "network": "front", "ip": "10.1.0.2"}])]), first)
    assert vms_of(second)["b"].ip == IPv4Address("10.1.0.2")
    assert vms_of(second)["a"].ip == IPv4Address("10.1.0.3")


def test_kept_ip_outside_a_changed_cidr_is_reallocated() -> None:
    first = resolve(intent([acme([{"name": "a", "network": "front"}])]))
    nets = [{"name": "front", "cidr": "10.5.0.0/24"}]
    second = resolve(intent([acme([{"name": "a", "network": "front"}], nets)]), first)
    a = vms_of(second)["a"]
    assert a.ip == IPv4Address("10.5.0.2")
    assert a.mac == vms_of(first)["a"].mac  # the MAC has no reason to change


def test_vm_keeps_its_hypervisor_unless_that_hypervisor_is_gone() -> None:
    vms = [{"name": f"v{i}", "network": "front"} for i in range(3)]
    first = resolve(intent([acme(vms)]))
    assert {v.hypervisor for v in vms_of(first).values()} == {"hv1", "hv2", "hv3"}
    second = resolve(intent([acme(vms)], hvs=("hv1", "hv2")), first)
    placed = {n: v.hypervisor for n, v in vms_of(second).items()}
    assert placed["v0"] == "hv1" and placed["v1"] == "hv2"
    assert placed["v2"] in ("hv1", "hv2")


def test_removed_network_vni_is_not_stolen_by_a_kept_one() -> None:
    nets = [{"name": "a", "cidr": "10.1.0.0/24"}, {"name": "b", "cidr": "10.2.0.0/24"}]
    first = resolve(intent([acme([], nets)]))
    vni = {n.name: n.vni for n in first.tenants[0].networks}
    # b written explicitly with a's VNI: a must move, not collide.
    nets2 = [{"name": "a", "cidr": "10.1.0.0/24"},
             {"name": "b", "cidr": "10.2.0.0/24", "vni": vni["a"]}]
    second = resolve(intent([acme([], nets2)]), first)
    got = {n.name: n.vni for n in second.tenants[0].networks}
    assert got["b"] == vni["a"] and got["a"] not in (vni["a"], None)
    assert_complete(second)


def test_enlistment_fields_of_hypervisors_survive_a_file_that_omits_them() -> None:
    hv1 = {"name": "hv1", "underlay_ip": "172.31.0.11", "ovsdb": "tcp:1.2.3.4:6640"}
    first = Intent.model_validate({"hypervisors": [hv1]})
    second = resolve(intent([], hvs=("hv1",)), first)
    hv = second.hypervisors[0]
    assert (str(hv.underlay_ip), hv.ovsdb) == ("172.31.0.11", "tcp:1.2.3.4:6640")
