"""Cost of TLS on the control channels, measured in one run against plain (`--insecure`).

    PYTHONPATH=src python benchmarks/tls_cost.py [--flows 20000] [--repeat 5] [--restarts 3]
                                                 [--kills 3] [--no-write] [--smoke]

Every figure is taken with TLS and without in the same run, interleaved where it can be:
  * flow-programming rate: N flows as one ONF bundle into a real ovs-vswitchd over TCP, once
    plain and once over TLS (ECDSA P-256, mutual authentication), alternating per repeat;
  * convergence: `lab up` of 3 and of 12 hypervisors (wall time), then controller restarts:
    time from the restarted controller's API answering until every switch is converged again
    (OpenFlow and OVSDB connections made, installed flows read back, nothing to program);
  * failover: HA lab, kill -9 of the active controller: when the new active programs its first
    flow (benchmarks/failover.py's run, a few kills per mode).
The result is written to docs/benchmarks.md (section tls_cost) via benchmarks/_report.py.
--smoke: 2,000 flows once, the 3-hypervisor convergence with 1 restart, no failover, nothing
written (a check that the benchmark runs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import load_note, write_section  # noqa: E402
from convergence import large_intent  # noqa: E402
from flow_rate import realistic_flows  # noqa: E402

from hypetunnel.cli.democmd import bundled_example  # noqa: E402
from hypetunnel.lab import datacenter  # noqa: E402
from hypetunnel.lab.ovs import OvsInstance  # noqa: E402
from hypetunnel.pki import Identity, init_ca, issue, server_context  # noqa: E402
from hypetunnel.southbound.openflow import OpenFlowServer, SwitchChannel  # noqa: E402

MODES = ("tls", "insecure")
BRIDGE = "br-int"


# --- flow-programming rate -------------------------------------------------------------------

async def flow_rate(n: int, repeat: int) -> dict[str, list[float]]:
    """Seconds to install n flows (bundle + barrier) per mode, one entry per repeat."""
    directory = Path(tempfile.mkdtemp(prefix="httls-"))
    ovs = OvsInstance(directory)
    ovs.start()
    servers: list[OpenFlowServer] = []
    try:
        pki = directory / "pki"
        init_ca(pki)
        for name in ("hv1", "controller"):
            issue(pki, name)
        hv = Identity.in_directory(pki, "hv1")
        ovs.vsctl("set-ssl", str(hv.key), str(hv.cert), str(hv.ca))
        ovs.vsctl("add-br", BRIDGE, "--", "set", "bridge", BRIDGE, "datapath_type=netdev",
                  "fail_mode=secure", "protocols=OpenFlow13")
        channels: asyncio.Queue[SwitchChannel] = asyncio.Queue()

        async def on_switch(ch: SwitchChannel) -> None:
            await channels.put(ch)

        plain = OpenFlowServer(on_switch)
        tls = OpenFlowServer(on_switch, ssl_context=server_context(
            Identity.in_directory(pki, "controller")))
        servers += [plain, tls]
        targets = {"insecure": (await plain.listen("tcp:127.0.0.1:0")),
                   "tls": (await tls.listen("pssl:127.0.0.1:0")).replace("pssl:", "ssl:")}
        flows = realistic_flows(n)
        mgmt = f"unix:{directory}/{BRIDGE}.mgmt"
        out: dict[str, list[float]] = {m: [] for m in MODES}
        # Round 0 is a warm-up for both (the switch's first table growth is the slowest).
        for round_ in range(repeat + 1):
            for mode in MODES:  # alternating: drift on a shared machine hits both alike
                ovs.ofctl("del-flows", mgmt)
                ovs.vsctl("set-controller", BRIDGE, targets[mode])
                ch = await asyncio.wait_for(channels.get(), 30)
                start = time.perf_counter()
                await ch.send_flow_batch(flows, [], atomic=True)
                if round_:
                    out[mode].append(time.perf_counter() - start)
                got = len(await ch.dump_flow_cookies())
                assert got == n, f"{mode}: switch has {got} flows, expected {n}"
                ovs.vsctl("del-controller", BRIDGE)
                await ch.wait_closed()
        return out
    finally:
        for server in servers:
            await server.close()
        ovs.stop()
        shutil.rmtree(directory, ignore_errors=True)


# --- convergence -----------------------------------------------------------------------------

def convergence(hypervisors: int, restarts: int, mode: str) -> tuple[float, list[float]]:
    """(`lab up` seconds, [API up after a restart -> every switch converged, seconds]).

    Measured from the restarted controller's API answering, not from the process start: the
    Python start-up before it (seconds on a loaded machine) is the same with or without TLS."""
    name = f"tc{os.getpid() % 1000}{mode[0]}{hypervisors}"
    tmp = Path(tempfile.mkdtemp(prefix="httls-conv-"))
    if hypervisors == 3:
        file = bundled_example()
    else:
        file = tmp / "large.yaml"
        file.write_text(yaml.safe_dump(large_intent(hypervisors, 4 * hypervisors),
                                       sort_keys=False))
    datacenter.down(name)
    try:
        t0 = time.monotonic()
        lab = datacenter.up(file, name, timeout=240, insecure=mode == "insecure")
        up_s = time.monotonic() - t0
        ctl = datacenter.lab_controller(lab)
        took = []
        for _ in range(restarts):
            ctl.stop()
            ctl.start()
            start = time.monotonic()
            with datacenter.client(lab, ctl.api_url) as api:
                datacenter.wait_converged(api, 120)
            took.append(time.monotonic() - start)
        return up_s, took
    finally:
        datacenter.down(name)
        shutil.rmtree(tmp, ignore_errors=True)


# --- report ----------------------------------------------------------------------------------

def _cmp(label: str, tls: float, plain: float, unit: str) -> str:
    return f"| {label} | {tls:,.0f} {unit} | {plain:,.0f} {unit} | {tls / plain - 1:+.0%} |"


def render(n: int, rate: dict[str, list[float]], conv: dict[tuple[int, str], tuple[float,
           list[float]]], first_flow: dict[str, list[float]]) -> str:
    med = {m: statistics.median(v) for m, v in rate.items()}
    rows = [_cmp(f"flow programming: {n:,} flows (bundle), flows/s", n / med["tls"],
                 n / med["insecure"], "/s")]
    for size in sorted({s for s, _ in conv}):
        (up_t, rs_t), (up_p, rs_p) = conv[(size, "tls")], conv[(size, "insecure")]
        rows.append(_cmp(f"{size} hypervisors: `lab up`", up_t * 1000, up_p * 1000, "ms"))
        rows.append(_cmp(f"{size} hypervisors: restarted controller's API up -> every "
                         f"switch converged (median of {len(rs_t)})",
                         statistics.median(rs_t) * 1000, statistics.median(rs_p) * 1000, "ms"))
    if first_flow:
        ff = {m: statistics.median(v) * 1000 for m, v in first_flow.items()}
        rows.append(_cmp(f"failover: kill -9 -> first flow of the new active (median of "
                         f"{len(first_flow['tls'])})", ff["tls"], ff["insecure"], "ms"))
    table = "\n".join(rows)
    raw = ", ".join(f"{m} {[round(x * 1000) for x in v]} ms" for m, v in rate.items())
    return f"""
