"""Restarting the controller loses no packet and changes no installed flow."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.lab.conftest import LabFabric
from tests.lab.test_overlay_packets import cross_hv_pair

pytestmark = pytest.mark.lab

_FLOW = re.compile(r"cookie=(0x[0-9a-f]+), duration=([0-9.]+)s")


def installed(f: LabFabric) -> dict[str, dict[str, float]]:
    """Per hypervisor: cookie -> age in seconds, read from the switch itself."""
    out = {}
    for name, hv in f.lab.hypervisors.items():
        dump = hv.ovs.ofctl("dump-flows", bridge_mgmt="br-int")
        out[name] = {m.group(1): float(m.group(2)) for m in _FLOW.finditer(dump)}
    return out


def test_restart_with_10ms_ping_loses_nothing_and_keeps_flows(fabric: LabFabric) -> None:
    a, b = cross_hv_pair(fabric, "acme")
    before = installed(fabric)
    assert all(before.values())
    pinger = fabric.lab.spawn(a.vm_id, ["ping", "-i", "0.01", "-c", "600", "-W", "1", b.ip],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        fabric.controller.stop()  # SIGTERM: a planned restart
        fabric.controller.start()
        from hypetunnel.lab.datacenter import wait_converged

        wait_converged(fabric.api, 30)
        out, _ = pinger.communicate(timeout=60)
    finally:
        if pinger.poll() is None:
            pinger.kill()
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    sent, received = int(m.group(1)), int(m.group(2))
    assert sent == 600 and received == sent, out[-300:]
    after = installed(fabric)
    for hv in before:
        assert set(after[hv]) == set(before[hv]), f"{hv}: flows changed across the restart"
        # Not re-added either: every flow is older now than it was before the restart.
        assert all(after[hv][c] >= before[hv][c] for c in before[hv]), hv


def test_killed_in_a_large_apply_converges_and_keeps_what_it_acknowledged(
        fabric: LabFabric) -> None:
    import copy
    import threading

    from hypetunnel.lab.datacenter import sync_vms, wait_converged
    from hypetunnel.lab.proc import wait_until

    api, lab = fabric.api, fabric.lab
    original = api.get_intent()
    before = sum(len(t["vms"]) for t in original["tenants"])
    big = copy.deepcopy(original)
    for h in big["hypervisors"]:
        h["capacity"] = {"vcpus": 64, "memory_mb": 65536}
    big["tenants"].append({
        "name": "bulk", "networks": [{"name": "n", "cidr": "10.77.0.0/24"}],
        "vms": [{"name": f"b{i}", "network": "n", "hypervisor": f"hv{1 + i % 3}"}
                for i in range(50)]})
    api.apply(big)  # acknowledged: from here on, it must survive anything
    plugging = threading.Thread(target=sync_vms, args=(lab, api), daemon=True)
    try:
        plugging.start()  # the compute side plugs 50 VMs; the controller programs them
        wait_until(lambda: api.status()["vms"]["bound"] >= before + 10, 60,
                   "the first bulk VMs to be bound")
        fabric.controller.kill()  # kill -9 in the middle of programming them
        plugging.join(timeout=120)
        fabric.controller.start()
        sync_vms(lab, api)
        wait_converged(api, 60)
        intent = api.get_intent()
        bulk = next(t for t in intent["tenants"] if t["name"] == "bulk")
        assert sorted(v["name"] for v in bulk["vms"]) == sorted(f"b{i}" for i in range(50))
        assert api.status()["vms"] == {"total": before + 50, "bound": before + 50}
        for src, dst in (("bulk/b0", "bulk/b1"), ("bulk/b47", "bulk/b49")):  # hv1-hv2, hv3-hv2
            assert lab.exec(src, ["ping", "-c", "2", "-i", "0.2", "-W", "1", lab.vm(dst).ip],
                            check=False).returncode == 0, f"{src} cannot reach {dst}"
    finally:
        if fabric.controller.pid is None:
            fabric.controller.start()
        plugging.join(timeout=120)
        api.apply(original)
        sync_vms(lab, api)
        wait_converged(api, 60)
