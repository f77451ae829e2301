"""Fault detection time, per fault kind, 10 times each, in the lab (one controller, TLS).

- tunnel down: an nftables drop of VXLAN between hv2 and hv3 on the underlay switch (the
  management overlay's VNI spared); detected = the controller's first `bfd down` record of
  that tunnel (the state log), so the alarm's dampening does not hide later cuts. The first
  cut's `tunnel_down` alarm is reported too.
- VM crash: `Lab.crash_vm` (namespace, interface and switch port gone, the VM still listed);
  detected = its `vm_crash` alarm raised (the 1 s hold included). Its tenant's policy is
  `vm_crash: alarm` for the run, so the benchmark restores it itself.
- hypervisor lost: kill -9 of hv3's Open vSwitch (both daemons); detected = its
  `hypervisor_lost` alarm raised (1 s hold included). Restarted and converged before the next.

Every time is the controller's own timestamp (alarm `raised`, event `time`) minus the fault's.

    PYTHONPATH=src python benchmarks/detection_time.py [--runs 10] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import load_note, percentile, write_section

from hypetunnel.cli.democmd import bundled_example
from hypetunnel.lab import datacenter
from hypetunnel.lab.proc import wait_until
from hypetunnel.lab.topology import Lab
from hypetunnel.model.intent import MANAGEMENT_VNI

A, B = "hv2", "hv3"
TABLE = "detect"


def nft(lab: Lab, script: str, check: bool = True) -> None:
    subprocess.run(["ip", "netns", "exec", lab.underlay_netns, "nft", "-f", "-"], input=script,
                   text=True, capture_output=True, check=check, timeout=20)


def cut(lab: Lab) -> None:
    a, b = lab.hypervisor(A).underlay_ip, lab.hypervisor(B).underlay_ip
    rules = "\n".join(f"    ip saddr {s} ip daddr {d} udp dport 4789 "
                      f"@th,96,24 != {MANAGEMENT_VNI} drop" for s, d in ((a, b), (b, a)))
    nft(lab, f"table bridge {TABLE} {{\n  chain drops {{\n    type filter hook forward "
             f"priority 0; policy accept;\n{rules}\n  }}\n}}\n")


def heal(lab: Lab) -> None:
    nft(lab, f"delete table bridge {TABLE}", check=False)


def api(lab: Lab) -> Any:
    return datacenter.api_for(lab)


def alarm_raised(lab: Lab, resource: str, kind: str, after: float) -> float | None:
    with api(lab) as a:
        times = [x["raised"] for x in a.alarms(True)
                 if x["resource"] == resource and x["kind"] == kind and x["raised"] >= after]
    return min(times) if times else None


def is_open(lab: Lab, resource: str, kind: str) -> bool:
    with api(lab) as a:
        return any(x["resource"] == resource and x["kind"] == kind for x in a.alarms(False))


def bfd_events(lab: Lab, state: str, after: float) -> list[float]:
    with api(lab) as a:
        return sorted(e["time"] for r in (f"tunnel/{A}/{B}", f"tunnel/{B}/{A}")
                      for e in a.events(r) if e.get("state") == state and e["time"] >= after)


def ovs_bfd_down(lab: Lab, after: float) -> float | None:
    """When ovs-vswitchd on either end logged the session's up->down (None when its rate
    limiter dropped the line): BFD's own detection, without the report to the controller."""
    seen = []
    for hv in (A, B):
        log = lab.hypervisor(hv).ovs.directory / "ovs-vswitchd.log"
        for line in log.read_text(errors="replace").splitlines():
            if "BFD state change: up->down" not in line:
                continue
            stamp = datetime.strptime(line.split("|", 1)[0], "%Y-%m-%dT%H:%M:%S.%fZ")
            t = stamp.replace(tzinfo=UTC).timestamp()
            if t >= after:
                seen.append(t)
    return min(seen) if seen else None


def measure(label: str, runs: int, once: Callable[[], float]) -> list[float]:
    out = []
    for i in range(runs):
        ms = once() * 1000
        out.append(ms)
        print(f"{label} {i + 1}/{runs}: {ms:.0f} ms", flush=True)
    return out


def tunnel_down(lab: Lab, split: list[tuple[float, float]]) -> float:
    """Appends (OVS's detection, the report to the controller's record) to `split` when
    ovs-vswitchd logged the change."""
    cut(lab)
    t0 = time.time()  # nft has returned: the drop is in place
    try:
        wait_until(lambda: bool(bfd_events(lab, "bfd down", t0)), 15, "a bfd down record")
        recorded = bfd_events(lab, "bfd down", t0)[0]
    finally:
        heal(lab)
    wait_until(lambda: len(bfd_events(lab, "bfd up", t0)) >= 2, 20, "both ends forwarding")
    ovs = ovs_bfd_down(lab, t0)
    if ovs is not None and ovs <= recorded:
        split.append(((ovs - t0) * 1000, (recorded - ovs) * 1000))
    return recorded - t0


