"""Naming rules of the namespace lab: legal Linux names, no collisions across labs and tenants."""

from __future__ import annotations

import itertools

import pytest

from hypetunnel.lab.netns import (
    IFNAMSIZ,
    check_hypervisor_name,
    check_lab_name,
    hypervisor_netns,
    lab_prefix,
    underlay_netns,
    uplink_port_name,
    vm_netns,
    vm_port_name,
)
from hypetunnel.lab.proc import LabError

LABS = ["demo", "t1234", "t12345678abcdef0"]
TENANTS = ["acme", "beta", "a-b", "a"]
VMS = ["web1", "web2", "b-c", "c", "x" * 31]


def _legal_ifname(name: str) -> bool:
    return 0 < len(name) <= IFNAMSIZ and "/" not in name and ":" not in name and " " not in name


@pytest.mark.parametrize("vm", VMS)
@pytest.mark.parametrize("tenant", TENANTS)
def test_vm_port_names_fit_in_ifnamsiz(tenant: str, vm: str) -> None:
    name = vm_port_name(f"{tenant}/{vm}")
    assert _legal_ifname(name)
    assert name.startswith("tap")


def test_identical_vm_names_in_different_tenants_get_different_ports_and_namespaces() -> None:
    ids = [f"{t}/{v}" for t, v in itertools.product(TENANTS, VMS)]
    assert len({vm_port_name(i) for i in ids}) == len(ids)
    assert len({vm_netns("demo", i) for i in ids}) == len(ids)


def test_dash_and_slash_do_not_alias() -> None:
    # "a-b/c" and "a/b-c" would both become "a-b-c" if "/" were mapped to "-".
    assert vm_netns("demo", "a-b/c") != vm_netns("demo", "a/b-c")
    assert vm_port_name("a-b/c") != vm_port_name("a/b-c")


def test_port_names_are_stable() -> None:
    # Deterministic across processes: the state file and a later `down` agree on names.
    assert vm_port_name("acme/web1") == vm_port_name("acme/web1")
    assert uplink_port_name("hv1") == uplink_port_name("hv1")
    assert _legal_ifname(uplink_port_name("h" * 31))


def test_every_namespace_of_a_lab_starts_with_its_prefix_and_no_other_labs() -> None:
    for lab in LABS:
        names = [underlay_netns(lab), hypervisor_netns(lab, "hv1"), vm_netns(lab, "acme/web1")]
        for name in names:
            assert name.startswith(lab_prefix(lab))
            others = [o for o in LABS if o != lab]
            assert not any(name.startswith(lab_prefix(o)) for o in others)


def test_lab_prefixes_never_nest() -> None:
    # Lab names have no dash, so "ht-t1-" can never be a prefix of lab "t1-x"'s namespaces.
    with pytest.raises(LabError):
        check_lab_name("t1-x")
    for a, b in itertools.permutations(["t1", "t12", "t123"], 2):
        assert not hypervisor_netns(b, "hv1").startswith(lab_prefix(a))


def test_roles_within_a_lab_never_collide() -> None:
    lab = "demo"
    hv_names = ["hv1", "hv2", "acme", "web1"]
    vm_ids = ["acme/web1", "web1", "hv1/hv1"]
    names = [underlay_netns(lab)]
    names += [hypervisor_netns(lab, h) for h in hv_names]
    names += [vm_netns(lab, v) for v in vm_ids]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("bad", ["", "Demo", "1lab", "a_b", "x" * 17, "t-1"])
def test_bad_lab_names_are_refused(bad: str) -> None:
    with pytest.raises(LabError):
        check_lab_name(bad)


@pytest.mark.parametrize("bad", ["ul", "vm-1", "HV1", "hv_1", "h" * 32, "a/b"])
def test_reserved_or_bad_hypervisor_names_are_refused(bad: str) -> None:
    with pytest.raises(LabError):
        check_hypervisor_name(bad)


@pytest.mark.parametrize("bad", ["Acme/web1", "acme/web/1", "acme web1", "/web1", "acme/"])
def test_bad_vm_ids_are_refused(bad: str) -> None:
    with pytest.raises(LabError):
        vm_port_name(bad)
