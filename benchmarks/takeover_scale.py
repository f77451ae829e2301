"""Takeover at scale: N simulated switches on real TCP OpenFlow, two controllers, kill the active.

In one process and one event loop: two `controller.runtime.Controller` instances (the real
controller: election with TCP heartbeats between them, OpenFlow server, per-switch channel and
reconciler, the takeover code) over a shared in-memory store with etcd's term semantics
(`HaMemoryStore`, like tests/unit/test_election.py's FakeTerms). Every simulated switch is a
`FakeSwitch` pair with one flow table: one connection to each controller, as a bridge with two
controller targets has. The switches carry `--flows` flows each (default: the median per
hypervisor of the compiler-scale fabric), so a resync reads a realistic table.

Measured, from the moment the active is stopped (its tasks cancelled, its sockets closed, as a
killed process's would be): when the standby becomes active (it sees the heartbeat connection
close), when every switch has accepted it as MASTER with the new term as generation id, and when
every switch has been re-read by it (flow dump answered after the MASTER request). Plus the
controllers' memory (RSS growth while they start and take their switches, for both).

The hypervisors have no OVSDB endpoint here, so the new active programs no flow after the
re-read (the difference would be empty anyway: it desires what the old one installed).

Run: python benchmarks/takeover_scale.py [--sizes 100,300,1000] [--smoke] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import json
import logging
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import load_note, percentile, write_section  # noqa: E402
from os_ken.ofproto import ofproto_v1_3 as ofp  # noqa: E402

from hypetunnel.compiler.flows import Flow, Output, match  # noqa: E402
from hypetunnel.controller.ha import HaConfig, Role  # noqa: E402
from hypetunnel.controller.runtime import Controller  # noqa: E402
from hypetunnel.controller.switch import datapath_id_for  # noqa: E402
from hypetunnel.model.intent import Hypervisor, Intent  # noqa: E402
from hypetunnel.southbound.openflow import codec  # noqa: E402
from hypetunnel.southbound.openflow.fakeswitch import FakeSwitch, FlowEntry  # noqa: E402
from hypetunnel.store.memory import MemoryStore  # noqa: E402

SIZES = (100, 300, 1000)
SMOKE_SIZE = 10
FLOWS_PER_SWITCH = 1450  # median flows per hypervisor at compiler-scale (docs/benchmarks.md)
GOAL_S = 5.0
SETTLE_TIMEOUT_S = 120.0
SETUP_BATCH = 25
_MATCH_HDR = struct.Struct("!HH")  # ofp_match type, length: the match starts at offset 48


class HaMemoryStore(MemoryStore):
    """MemoryStore + what the HA controller needs of etcd: term CAS, leader record, fencing,
    change watch (in memory; the standby re-reads on watch like on etcd)."""

    def __init__(self) -> None:
        super().__init__()
        self._term = 0
        self._leader: dict[str, Any] | None = None
        self._term_lock = threading.Lock()
        self._watchers: list[Callable[[], None]] = []

    def term(self) -> int:
        return self._term

    def leader(self) -> dict[str, Any] | None:
        return copy.deepcopy(self._leader)

    def claim_term(self, expected: int, node: str, info: dict[str, Any]) -> bool:
        with self._term_lock:
            if self._term != expected:
                return False
            self._term = expected + 1
            self._leader = {**info, "node": node, "term": self._term}
            return True

    def fenced(self, term: int) -> HaMemoryStore:
        return self  # one writer at a time is all this benchmark does

    def watch(self, on_change: Callable[[], None]) -> Callable[[], None]:
        self._watchers.append(on_change)

        def stop() -> None:
            if on_change in self._watchers:  # the controller may stop twice
                self._watchers.remove(on_change)
        return stop

    def commit(self, puts: Mapping[str, dict[str, Any]], deletes: Iterable[str], *,
               expect_revision: int | None = None) -> int:
        rev = super().commit(puts, deletes, expect_revision=expect_revision)
        for w in list(self._watchers):
            w()
        return rev


class TimedSwitch(FakeSwitch):
    """One controller connection of a simulated switch; notes when it became MASTER and when it
    answered a flow dump after that."""

    master_at: float | None = None
    master_generation: int | None = None
    dumped_at: float | None = None

    def _role(self, xid: int, buf: bytes) -> list[bytes]:
        replies = super()._role(xid, buf)
        if self.role == ofp.OFPCR_ROLE_MASTER and self.master_at is None:
            self.master_at, self.master_generation = time.monotonic(), self.generation_id
        return replies

    def _multipart(self, xid: int, buf: bytes) -> list[bytes]:
        replies = super()._multipart(xid, buf)
        if self.master_at is not None and self.dumped_at is None:
            self.dumped_at = time.monotonic()
        return replies


def preloaded_table(n_flows: int) -> dict[tuple[int, int, bytes], FlowEntry]:
    """What the old active installed: n distinct L2 flows, keyed as the switch keys them (the
    match bytes as the codec encodes them)."""
    table: dict[tuple[int, int, bytes], FlowEntry] = {}
    for i in range(n_flows):
        flow = Flow(20, 100, match(metadata=1 + i % 50, eth_dst=f"02:00:00:{i >> 16 & 255:02x}:"
                                   f"{i >> 8 & 255:02x}:{i & 255:02x}"), (Output(1 + i % 40),))
        buf = codec.flow_mod_bytes(flow)
        _mtype, mlen = _MATCH_HDR.unpack_from(buf, 48)
        table[(flow.table, flow.priority, buf[48:48 + mlen + (-mlen % 8)])] = FlowEntry(
            flow.cookie, i)
    return table


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def until(cond: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll cond until true; returns the time it became true (monotonic)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached in {timeout:.0f} s: {what}")
        await asyncio.sleep(0.005)
    return time.monotonic()


async def takeover(n_switches: int, n_flows: int) -> dict[str, float]:
    store = HaMemoryStore()
    names = [f"hv{i:04d}" for i in range(n_switches)]
    intent = Intent(hypervisors=[Hypervisor(name=n, underlay_ip=f"10.{i >> 8 & 255}.{i & 255}.1")
                                 for i, n in enumerate(names)])
    from hypetunnel.controller.service import FabricService

    FabricService(store).apply(intent)
    table = preloaded_table(n_flows)
    gc.collect()
    rss0 = rss_mb()
    ctls = {}
    for node in ("ctl-a", "ctl-b"):
        ctls[node] = Controller(store, openflow_listen=["tcp:127.0.0.1:0"], startup_grace=0.0,
                                ha=HaConfig(node, f"127.0.0.1:{_free_port()}"))
    a, b = ctls["ctl-a"], ctls["ctl-b"]
    await a.start()
    await until(lambda: a.is_active, 10, "ctl-a active")
    await b.start()
    await until(lambda: b.election is not None and b.election.role is Role.STANDBY, 10,
                "ctl-b standby")
    addr = {node: c._of_server.addresses[0] for node, c in ctls.items()}
    switches: dict[str, dict[str, TimedSwitch]] = {}
    tasks: list[asyncio.Task[None]] = []
    try:
        # In batches: a few hundred handshakes and flow dumps at once would keep this one loop
        # (both controllers' and all switches') busy past the 1 s heartbeat timeout, and the
        # standby would take over during the set-up.
        for first in range(0, n_switches, SETUP_BATCH):
            batch = names[first:first + SETUP_BATCH]
            for name in batch:
                flows = {k: FlowEntry(e.cookie, e.seq) for k, e in table.items()}
                pair = {node: TimedSwitch(datapath_id_for(name), flows=flows) for node in ctls}
                switches[name] = pair  # one table, a connection to each controller
                for node, sw in pair.items():
                    tasks.append(asyncio.create_task(sw.connect(addr[node])))
            await until(lambda batch=batch: all(  # type: ignore[misc]
                c.switches[n].openflow_ready and switches[n]["ctl-a"].dumped_at
                for c in ctls.values() for n in batch),
                SETTLE_TIMEOUT_S, "a batch of switches connected and taken by ctl-a")
        if not (a.is_active and b.election is not None and b.election.role is Role.STANDBY
                and b.election.term == 1):
            raise AssertionError("the election moved during the set-up: nothing to measure")
        gc.collect()
        rss_ctl = rss_mb() - rss0
        # The switches' tables would be in other machines, not in the controller's heap: keep
        # the cyclic GC from walking them (and the set-up's objects) during the takeover.
        gc.freeze()
        for pair in switches.values():  # only what the new active does counts from here
            pair["ctl-b"].master_at = pair["ctl-b"].dumped_at = None
        cpu0, t0, wall0 = time.process_time(), time.monotonic(), time.time()
        await a.stop()  # the active dies: tasks cancelled, sockets closed
        await until(lambda: b.is_active, 30, "ctl-b active")
        assert b.election is not None and b.election.took_over_at is not None
        t_active = t0 + (b.election.took_over_at - wall0)
        term = b.election.term
        news = [p["ctl-b"] for p in switches.values()]
        await until(lambda: all(s.master_at is not None for s in news), SETTLE_TIMEOUT_S,
                    "every switch has ctl-b as MASTER")
        await until(lambda: all(s.dumped_at is not None for s in news), SETTLE_TIMEOUT_S,
                    "every switch re-read by ctl-b")
        cpu = time.process_time() - cpu0
        # The switches note their own times: the polling above only waits for them.
        t_master = max(s.master_at for s in news if s.master_at is not None)
        t_dump = max(s.dumped_at for s in news if s.dumped_at is not None)
        if any(s.master_generation != term for s in news):
            raise AssertionError("a switch accepted MASTER with another generation id")
        per_switch = [s.dumped_at - t0 for s in news if s.dumped_at is not None]
        return {
            "switches": n_switches, "flows_per_switch": n_flows,
            "active_s": t_active - t0, "all_master_s": t_master - t0,
            "all_resynced_s": t_dump - t0,
            "resynced_p50_s": percentile(per_switch, 50),
            "resynced_p95_s": percentile(per_switch, 95),
            "cpu_s": cpu, "controllers_rss_mb": rss_ctl,
        }
    finally:
        gc.unfreeze()
        await b.stop()
        await a.stop()  # stopping twice is harmless: nothing is left to cancel or close
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def verdict(results: list[dict[str, float]]) -> tuple[bool, str]:
    """Met only if, in every run, the largest size is under the goal and the time per switch
    (from the standby becoming active to the last re-read) does not grow with size: largest ÷
    smallest ≤ 1.5 (slack for noise on shared cores)."""
    met, notes = True, []
    for run in sorted({int(r["run"]) for r in results}):
        rs = [r for r in results if r["run"] == run]
        big = max(rs, key=lambda r: r["switches"])
        small = min(rs, key=lambda r: r["switches"])
        per = [(r["all_resynced_s"] - r["active_s"]) / r["switches"] for r in (small, big)]
        growth = per[1] / per[0] if per[0] > 0 else float("inf")
        cpu = (big["cpu_s"] / big["switches"]) / (small["cpu_s"] / small["switches"])
        met = met and big["all_resynced_s"] < GOAL_S and (big is small or growth <= 1.5)
        notes.append(f"run {run}: {big['switches']:,} switches in {big['all_resynced_s']:.2f} s,"
                     f" time per switch x{growth:.2f} and CPU per switch x{cpu:.2f} from "
                     f"{small['switches']:,} to {big['switches']:,}")
    return met, "; ".join(notes)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--flows", type=int, default=FLOWS_PER_SWITCH, help="flows per switch")
    ap.add_argument("--smoke", action="store_true",
                    help=f"{SMOKE_SIZE} switches, 20 flows each, one run, no write")
    ap.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    sizes = [SMOKE_SIZE] if args.smoke else [int(s) for s in args.sizes.split(",")]
    n_flows = 20 if args.smoke else args.flows
    runs = 1 if args.smoke else args.runs
    load0 = load_note() if not args.smoke else ""
    results = []
    for run in range(1, runs + 1):
        for n in sizes:
            # A bound on the whole run: a stop that never finishes must fail, not hang.
            r = asyncio.run(asyncio.wait_for(takeover(n, n_flows), 4 * SETTLE_TIMEOUT_S))
            r["run"] = run
            print(json.dumps(r), flush=True)
            results.append(r)
            gc.collect()
    met, why = verdict(results)
    print(f"verdict: {'met' if met else 'NOT met'} ({why})")
    if not (args.smoke or args.no_write):
        write(results, met, why, load0, load_note())
    return {"results": results, "met": met, "why": why}


def write(results: list[dict[str, float]], met: bool, why: str, load0: str, load1: str) -> None:
    base = results[0]
    rows = ["| run | switches | standby active, s | all MASTER, s | all re-read, s | per switch "
            "re-read p50 / p95, s | CPU s | ÷ smallest (re-read time) | controllers' RSS, MB |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        first = next(x for x in results if x["run"] == r["run"])
        rows.append(
            f"| {r['run']:.0f} | {r['switches']:,} | {r['active_s']:.3f} | "
            f"{r['all_master_s']:.3f} | "
            f"{r['all_resynced_s']:.3f} | {r['resynced_p50_s']:.3f} / {r['resynced_p95_s']:.3f}"
            f" | {r['cpu_s']:.2f} | {r['all_resynced_s'] / first['all_resynced_s']:.2f} "
            f"(size x{r['switches'] / first['switches']:.0f}) | {r['controllers_rss_mb']:,.0f} |")
    body = f"""
