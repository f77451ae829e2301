"""Negative control for `verify`: a flow that leaks one tenant's network into another's must be
reported. A check that cannot fail proves nothing.

The controller audits every switch's flow table (fcaps: a drifted switch is repaired within the
audit interval, 5 s by default), so a foreign flow cannot outlive the probe. For this test the
lab's controller runs with an audit interval longer than the test; it is restarted with its own
arguments afterwards, and then removes the leak (drift repaired), which the test also shows."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from hypetunnel.lab import datacenter
from hypetunnel.lab.proc import wait_until
from hypetunnel.lab.verify import summary, verify
from tests.lab.conftest import LabFabric

pytestmark = pytest.mark.lab

LEAK_COOKIE = 0x6C65616B00000001  # not HypeTunnel's prefix: the leak is not the controller's


def front_vni(f: LabFabric, tenant: str) -> int:
    t = next(t for t in f.api.get_intent()["tenants"] if t["name"] == tenant)
    return int(next(n["vni"] for n in t["networks"] if n["name"] == "front"))


@contextmanager
def flow_audit_paused(f: LabFabric) -> Iterator[None]:
    """The lab's controller restarted without a flow audit for the duration (a restart keeps
    every switch's flows: tests/lab/test_controller_restart.py)."""
    quiet = dataclasses.replace(f.controller, extra_args=(*f.controller.extra_args,
                                                   "--flow-audit-interval", "86400"))
    f.controller.stop()
    try:
        quiet.start()
        datacenter.wait_converged(f.api, 60)
        yield
    finally:
        quiet.stop()
        f.controller.start()
        datacenter.wait_converged(f.api, 60)


def test_verify_reports_a_flow_that_leaks_one_vni_into_another(fabric: LabFabric) -> None:
    # acme/web2 and globex/web2 share hv2 and the 10.1.0.0/24 plan with different addresses.
    a, b = fabric.lab.vm("acme/web2"), fabric.lab.vm("globex/web2")
    assert a.hypervisor == b.hypervisor and a.ip != b.ip
    ovs = fabric.lab.hypervisor(a.hypervisor).ovs

    def ofport(vm_id: str) -> int:
        return int(ovs.vsctl("--bare", "--columns=ofport", "find", "Interface",
                             f"external_ids:iface-id={vm_id}"))

    pa, pb = ofport(a.vm_id), ofport(b.vm_id)
    va, vb = front_vni(fabric, "acme"), front_vni(fabric, "globex")
    # Frames of one VM to the other, and its ARP for the other's address (answered by the
    # other tenant's responder), enter the other tenant's network. Nothing else changes.
    leak = [f"in_port={pa},dl_dst={b.mac},actions=write_metadata:{vb},goto_table:20",
            f"in_port={pa},arp,arp_tpa={b.ip},actions=write_metadata:{vb},goto_table:10",
            f"in_port={pb},dl_dst={a.mac},actions=write_metadata:{va},goto_table:20",
            f"in_port={pb},arp,arp_tpa={a.ip},actions=write_metadata:{va},goto_table:10"]

    def leak_flows() -> int:
        dump = ovs.ofctl("dump-flows", f"cookie={LEAK_COOKIE:#x}/-1", bridge_mgmt="br-int")
        return sum("cookie=" in line for line in dump.splitlines())

    def inject_and_verify() -> None:
        for spec in leak:
            ovs.ofctl("add-flow", f"table=0,priority=200,cookie={LEAK_COOKIE:#x},{spec}",
                      bridge_mgmt="br-int")
        assert leak_flows() == len(leak)
        results, _ = verify(fabric.lab, fabric.api)
        assert leak_flows() == len(leak), "the leak flows were removed during the probe"
        # Exactly the leaked pair, both ways; every other verdict is unchanged.
        assert sorted(summary(results)["failures"]) == [
            f"{a.vm_id} -> {b.vm_id}: expected no reach",
            f"{b.vm_id} -> {a.vm_id}: expected no reach"]

    with flow_audit_paused(fabric):
        try:
            inject_and_verify()
        finally:
            ovs.ofctl("del-flows", f"cookie={LEAK_COOKIE:#x}/-1", bridge_mgmt="br-int",
                      check=False)
            wait_until(lambda: leak_flows() == 0, 10, "the leak flows to be removed")
    # With its audit back, the controller removes a foreign flow by itself (drift repaired).
    ovs.ofctl("add-flow", f"table=0,priority=200,cookie={LEAK_COOKIE:#x},{leak[0]}",
              bridge_mgmt="br-int")
    wait_until(lambda: leak_flows() == 0, 30, "the controller to remove the leak flow")

