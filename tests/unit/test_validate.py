"""Semantic rules of an intent: each violation names the field path and the reason."""

from __future__ import annotations

from typing import Any

import pytest

from hypetunnel.model.intent import Intent
from hypetunnel.model.validate import reserved_reason, validate_intent


def doc() -> dict[str, Any]:
    return {
        "hypervisors": [{"name": "hv1", "underlay_ip": "172.31.0.11"}, {"name": "hv2"}],
        "tenants": [
            {
                "name": "acme",
                "networks": [
                    {"name": "front", "cidr": "10.1.0.0/24", "vni": 5001},
                    {"name": "back", "cidr": "10.2.0.0/24"},
                ],
                "vms": [
                    {"name": "web1", "network": "front", "hypervisor": "hv1", "ip": "10.1.0.10",
                     "mac": "02:00:00:00:00:10"},
                    {"name": "web2", "network": "front", "ip": "10.1.0.11"},
                    {"name": "db1", "network": "back"},
                ],
            },
            {
                "name": "globex",
                "encapsulation": "gre",
                "networks": [{"name": "front", "cidr": "10.1.0.0/24"}],
                "vms": [{"name": "web1", "network": "front", "ip": "10.1.0.10",
                         "mac": "02:00:00:00:00:10"}],
            },
        ],
    }


def errors(d: dict[str, Any]) -> dict[str, str]:
    return {e.path: e.reason for e in validate_intent(Intent.model_validate(d))}


def test_valid_intent_has_no_errors() -> None:
    # Identical CIDRs, IPs and MACs in different tenants are fine.
    assert errors(doc()) == {}


def test_empty_intent_is_valid() -> None:
    assert validate_intent(Intent()) == []


def test_duplicate_hypervisor_name() -> None:
    d = doc()
    d["hypervisors"].append({"name": "hv1"})
    assert errors(d) == {"hypervisors[2].name":
                         "duplicate hypervisor name 'hv1' (also hypervisors[0])"}


def test_duplicate_underlay_ip() -> None:
    d = doc()
    d["hypervisors"][1]["underlay_ip"] = "172.31.0.11"
    assert "already the underlay IP of hypervisor 'hv1'" in errors(d)["hypervisors[1].underlay_ip"]


def test_duplicate_tenant_name() -> None:
    d = doc()
    d["tenants"][1]["name"] = "acme"
    assert "duplicate tenant name 'acme'" in errors(d)["tenants[1].name"]


def test_duplicate_network_name_in_tenant() -> None:
    d = doc()
    d["tenants"][0]["networks"][1]["name"] = "front"
    d["tenants"][0]["networks"][1]["cidr"] = "10.3.0.0/24"
    assert "duplicate network name 'front'" in errors(d)["tenants[0].networks[1].name"]


def test_duplicate_vm_name_in_tenant() -> None:
    d = doc()
    d["tenants"][0]["vms"][2]["name"] = "web1"
    assert "duplicate VM name 'web1'" in errors(d)["tenants[0].vms[2].name"]


@pytest.mark.parametrize("cidr", ["10.1.0.0/24", "10.1.0.128/25", "10.0.0.0/8"])
def test_overlapping_networks_in_one_tenant(cidr: str) -> None:
    d = doc()
    d["tenants"][0]["networks"][1]["cidr"] = cidr
    d["tenants"][0]["vms"][2]["network"] = "front"
    errs = errors(d)
    assert list(errs) == ["tenants[0].networks[1].cidr"]
    assert "overlaps network 'front' (10.1.0.0/24) of tenant 'acme'" in errs[
        "tenants[0].networks[1].cidr"]


def test_overlap_found_among_many_networks() -> None:
    d = doc()
    nets = [{"name": f"n{i}", "cidr": f"10.{i}.0.0/16"} for i in range(10, 30)]
    nets.append({"name": "wide", "cidr": "10.16.0.0/12"})  # covers 10.16-10.31
    d["tenants"][1]["networks"] += nets
    errs = validate_intent(Intent.model_validate(d))
    # The wide one, written last, is blamed, once.
    assert [e.path for e in errs] == ["tenants[1].networks[21].cidr"]


@pytest.mark.parametrize(
    ("ip", "why"),
    [("10.2.0.10", "outside the network 10.1.0.0/24"),
     ("10.1.0.0", "network address"),
     ("10.1.0.255", "broadcast address"),
     ("10.1.0.1", "reserved for the gateway")],
)
def test_ip_must_be_a_usable_host_of_its_network(ip: str, why: str) -> None:
    d = doc()
    d["tenants"][0]["vms"][1]["ip"] = ip
    assert why in errors(d)["tenants[0].vms[1].ip"]


