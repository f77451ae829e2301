"""The fault policy: written on the fabric, a tenant or a VM, resolved field by field (the VM
wins over its tenant, the tenant over the fabric, the built-in defaults last); bad values are
refused with the field's path."""

from __future__ import annotations

import pytest

from hypetunnel.errors import IntentInvalid
from hypetunnel.model.intent import Intent
from hypetunnel.model.loader import load_intent_text
from hypetunnel.model.policy import DEFAULT, VmFaultPolicy, fabric_fault_policy, vm_fault_policy

DOC = """\
fabric:
  {fabric}
hypervisors:
  - name: hv1
tenants:
  - name: acme
    {tenant}
    networks:
      - name: front
        cidr: 10.1.0.0/24
    vms:
      - name: web1
        network: front
        {vm}
      - name: web2
        network: front
"""


def load(fabric: str = "", tenant: str = "", vm: str = "") -> Intent:
    return load_intent_text(DOC.format(fabric=fabric or "encapsulation: vxlan",
                                       tenant=tenant, vm=vm), "policy.yaml")


def test_without_a_policy_a_crash_restarts_after_10_s_and_a_partition_only_alarms() -> None:
    intent = load()
    assert vm_fault_policy(intent, "acme/web1") == DEFAULT == VmFaultPolicy(
        vm_crash="restart", restart_grace=10, partition="alarm")
    assert vm_fault_policy(intent, "nobody/x") == DEFAULT


def test_the_vm_wins_over_its_tenant_and_the_tenant_over_the_fabric_field_by_field() -> None:
    intent = load(fabric="fault_policy: {partition: drain, restart_grace: 30}",
                  tenant="fault_policy: {vm_crash: alarm, restart_grace: 5}",
                  vm="fault_policy: {vm_crash: restart}")
    assert vm_fault_policy(intent, "acme/web1") == VmFaultPolicy(
        vm_crash="restart", restart_grace=5, partition="drain")
    assert vm_fault_policy(intent, "acme/web2") == VmFaultPolicy(
        vm_crash="alarm", restart_grace=5, partition="drain")


@pytest.mark.parametrize(("where", "text", "path"), [
    ("vm", "fault_policy: {vm_crash: reboot}", "tenants[0].vms[0].fault_policy.vm_crash"),
    ("tenant", "fault_policy: {restart_grace: -1}", "tenants[0].fault_policy.restart_grace"),
    ("fabric", "fault_policy: {restart_grace: '10'}", "fabric.fault_policy.restart_grace"),
    ("fabric", "fault_policy: {partition: evacuate}", "fabric.fault_policy.partition"),
    ("vm", "fault_policy: {crash: restart}", "tenants[0].vms[0].fault_policy.crash"),
])
def test_a_bad_policy_is_refused_naming_the_field(where: str, text: str, path: str) -> None:
    with pytest.raises(IntentInvalid) as info:
        load(**{where: text})
    assert [e.path for e in info.value.errors] == [path]


def test_the_fabric_policy_is_what_a_vm_of_no_tenant_gets() -> None:
    intent = load(fabric="fault_policy: {partition: drain}",
                  tenant="fault_policy: {partition: alarm}")
    assert fabric_fault_policy(intent).partition == "drain"
    assert vm_fault_policy(intent, "acme/web1").partition == "alarm"
    assert fabric_fault_policy(load()) == DEFAULT