Goal: TLS within 10 % of plain TCP. The last column is TLS against plain (+ is slower; for
flows/s, - is slower).

| figure | TLS | plain (`--insecure`) | TLS vs plain |
|---|---:|---:|---:|
{table}

Conditions: TLS 1.3, ECDSA P-256 certificates from `hypetunnel pki`, mutual authentication on
OpenFlow (OVS `ssl:` targets) and OVSDB (`pssl:6640`); plain: the same over TCP (the lab's
`--insecure` run has the same layout: the controller(s) in their own namespaces on the
management overlay, only without TLS). The flow-rate runs alternate TLS and plain on one
ovs-vswitchd (userspace datapath), after one warm-up round each: per run {raw}.
Lab sizes: the bundled 3-hypervisor example; 12 hypervisors with 48 VMs
(benchmarks/convergence.py's large intent). How to read the lab rows: `lab up` is mostly
building namespaces and Open vSwitch instances, and a restart's figure includes when each
switch next retries (its reconnection back-off, up to 1 s): both spread by more than TLS
costs, in either direction, on a loaded machine; the flow rate and the failover are the
direct comparisons.
{load_note()}.
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--restarts", type=int, default=3)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[3, 12])
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs alone")
    ap.add_argument("--smoke", action="store_true", help="tiny run, no write")
    args = ap.parse_args()
    if args.smoke:
        args.flows, args.repeat, args.restarts, args.kills = 2000, 1, 1, 0
        args.sizes, args.no_write = [3], True
    rate = asyncio.run(flow_rate(args.flows, args.repeat))
    print(f"flow rate: {rate}", flush=True)
    conv = {}
    for size in args.sizes:
        for mode in MODES:
            conv[(size, mode)] = convergence(size, args.restarts, mode)
            print(f"convergence {size} {mode}: {conv[(size, mode)]}", flush=True)
    first_flow: dict[str, list[float]] = {}
    if args.kills:
        from failover import run as failover_run

        for mode in MODES:
            first_flow[mode] = failover_run(args.kills, insecure=mode == "insecure")[1]
            print(f"failover {mode}: first flows {first_flow[mode]}", flush=True)
    body = render(args.flows, rate, conv, first_flow)
    print(body)
    if not args.no_write:
        write_section("tls_cost", "Cost of TLS on the control channels", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
