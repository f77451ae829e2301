"""The lab's compute agent (started by `lab up`): plugs a VM created through the API without
`lab sync`, unplugs a deleted one, and costs next to nothing while idle (it used ~35 % of a
core polling with a new HTTP client, TLS context included, 10 times a second)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest

from hypetunnel.cli.democmd import bundled_example
from hypetunnel.lab import datacenter
from hypetunnel.lab.proc import wait_until
from hypetunnel.lab.topology import Lab

pytestmark = pytest.mark.lab

IDLE_BUDGET = 0.05  # share of one core; measured ~0.01 (it was ~0.25-0.35 before)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    name = f"ag{os.getpid() % 100000}"
    datacenter.down(name)
    try:
        yield datacenter.up(bundled_example(), name, timeout=90, agent=True)
    finally:
        datacenter.down(name)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_agent_plugs_a_created_vm_and_unplugs_a_deleted_one(lab: Lab) -> None:
    vid = "acme/agent9"
    with datacenter.api_for(lab) as api:
        try:
            api._request("POST", "/tenants/acme/vms", {"name": "agent9", "network": "front"})
            start = time.monotonic()
            wait_until(lambda: vid in Lab.load(lab.name).vms, 10, f"the agent to plug {vid}")
            plugged_after = time.monotonic() - start
            placed = next(v for t in api.get_intent()["tenants"] for v in t["vms"]
                          if t["name"] == "acme" and v["name"] == "agent9")
            assert Lab.load(lab.name).vm(vid).hypervisor == placed["hypervisor"]
        finally:
            api._request("DELETE", "/tenants/acme/vms/agent9")
        wait_until(lambda: vid not in Lab.load(lab.name).vms, 10, f"the agent to unplug {vid}")
    print(f"plugged {plugged_after:.2f} s after the API call")


def test_agent_is_cheap_while_idle(lab: Lab) -> None:
    pid = int(json.loads(datacenter.agent_record(lab).read_text())["pid"])
    before, t0 = cpu_seconds(pid), time.monotonic()
    wait_until(lambda: time.monotonic() - t0 >= 5, 10, "a 5 s idle window")
    share = (cpu_seconds(pid) - before) / (time.monotonic() - t0)
    print(f"agent idle CPU: {100 * share:.1f} % of a core")
    assert share < IDLE_BUDGET