Two real controllers (`controller.runtime.Controller`: election with TCP heartbeats, OpenFlow
server, channels, reconcilers, takeover code) in one process over an in-memory store with etcd's
term semantics; {max(r['switches'] for r in results):,} simulated switches at most
(`FakeSwitch`, one TCP OpenFlow connection to each controller, one shared flow table of
{base['flows_per_switch']:,} flows per switch: the median per hypervisor at compiler scale).
The active is stopped (tasks cancelled, sockets closed, as for a killed process); times are from
that moment: the standby active (it sees the heartbeat connection close; a hung active would add
the 1 s heartbeat timeout), every switch MASTER with the new term as generation id, every switch
re-read by the new active (its flow dump answered). The switches' side (2,000 connections at the
largest size) runs on the same event loop and cores as the controllers, so the times are an
upper bound. Controllers' RSS = growth of the process while both controllers start and take
their switches (the fake switches' tables are allocated before); it means something in run 1
only, as later runs reuse the memory freed by earlier ones. Hypervisors have no OVSDB
endpoint here, so no flow is programmed after the re-read (the difference is empty: the new
active wants what the old one installed). Load: {load0} at the start, {load1} at the end
(2 shared cores).

{chr(10).join(rows)}

**Goal: every switch MASTER and re-read within {GOAL_S:g} s at 1,000 switches, cost growing at
most linearly, in each of the {max(int(r["run"]) for r in results)} runs:
{"met" if met else "NOT met"}** ({why}).
"""
    write_section("takeover_scale", "Takeover at scale (simulated switches)", body)


if __name__ == "__main__":
    main()
