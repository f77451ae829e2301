"""Prove a lab's overlay with real packets and describe it (used by `verify` and `demo`)."""

from __future__ import annotations

import asyncio
from typing import Any

from hypetunnel.client import ApiClient
from hypetunnel.lab.probe import ProbeResult, probe_matrix
from hypetunnel.lab.topology import Lab
from hypetunnel.model.intent import Intent, vm_id


def networks_by_vm(intent: Intent) -> dict[str, str]:
    return {vm_id(t.name, v.name): f"{t.name}/{v.network}" for t in intent.tenants for v in t.vms}


def verify(lab: Lab, api: ApiClient) -> tuple[list[ProbeResult], dict[str, str]]:
    """Probe every VM pair of the intent. Raises probe.ProbeError when a probe could not be
    set up: that proves neither reach nor isolation (tests/lab has a negative control that
    leaks one VNI into another and expects verify to report it)."""
    intent = Intent.model_validate(api.get_intent())
    network_of = networks_by_vm(intent)
    vms = [v for vid, v in sorted(lab.vms.items()) if vid in network_of]
    return asyncio.run(probe_matrix(vms, network_of)), network_of


def summary(results: list[ProbeResult]) -> dict[str, Any]:
    reach = [r for r in results if r.expected]
    isolate = [r for r in results if not r.expected and r.reached is not None]
    return {
        "reach_ok": sum(r.ok for r in reach), "reach_total": len(reach),
        "isolation_ok": sum(r.ok for r in isolate), "isolation_total": len(isolate),
        "failures": [f"{r.src} -> {r.dst}: expected {'reach' if r.expected else 'no reach'}"
                     for r in results if not r.ok],
    }