def test_unknown_hypervisor() -> None:
    d = doc()
    d["tenants"][0]["vms"][1]["hypervisor"] = "hv9"
    assert errors(d) == {"tenants[0].vms[1].hypervisor": "unknown hypervisor 'hv9'"}


def test_unknown_network() -> None:
    d = doc()
    d["tenants"][1]["vms"][0]["network"] = "back"  # exists in acme, not in globex
    assert errors(d) == {"tenants[1].vms[0].network": "unknown network 'back' in tenant 'globex'"}


def test_duplicate_vni_across_tenants() -> None:
    d = doc()
    d["tenants"][1]["networks"][0]["vni"] = 5001
    assert errors(d) == {"tenants[1].networks[0].vni": "VNI 5001 is already used by acme/front"}


def test_duplicate_ip_in_network() -> None:
    d = doc()
    d["tenants"][0]["vms"][1]["ip"] = "10.1.0.10"
    assert errors(d) == {"tenants[0].vms[1].ip":
                         "10.1.0.10 is already used by VM 'web1' in network 'front'"}


def test_same_ip_in_two_networks_of_a_tenant_is_fine_when_cidrs_differ() -> None:
    # Not overlapping networks cannot share an IP anyway; this checks the key is (network, ip).
    d = doc()
    d["tenants"][0]["vms"][2]["ip"] = "10.2.0.10"
    assert errors(d) == {}


def test_duplicate_mac_in_network() -> None:
    d = doc()
    d["tenants"][0]["vms"][1]["mac"] = "02:00:00:00:00:10"
    assert "02:00:00:00:00:10 is already used by VM 'web1'" in errors(d)["tenants[0].vms[1].mac"]


def test_several_errors_are_all_reported() -> None:
    d = doc()
    d["tenants"][0]["vms"][0]["hypervisor"] = "hv9"
    d["tenants"][0]["vms"][1]["ip"] = "10.9.9.9"
    d["tenants"][1]["networks"][0]["vni"] = 5001
    assert set(errors(d)) == {"tenants[0].vms[0].hypervisor", "tenants[0].vms[1].ip",
                              "tenants[1].networks[0].vni"}


def test_reserved_reason_of_a_usable_address_is_none() -> None:
    from ipaddress import IPv4Address, IPv4Network

    assert reserved_reason(IPv4Address("10.0.0.2"), IPv4Network("10.0.0.0/29")) is None
    assert reserved_reason(IPv4Address("10.0.0.6"), IPv4Network("10.0.0.0/29")) is None


def test_duplicate_vni_blames_the_new_network_and_names_the_holder() -> None:
    # The holder (globex/front) comes after the new network (acme/new) in the list, as it
    # does when tenants are stored sorted by name; the stored intent decides who is new.
    d = doc()
    d["tenants"][1]["networks"][0]["vni"] = 7000
    previous = Intent.model_validate(d)
    d["tenants"][0]["networks"].append({"name": "new", "cidr": "10.9.0.0/24", "vni": 7000})
    new = Intent.model_validate(d)
    assert {e.path: e.reason for e in validate_intent(new, previous=previous)} == {
        "tenants[0].networks[2].vni": "VNI 7000 is already used by globex/front"}
    # Without a stored intent (a file), the later one in the list is blamed, as before.
    assert {e.path: e.reason for e in validate_intent(new)} == {
        "tenants[1].networks[0].vni": "VNI 7000 is already used by acme/new"}


def test_network_create_with_a_taken_vni_names_the_existing_network() -> None:
    from hypetunnel.controller.service import FabricService
    from hypetunnel.errors import IntentInvalid
    from hypetunnel.model.intent import Network
    from hypetunnel.store.memory import MemoryStore

    d = doc()
    d["tenants"][1]["networks"][0]["vni"] = 7000
    service = FabricService(MemoryStore())
    service.apply(Intent.model_validate(d))
    before = service.intent
    with pytest.raises(IntentInvalid) as info:
        service.create_network("acme", Network(name="new", cidr="10.9.0.0/24", vni=7000))
    assert [(e.path, e.reason) for e in info.value.errors] == [
        ("vni", "VNI 7000 is already used by globex/front")]
    assert service.intent == before
