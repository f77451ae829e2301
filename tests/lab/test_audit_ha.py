"""The audit trail survives an HA failover: a change acknowledged by the active controller is
in the trail the new active serves after the old one was killed (-9, no chance to flush)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from hypetunnel.cli.democmd import bundled_example
from hypetunnel.lab import datacenter, hapair
from hypetunnel.lab.proc import wait_until
from hypetunnel.lab.topology import Lab
from tests.lab.test_ha import active_node, api, controller_view, other

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def ha() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    name = f"au{os.getpid() % 100000}"
    datacenter.down(name)
    try:
        yield datacenter.up(bundled_example(), name, timeout=90, ha=True)
    finally:
        datacenter.down(name)


def test_a_change_audited_on_the_active_is_served_by_the_standby_after_a_kill(ha: Lab) -> None:
    act = active_node(ha)
    standby = other(act)
    vm = f"au{os.getpid() % 100000}"
    with api(ha, act) as a:
        revision = a.create_vm("acme", {"name": vm, "network": "back"})["revision"]
    pid = hapair.controllers(ha)[act].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: controller_view(ha, standby).get("role") == "active", 30,
               f"{standby} active")
    with api(ha, standby) as b:
        rows = b.audit(tenant="acme")
        [row] = [r for r in rows if r.get("revision") == revision]
        assert (row["kind"], row["node"], row["method"]) == ("change", act, "POST")
        assert row["route"] == "/api/v1/tenants/{tenant}/vms"
        assert f"vm/acme/{vm}" in row["keys"]["put"]
        # The new active audits its own writes next to the old one's.
        after = b.delete_vm("acme", vm)["revision"]
        wait_until(lambda: any(r.get("revision") == after and r.get("status") == 200
                               for r in b.audit(tenant="acme")), 10, "the delete's answer")
        [mine] = [r for r in b.audit(tenant="acme") if r.get("revision") == after]
        assert mine["node"] == standby and mine["plan"]["removed"] == [f"vm acme/{vm}"]
