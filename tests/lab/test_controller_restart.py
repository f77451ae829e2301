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