def vm_crash(lab: Lab, vm: str) -> float:
    t0 = time.time()
    lab.crash_vm(vm)
    try:
        wait_until(lambda: alarm_raised(lab, f"vm/{vm}", "vm_crash", t0) is not None, 15,
                   "the vm_crash alarm")
        raised = alarm_raised(lab, f"vm/{vm}", "vm_crash", t0)
        assert raised is not None
    finally:
        lab.remove_vm(vm)
        with api(lab) as a:
            datacenter.sync_vms(lab, a)
    wait_until(lambda: not is_open(lab, f"vm/{vm}", "vm_crash"), 15, "the crash to clear")
    return raised - t0


def hypervisor_lost(lab: Lab, hv: str) -> float:
    t0 = time.time()
    lab.kill_hypervisor(hv)
    try:
        wait_until(lambda: alarm_raised(lab, f"hypervisor/{hv}", "hypervisor_lost", t0)
                   is not None, 15, "the hypervisor_lost alarm")
        raised = alarm_raised(lab, f"hypervisor/{hv}", "hypervisor_lost", t0)
        assert raised is not None
    finally:
        lab.restart_hypervisor(hv)
    with api(lab) as a:
        wait_until(lambda: datacenter.sync_vms(lab, a), 30, "the VMs in line")
        datacenter.wait_converged(a, 60)
    wait_until(lambda: not is_open(lab, f"hypervisor/{hv}", "hypervisor_lost"), 20,
               "the loss to clear")
    return raised - t0


def set_crash_policy(lab: Lab, tenant: str, policy: dict[str, Any] | None) -> None:
    with api(lab) as a:
        doc = a.get_intent()
        for t in doc["tenants"]:
            if t["name"] == tenant:
                t["fault_policy"] = policy
        a.apply(doc)


def row(label: str, xs: list[float]) -> str:
    return (f"| {label} | {len(xs)} | {statistics.median(xs):.0f} | {percentile(xs, 95):.0f} "
            f"| {max(xs):.0f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    name = f"dt{os.getpid() % 10000}"
    datacenter.down(name)
    lab = datacenter.up(bundled_example(), name, timeout=90)
    try:
        before = load_note()
        wait_until(lambda: len(bfd_events(lab, "bfd up", 0)) >= 2, 30, "BFD up")
        first = time.time()
        split: list[tuple[float, float]] = []
        tunnel = measure("tunnel down", args.runs, lambda: tunnel_down(lab, split))
        alarm = alarm_raised(lab, f"tunnel/{A}-{B}", "tunnel_down", first)
        set_crash_policy(lab, "acme", {"vm_crash": "alarm"})
        crash = measure("vm crash", args.runs, lambda: vm_crash(lab, "acme/web3"))
        set_crash_policy(lab, "acme", None)
        lost = measure("hypervisor lost", args.runs, lambda: hypervisor_lost(lab, B))
        after = load_note()
    finally:
        heal(lab)
        datacenter.down(name)
    body = "\n".join([
        "The time from the fault to the controller's record of it: BFD state change "
        "(tunnel), alarm raised (VM crash, hypervisor). The lab: 3 hypervisors (userspace "
        "datapath), one controller, TLS on every channel. BFD runs at 100 ms x 3 on every "
        "tunnel port; the alarms hold a fault 1 s before raising it.",
        "",
        "| fault | runs | median ms | p95 ms | max ms |",
        "|---|---|---|---|---|",
        row("tunnel down (nftables drop; the controller's first `bfd down` record)", tunnel),
        *([row(f"&nbsp;&nbsp;of which OVS's BFD declared it (ovs-vswitchd's log; {len(split)} "
               f"of {len(tunnel)} runs logged it)", [a for a, _ in split]),
           row("&nbsp;&nbsp;of which OVS's report reached the controller's record",
               [b for _, b in split])] if split else []),
        row("VM crash (namespace and port gone; `vm_crash` raised)", crash),
        row("hypervisor lost (kill -9 of its OVS; `hypervisor_lost` raised)", lost),
        "",
        f"The first cut's `tunnel_down` alarm was raised "
        f"{'?' if alarm is None else f'{(alarm - first) * 1000:.0f}'} ms after it (later cuts "
        "update the dampened alarm). BFD declares the path down 300 ms (100 ms x 3) after "
        "the last control packet it received, which may have been sent up to 100 ms before "
        "the cut; ovs-vswitchd's log line of the change is rate-limited, so the split above "
        "covers only the runs it logged. The controller's record follows OVS's report at "
        "once: a switch's BFD report wakes the fault monitor (no snapshot tick in between). "
        "Goal, BFD's 300 ms plus one 100 ms control interval: "
        f"{'met' if max(tunnel) <= 400 else 'NOT met'} in every run (max "
        f"{max(tunnel):.0f} ms). A hypervisor is lost once both of its sessions are: "
        "OpenFlow's echo (1 s, 3 s timeout) and OVSDB's probe (2 s idle, 2 s for the "
        "answer), then the 1 s hold.",
        "",
        f"Before: {before}. After: {after}.",
    ])
    print(body)
    if not args.no_write:
        write_section("detection_time", "Fault detection time", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
