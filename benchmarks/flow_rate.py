"""Flow programming rate into one real ovs-vswitchd: our controller vs `ovs-ofctl add-flows`.

    PYTHONPATH=src python benchmarks/flow_rate.py [--flows 50000] [--repeat 3] [--no-write]
                                                  [--smoke]

Both load the same N flows into the same netdev bridge (flows deleted between runs):
  * ours: OpenFlowServer + SwitchChannel.send_flow_batch, time from the first byte written to
    the barrier reply, as an ONF bundle (atomic) and as plain flow mods; the flows are already
    encoded (the reconciler caches encodings), the cold encoding cost is reported separately;
  * ovs-ofctl: `ovs-ofctl -O OpenFlow13 add-flows [--bundle] BRIDGE FILE`, wall time of the
    command (process start, text parsing, sending, waiting for the switch).
The result is written to docs/benchmarks.md (section flow_rate) via benchmarks/_report.py.
--smoke: 2,000 flows, 1 run, nothing written (the test suite's check that the benchmark runs).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_section

from hypetunnel.compiler.flows import Flow, Output, match
from hypetunnel.lab.ovs import OvsInstance
from hypetunnel.southbound.openflow import OpenFlowServer, SwitchChannel, codec

BRIDGE = "br-int"
TENANTS = 100
PORTS = 64


def realistic_flows(n: int) -> list[Flow]:
    """Table-30 L2 forwarding: one flow per (tenant network, VM MAC) -> local or tunnel port."""
    return [Flow(30, 100, match(metadata=i % TENANTS + 1,
                                eth_dst=f"02:00:{i >> 24 & 255:02x}:{i >> 16 & 255:02x}:"
                                        f"{i >> 8 & 255:02x}:{i & 255:02x}"),
                 (Output(i % PORTS + 1),)) for i in range(n)]


def ofctl_line(f: Flow) -> str:
    m = dict(f.match)
    (out,) = f.actions
    assert isinstance(out, Output)
    return (f"table={f.table},priority={f.priority},cookie={f.cookie:#x},"
            f"metadata={m['metadata']:#x},dl_dst={m['eth_dst']},actions=output:{out.port}")


async def run(n: int, repeat: int) -> dict[str, object]:
    directory = Path(tempfile.mkdtemp(prefix="htbench-"))
    ovs = OvsInstance(directory)
    ovs.start()
    server: OpenFlowServer | None = None
    try:
        ovs.vsctl("add-br", BRIDGE, "--", "set", "bridge", BRIDGE, "datapath_type=netdev",
                  "fail_mode=secure", "protocols=OpenFlow13")
        channels: asyncio.Queue[SwitchChannel] = asyncio.Queue()

        async def on_switch(ch: SwitchChannel) -> None:
            await channels.put(ch)

        server = OpenFlowServer(on_switch)
        address = await server.listen(f"unix:{directory}/of.sock")
        ovs.vsctl("set-controller", BRIDGE, address)
        ch = await asyncio.wait_for(channels.get(), 20)

        flows = realistic_flows(n)
        t0 = time.perf_counter()
        codec.encode_flows(flows)
        encode_s = time.perf_counter() - t0
        mgmt = f"unix:{directory}/{BRIDGE}.mgmt"

        def clear() -> None:
            ovs.ofctl("del-flows", mgmt)

        async def ours(atomic: bool) -> float:
            clear()
            start = time.perf_counter()
            await ch.send_flow_batch(flows, [], atomic=atomic)
            took = time.perf_counter() - start
            got = len(await ch.dump_flow_cookies())
            assert got == n, f"switch has {got} flows, expected {n}"
            return took

        flow_file = directory / "flows.txt"
        flow_file.write_text("\n".join(ofctl_line(f) for f in flows) + "\n")

        def ofctl(bundle: bool) -> float:
            clear()
            cmd = ["ovs-ofctl", "-O", "OpenFlow13", "add-flows", mgmt, str(flow_file)]
            if bundle:
                cmd.insert(3, "--bundle")
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            took = time.perf_counter() - start
            dump = ovs.ofctl("dump-aggregate", mgmt)
            assert f"flow_count={n}" in dump, dump
            return took

        times: dict[str, list[float]] = {k: [] for k in
                                          ("ours_bundle", "ours_plain", "ofctl_bundle",
                                           "ofctl_plain")}
        for _ in range(repeat):  # interleaved so drift hits every contender alike
            times["ours_bundle"].append(await ours(True))
            times["ours_plain"].append(await ours(False))
            times["ofctl_bundle"].append(await asyncio.to_thread(ofctl, True))
            times["ofctl_plain"].append(await asyncio.to_thread(ofctl, False))
        med = {k: statistics.median(v) for k, v in times.items()}
        return {"n": n, "repeat": repeat, "encode_s": encode_s, "median_s": med,
                "all_s": times, "ovs": subprocess.run(["ovs-vswitchd", "--version"],
                                                      capture_output=True, text=True
                                                      ).stdout.splitlines()[0]}
    finally:
        if server is not None:
            await server.close()
        ovs.stop()
        shutil.rmtree(directory, ignore_errors=True)


def render(r: dict[str, object]) -> str:
    n = r["n"]
    med = r["median_s"]
    assert isinstance(n, int) and isinstance(med, dict)
    rate = {k: n / v for k, v in med.items()}
    enc = r["encode_s"]
    assert isinstance(enc, float)
    ratio_b = rate["ours_bundle"] / rate["ofctl_bundle"]
    ratio_p = rate["ours_plain"] / rate["ofctl_plain"]
    best = max(rate["ours_bundle"], rate["ours_plain"])
    goal = "met" if min(ratio_b, ratio_p) >= 0.8 and best >= 20_000 else "NOT met"
    rows = [
        ("ours, ONF bundle (atomic)", "ours_bundle", ratio_b),
        ("ours, plain flow mods", "ours_plain", ratio_p),
        ("ovs-ofctl add-flows --bundle", "ofctl_bundle", None),
        ("ovs-ofctl add-flows", "ofctl_plain", None),
    ]
    table = "\n".join(
        f"| {label} | {med[key]:.3f} | {rate[key]:,.0f} | "
        f"{'' if ratio is None else f'{ratio:.2f}'} |" for label, key, ratio in rows)
    cold = enc + med["ours_bundle"]
    table += (f"\n| ours, bundle, cold (encoding included) | {cold:.3f} | {n / cold:,.0f} | "
              f"{n / cold / rate['ofctl_bundle']:.2f} |")
    return f"""
