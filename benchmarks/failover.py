"""Failover of the controller pair: kill -9 of the active controller, 20 times, in the HA lab.

Per kill: a 10 ms ping runs between VMs on different hypervisors; at the kill, a VM that the
intent already holds is plugged into a switch (its binding appears while no controller is
active). Measured: kill -> the standby's term claim (detection + election), kill -> the first
flow the new active controller programs (its flows for that VM, after role MASTER and resync),
and packets lost on the established path. The VM plugged at one kill is deleted (intent, then
port) before the next, so hv3's capacity does not run out however many kills are asked for.

    PYTHONPATH=src python benchmarks/failover.py [--kills 20] [--no-write] [--smoke]

--smoke: 2 kills (one of each controller), nothing written to docs/benchmarks.md (the test
suite's check that the benchmark runs).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import percentile, write_section
from _sources import FAILOVER as COMPARISON

from hypetunnel.cli.democmd import bundled_example
from hypetunnel.lab import datacenter, hapair
from hypetunnel.lab.proc import wait_until
from hypetunnel.model.intent import network_mtu


def view(lab, node):  # type: ignore[no-untyped-def]
    try:
        ctl = hapair.controllers(lab)[node]
        with hapair.ApiClient(ctl.api_url, timeout=2.0, ca=ctl.ca,
                              token=hapair.lab_token(lab.directory)) as a:
            return a.status()
    except Exception:
        return {}


def row(label: str, xs: list[float]) -> str:
    return (f"| {label} | {statistics.median(xs):.0f} | {percentile(xs, 95):.0f} | "
            f"{max(xs):.0f} |")


def retire(lab, vm: str) -> None:  # type: ignore[no-untyped-def]
    """Delete a VM the benchmark plugged: from the intent, then its port (as Nova would)."""
    tenant, _, name = vm.partition("/")
    with datacenter.api_for(lab) as a:
        a.delete_vm(tenant, name)
        lab.remove_vm(vm)
        datacenter.wait_converged(a, 20)


def run(kills: int, insecure: bool = False
        ) -> tuple[list[float], list[float], list[int], list[float]]:
    name = f"fo{os.getpid() % 10000}"
    datacenter.down(name)
    takeovers, first_flows, losses, bound = [], [], [], []
    try:
        lab = datacenter.up(bundled_example(), name, ha=True, timeout=90, insecure=insecure)
        src, dst = lab.vm("acme/db1"), lab.vm("acme/db2")
        for i in range(kills):
            act = next(n for n in hapair.NODES
                       if view(lab, n).get("controller", {}).get("role") == "active")
            new = hapair.NODES[1 - hapair.NODES.index(act)]
            with datacenter.api_for(lab) as a:
                a.create_vm("acme", {"name": f"fo{i}", "network": "back", "hypervisor": "hv3"})
                intent = a.get_intent()
            vm = next(v for t in intent["tenants"] if t["name"] == "acme" for v in t["vms"]
                      if v["name"] == f"fo{i}")
            ping = lab.spawn(src.vm_id, ["ping", "-i", "0.01", "-c", "300", "-W", "1", dst.ip],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(0.5)  # let the stream run before the kill (a measurement, not a wait)
            pid = hapair.controllers(lab)[act].pid
            assert pid is not None
            killed = time.time()
            os.kill(pid, signal.SIGKILL)
            lab.add_vm(f"acme/fo{i}", "hv3", mac=vm["mac"], ip=vm["ip"], prefixlen=24,
                       mtu=network_mtu(lab_fabric_mtu(intent), "vxlan"))
            bound.append(time.time() - killed)
            wait_until(lambda n=new: view(lab, n).get("converged") is True, 20, "convergence")
            st = view(lab, new)
            takeovers.append(st["controller"]["took_over_at"] - killed)
            pushes = [s["last_flow_push"] for s in st["switches"]
                      if s["last_flow_push"] and s["last_flow_push"] > killed]
            first_flows.append(min(pushes) - killed)
            out, _ = ping.communicate(timeout=60)
            m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
            assert m, out
            losses.append(int(m.group(1)) - int(m.group(2)))
            hapair.controllers(lab)[act].start()
            wait_until(lambda n=act: view(lab, n).get("controller", {}).get("role") == "standby",
                       30, f"{act} back as standby")
            print(f"kill {i + 1}: takeover {takeovers[-1] * 1000:.0f} ms, first flow "
                  f"{first_flows[-1] * 1000:.0f} ms, lost {losses[-1]}", flush=True)
            # Each kill plugs a new VM into hv3: without this, hv3 is full after 14 kills.
            retire(lab, f"acme/fo{i}")
    finally:
        datacenter.down(name)
    return takeovers, first_flows, losses, bound


def render(kills: int, takeovers: list[float], first_flows: list[float], losses: list[int],
           bound: list[float]) -> str:
    ms = [x * 1000 for x in takeovers]
    ff = [x * 1000 for x in first_flows]
    bd = [x * 1000 for x in bound]
    body = f"""
**{kills} kills of the active controller: takeover median {statistics.median(ms):.0f} ms,
p95 {percentile(ms, 95):.0f} ms, max {max(ms):.0f} ms; first flow programmed by the new
active controller median {statistics.median(ff):.0f} ms, p95 {percentile(ff, 95):.0f} ms,
max {max(ff):.0f} ms;
packets lost on the established path: {sum(losses)} of {kills * 300} (goal 0).**

| figure (ms, from the kill -9) | median | p95 | max |
|---|---:|---:|---:|
{row("standby claims the new term (detection + etcd compare-and-swap)", ms)}
{row("first flow programmed by the new active (role MASTER, resync, push)", ff)}
{row("the new VM's port plugged (add-port done; the flow cannot precede it)", bd)}

Conditions: `hypetunnel lab up examples/three-hypervisors.yaml --ha` (3 hypervisors, userspace
datapath, controllers ctl1/ctl2 and etcd members in their own namespaces on the management
overlay, etcd heartbeat 50 ms / election 500 ms, controller heartbeat 50 ms, heartbeat
timeout 1 s for hangs/partitions — a kill is seen at once because the dead process's TCP
connection closes). Per kill: 300 pings at 10 ms from acme/db1 (hv1) to acme/db2 (hv3); at the
kill a new VM of the intent is plugged into hv3, so the new active controller has flows to
program. The killed controller is restarted and rejoins as standby (no fail-back) before the
next kill, so kills alternate between ctl1 and ctl2.
Before the next kill, the VM plugged at this one is deleted (intent, then port), so hv3 does
not fill up.
{COMPARISON}
"""
    return body


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=int(os.environ.get("KILLS", "20")))
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs alone")
    ap.add_argument("--smoke", action="store_true",
                    help="2 kills, no write: does the benchmark run")
    args = ap.parse_args()
    if args.smoke:
        args.kills, args.no_write = 2, True
    body = render(args.kills, *run(args.kills))
    print(body)
    if not args.no_write:
        write_section("failover", "Controller failover", body)
    return 0


def lab_fabric_mtu(intent: dict):  # type: ignore[no-untyped-def]
    from hypetunnel.model.intent import Fabric

    return Fabric.model_validate(intent.get("fabric", {}))


if __name__ == "__main__":
    sys.exit(main())