**{rate['ours_bundle']:,.0f} flow mods/s atomic, {rate['ours_plain']:,.0f} plain; ratio to
ovs-ofctl {ratio_b:.2f} (bundle) / {ratio_p:.2f} (plain). Goal (ratio >= 0.8 and >= 20,000
flow mods/s): {goal}.**

| loader | median time (s) | flow mods/s | ours / ovs-ofctl |
| --- | ---: | ---: | ---: |
{table}

Conditions: {n:,} flows (table 30, priority 100, metadata = one of {TENANTS} tenant networks,
unique eth_dst, output to one of {PORTS} ports) loaded into one empty `datapath_type=netdev`
bridge of one ovs-vswitchd ({r['ovs']}), median of {r['repeat']} interleaved runs, flows
deleted before each run, the flow count checked after each. Ours = first byte written to the
barrier reply over the controller's unix-socket connection, flows already encoded (encoding is
cached per flow; a cold encode of all {n:,} flows took {enc:.2f} s, {n / enc:,.0f} flows/s, paid
once per distinct flow). ovs-ofctl = wall time of the command on the bridge's management
socket, including process start and parsing the flow file. Date {datetime.date.today()}.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs alone")
    ap.add_argument("--smoke", action="store_true",
                    help="2,000 flows, 1 run, no write: does the benchmark run")
    args = ap.parse_args()
    if args.smoke:
        args.flows, args.repeat, args.no_write = 2_000, 1, True
    result = asyncio.run(run(args.flows, args.repeat))
    body = render(result)
    print(body)
    print("all runs (s):", result["all_s"])
    if not args.no_write:
        write_section("flow_rate", "Flow programming rate", body)


if __name__ == "__main__":
    main()
