"""Controller scale: compile a 1,000-hypervisor / 100,000-VM fabric against simulated switches.

No OVS here: each hypervisor's br-int is a SimSwitch that hands out OpenFlow port numbers the way
OVSDB would report them (VM ports when a VM is plugged, tunnel ports when the controller asks for
them). The controller side is the real code: Topology + FabricCompiler + FlowReconciler (its
channel is an in-memory flow table, so no I/O is timed). Measured:

1. full compile: build the topology, plug every VM, create the tunnel ports the compiler asks
   for, recompute everything; CPU/wall time, tracemalloc peak (in a fresh subprocess) and RSS;
   then the first full diff of every switch (what a start or a takeover costs on top).
2. CPU per VM add / remove / move at 1/10 and full scale (same per-hypervisor density), all of
   the controller's work: topology mutation + set_ports of the affected switches + recompute()
   + tunnel reconciliation + the reconciler's diff of every touched switch (apply_slices).
3. flows per hypervisor and per hosted network at both scales.

The verdict holds over every scale and every run: p50, p95 and max of each operation.

Run: PYTHONPATH=src python benchmarks/compiler_scale.py [--runs N] [--quick | --smoke] [--no-write]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import percentile  # noqa: E402

from hypetunnel.compiler.compile import FabricCompiler, clear_caches  # noqa: E402
from hypetunnel.compiler.topology import HypervisorView, NetworkView, Topology, VmView  # noqa: E402
from hypetunnel.compiler.tunnels import TunnelPort  # noqa: E402
from hypetunnel.controller.reconciler import FlowReconciler  # noqa: E402
from hypetunnel.southbound.openflow.fakeswitch import MemoryFlowChannel  # noqa: E402

ENCAPS = ("vxlan", "gre", "geneve")
BUDGET_MS = 5.0


@dataclass(frozen=True)
class Scale:
    name: str
    hypervisors: int
    tenants: int
    networks_per_tenant: int = 5
    vms_per_network: int = 10
    hosts_per_network: tuple[int, int] = (3, 6)
    seed: int = 20240601

    @property
    def networks(self) -> int:
        return self.tenants * self.networks_per_tenant

    @property
    def vms(self) -> int:
        return self.networks * self.vms_per_network


FULL = Scale("full", hypervisors=1000, tenants=2000)
TENTH = Scale("1/10", hypervisors=100, tenants=200)
SMOKE = Scale("smoke", hypervisors=8, tenants=4, networks_per_tenant=3, vms_per_network=4,
              hosts_per_network=(2, 4))
T = TypeVar("T")


def run_now(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the reconciler on a MemoryFlowChannel)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("the coroutine suspended: it needs an event loop")


def underlay_ip(i: int) -> str:
    return f"10.{i // 65025 % 256}.{i // 255 % 255}.{i % 255 + 1}"


def overlay_ip(n: int) -> str:
    # 100.64.0.0/10 (unique per VM, so ARP-responder flows never collide)
    return f"100.{64 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}"


def mac(n: int) -> str:
    return "02:" + ":".join(f"{(n >> s) & 255:02x}" for s in (32, 24, 16, 8, 0))


class SimSwitch:
    """One hypervisor's br-int as OVSDB reports it: port name -> ofport, VM id -> ofport."""

    def __init__(self) -> None:
        self.ports: dict[str, int] = {}
        self.vm_ports: dict[str, int] = {}
        self.tunnels: frozenset[TunnelPort] = frozenset()  # as SwitchObservation.tunnels
        self._next = 1  # ovs-vswitchd hands out increasing ofport numbers

    def add_port(self, name: str) -> int:
        port = self.ports[name] = self._next
        self._next += 1
        return port


@dataclass
class SimFabric:
    """Topology + compiler + simulated switches; the controller's event handling, inline."""

    topology: Topology = field(default_factory=Topology)
    switches: dict[str, SimSwitch] = field(default_factory=dict)
    vm_counter: int = 0
    vm_list: list[str] = field(default_factory=list)  # live VM ids (for random picks)
    vm_index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.compiler = FabricCompiler(self.topology)

    # -- intent side ---------------------------------------------------------------------
    def new_vm(self, vid: str, vni: int) -> VmView:
        n = self.vm_counter
        self.vm_counter += 1
        vm = VmView(vid, vni, mac(n), overlay_ip(n))
        self.topology.set_vm(vm)
        self.vm_index[vid] = len(self.vm_list)
        self.vm_list.append(vid)
        return vm

    def forget_vm(self, vid: str) -> None:
        i = self.vm_index.pop(vid)
        last = self.vm_list.pop()
        if last != vid:
            self.vm_list[i] = last
            self.vm_index[last] = i
        self.topology.remove_vm(vid)

    # -- switch side (what an OVSDB update reports) -----------------------------------------
    def plug(self, vid: str, hv: str, *, report: bool = True) -> None:
        sw = self.switches[hv]
        sw.vm_ports[vid] = sw.add_port("tap-" + vid)
        self.topology.bind(vid, hv)
        if report:
            self.compiler.set_ports(hv, sw.ports, sw.vm_ports)

    def unplug(self, vid: str, hv: str) -> None:
        sw = self.switches[hv]
        del sw.vm_ports[vid]
        del sw.ports["tap-" + vid]
        if self.topology.location.get(vid) == hv:
            self.topology.bind(vid, None)
        self.compiler.set_ports(hv, sw.ports, sw.vm_ports)

    def ensure_tunnels(self, hv: str) -> bool:
        """What OvsdbClient.ensure_tunnels + the following update do: our tunnel ports become
        exactly the desired set, new ones get ofports. Returns True if the switch changed."""
        sw = self.switches[hv]
        wanted = self.compiler.tunnels(hv)
        if wanted == sw.tunnels:  # the controller's check (runtime._reconcile_once)
            return False
        for t in sw.tunnels - wanted:
            del sw.ports[t.name]
        for t in sorted(wanted - sw.tunnels):
            sw.add_port(t.name)
        sw.tunnels = wanted
        self.compiler.set_ports(hv, sw.ports, sw.vm_ports)
        return True

    def converge(self) -> set[str]:
        """recompute(); tunnels for the touched switches; repeat until no port changes."""
        touched: set[str] = set()
        while True:
            now = self.compiler.recompute()
            touched |= now
            changed = [hv for hv in sorted(now) if hv in self.switches and self.ensure_tunnels(hv)]
            if not changed:
                return touched


# -- 1. full compile -----------------------------------------------------------------------------

def build(scale: Scale) -> tuple[SimFabric, dict[str, float]]:
    clear_caches()  # cold, as a fresh controller: not from an earlier run's memos
    rng = random.Random(scale.seed)
    sim = SimFabric()
    topo = sim.topology
    t: dict[str, float] = {}
    c0 = time.process_time()
    hv_names = [f"hv{i:04d}" for i in range(scale.hypervisors)]
    for i, name in enumerate(hv_names):
        topo.set_hypervisor(HypervisorView(name, underlay_ip(i)))
        sim.switches[name] = SimSwitch()
    vni = 10000
    for ti in range(scale.tenants):
        tenant = f"t{ti:04d}"
        encap = rng.choice(ENCAPS)
        for ni in range(scale.networks_per_tenant):
            vni += 1
            topo.set_network(NetworkView(vni, tenant, f"net{ni}", encap))
            hosts = rng.sample(hv_names, rng.randint(*scale.hosts_per_network))
            for k in range(scale.vms_per_network):
                vid = f"{tenant}/n{ni}-vm{k}"
                sim.new_vm(vid, vni)
                sim.plug(vid, hosts[k % len(hosts)], report=False)
    for hv, sw in sim.switches.items():  # first OVSDB snapshot of every switch
        sim.compiler.set_ports(hv, sw.ports, sw.vm_ports)
    c1 = time.process_time()
    t["topology_s"] = c1 - c0
    touched = sim.compiler.recompute()
    c2 = time.process_time()
    t["recompute_1_s"] = c2 - c1
    for hv in sorted(touched):  # the controller creates the tunnel ports it needs
        sim.ensure_tunnels(hv)
    c3 = time.process_time()
    t["tunnels_s"] = c3 - c2
    sim.converge()  # recompute with tunnel ofports known (and any further round)
    c4 = time.process_time()
    t["recompute_2_s"] = c4 - c3
    t["cpu_s"] = c4 - c0
    return sim, t


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed_build(scale: Scale) -> tuple[SimFabric, dict[str, float]]:
    gc.collect()
    rss0 = rss_mb()
    w0 = time.perf_counter()
    sim, t = build(scale)
    t["wall_s"] = time.perf_counter() - w0
    t["rss_delta_mb"] = rss_mb() - rss0
    return sim, t


def memory_build(scale: Scale) -> dict[str, float]:
    """tracemalloc slows allocation ~2x, so its peak is measured in a separate process."""
    tracemalloc.start()
    sim, _ = build(scale)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del sim
    return {"tracemalloc_peak_mb": peak / 2**20, "tracemalloc_current_mb": current / 2**20}


def start_memory_child() -> subprocess.Popen[str]:
    """Traced builds (~2.5 min at full scale) in a fresh process, after the timed runs so they
    do not compete for the CPU. Its output is one JSON line {scale name: memory_build(...)}."""
    return subprocess.Popen(["nice", "-n", "10", sys.executable, __file__, "--memory"],
                            stdout=subprocess.PIPE, text=True)


class GcClock:
    """CPU time spent in the cyclic GC, so its pauses can be told apart from compiler work."""

    def __init__(self) -> None:
        self.total = 0.0
        self._start = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.process_time()
        else:
            self.total += time.process_time() - self._start


GC = GcClock()


# -- 2. incremental ------------------------------------------------------------------------------

@dataclass
class OpStats:
    total_ms: list[float] = field(default_factory=list)  # compile + diff: the budget
    compile_ms: list[float] = field(default_factory=list)  # mutation .. converge
    diff_ms: list[float] = field(default_factory=list)  # reconciler diff of touched switches
    touched: list[int] = field(default_factory=list)
    gc_ms: list[float] = field(default_factory=list)  # GC pauses inside total_ms
    flow_mods: list[int] = field(default_factory=list)  # adds + deletes sent

    def summary(self) -> dict[str, float]:
        tot = self.total_ms
        return {
            "mean_ms": statistics.fmean(tot),
            "p50_ms": percentile(tot, 50),
            "p95_ms": percentile(tot, 95),
            "max_ms": max(tot),
            "compile_mean_ms": statistics.fmean(self.compile_ms),
            "diff_mean_ms": statistics.fmean(self.diff_ms),
            "diff_max_ms": max(self.diff_ms),
            "touched_mean": statistics.fmean(self.touched),
            "gc_mean_ms": statistics.fmean(self.gc_ms),
            "gc_max_ms": max(self.gc_ms),
            "flow_mods_mean": statistics.fmean(self.flow_mods),
            "ops": len(tot),
        }


def run_op(sim: SimFabric, mutate: Callable[[], None], stats: OpStats,
           reconcilers: dict[str, FlowReconciler]) -> None:
    g0 = GC.total
    c0 = time.process_time()
    mutate()
    touched = sim.converge()
    c1 = time.process_time()
    mods = 0
    for hv in touched:
        rec = reconcilers.get(hv)
        if rec is not None:
            d = run_now(rec.apply_slices(sim.compiler.slices(hv)))
            mods += d.added + d.removed
    c2 = time.process_time()
    stats.gc_ms.append((GC.total - g0) * 1e3)
    stats.total_ms.append((c2 - c0) * 1e3)
    stats.compile_ms.append((c1 - c0) * 1e3)
    stats.diff_ms.append((c2 - c1) * 1e3)
    stats.touched.append(len(touched))
    stats.flow_mods.append(mods)


def first_diff(sim: SimFabric) -> tuple[dict[str, FlowReconciler], float]:
    """One reconciler per switch, each switch brought from empty to its desired flows: the
    full diff a start or a takeover does once (cookies are computed here, on first use)."""
    reconcilers = {hv: FlowReconciler(MemoryFlowChannel()) for hv in sim.switches}
    c0 = time.process_time()
    for hv, rec in reconcilers.items():
        run_now(rec.apply_slices(sim.compiler.slices(hv)))
    return reconcilers, time.process_time() - c0


def incremental(sim: SimFabric, scale: Scale, n_ops: int,
                reconcilers: dict[str, FlowReconciler]) -> dict[str, dict[str, float]]:
    rng = random.Random(scale.seed + 1)
    topo = sim.topology
    hv_names = sorted(sim.switches)
    vnis = sorted(topo.networks)
    results: dict[str, dict[str, float]] = {}
    added = 0

    def add() -> None:
        nonlocal added
        vni = rng.choice(vnis)
        hosts = topo.hosts_of(vni)
        hv = rng.choice(hosts) if hosts else rng.choice(hv_names)
        net = topo.networks[vni]
        vid = f"{net.tenant}/add{added}"
        added += 1
        sim.new_vm(vid, vni)  # the intent arrives ...
        sim.plug(vid, hv)  # ... and nova plugs the port: OVSDB reports it

    def remove() -> None:
        vid = rng.choice(sim.vm_list)
        sim.unplug(vid, topo.location[vid])
        sim.forget_vm(vid)

    def move() -> None:
        vid = rng.choice(sim.vm_list)
        old = topo.location[vid]
        new = rng.choice([h for h in rng.sample(hv_names, 2) if h != old])
        sim.unplug(vid, old)  # the source port goes first (live migration ends) ...
        sim.plug(vid, new)  # ... then the destination port is reported

    for name, op in (("add", add), ("remove", remove), ("move", move)):
        stats = OpStats()
        for _ in range(n_ops):
            run_op(sim, op, stats, reconcilers)
        results[name] = stats.summary()
    return results


def verify(sim: SimFabric, reconcilers: dict[str, FlowReconciler]) -> int:
    """After the churn, the incrementally maintained state must equal a compile from scratch
    of the same topology and ports, and every (in-memory) switch must hold exactly the desired
    flows the incremental diffs sent it. Returns the number of switches compared."""
    for hv, rec in reconcilers.items():
        channel = rec.channel
        assert isinstance(channel, MemoryFlowChannel)
        if channel.cookies != {f.cookie for f in sim.compiler.flows(hv)}:
            raise AssertionError(f"{hv}: the switch's flows differ from the desired flows")
    fresh = FabricCompiler(sim.topology)
    for hv, sw in sim.switches.items():
        fresh.set_ports(hv, sw.ports, sw.vm_ports)
    sim.topology.dirty_switches.update(sim.switches)  # the fresh compiler recomputes all
    fresh.recompute()
    for hv, sw in sim.switches.items():
        if fresh.flows(hv) != sim.compiler.flows(hv):
            raise AssertionError(f"{hv}: incremental flows differ from a full compile")
        if fresh.tunnels(hv) != sim.compiler.tunnels(hv) or sw.tunnels != fresh.tunnels(hv):
            raise AssertionError(f"{hv}: incremental tunnels differ from a full compile")
    return len(sim.switches)


# -- 3. flows per hypervisor --------------------------------------------------------------------

def flow_stats(sim: SimFabric) -> dict[str, float]:
    topo, comp = sim.topology, sim.compiler
    counts, per_net, nets, tunnels = [], [], [], []
    for hv in sim.switches:
        n = len(topo.networks_on.get(hv, ()))
        f = comp.flow_count(hv)
        counts.append(f)
        nets.append(n)
        tunnels.append(len(sim.compiler.tunnels(hv)))
        if n:
            per_net.append((f - 2) / n)  # 2 base flows per switch
    counts.sort()
    return {
        "flows_min": counts[0], "flows_median": statistics.median(counts),
        "flows_max": counts[-1], "flows_total": sum(counts),
        "nets_per_hv_median": statistics.median(nets),
        "flows_per_net_median": statistics.median(per_net),
        "flows_per_net_min": min(per_net), "flows_per_net_max": max(per_net),
        "tunnels_per_hv_median": statistics.median(tunnels),
        "corr_flows_nets": _corr(counts_unsorted(sim), nets),
    }


def counts_unsorted(sim: SimFabric) -> list[int]:
    return [sim.compiler.flow_count(hv) for hv in sim.switches]


def _corr(xs: Iterable[float], ys: Iterable[float]) -> float:
    return statistics.correlation(list(xs), list(ys))


# -- driver --------------------------------------------------------------------------------------

OPS = ("add", "remove", "move")
STATS = ("p50_ms", "p95_ms", "max_ms")


def measure(scale: Scale, n_ops: int, *, check: bool = False) -> dict[str, Any]:
    print(f"[{scale.name}] building {scale.hypervisors} hv, {scale.networks} networks, "
          f"{scale.vms} VMs ...", flush=True)
    sim, build_t = timed_build(scale)
    reconcilers, build_t["first_diff_s"] = first_diff(sim)
    print(f"[{scale.name}] build {build_t}", flush=True)
    flows = flow_stats(sim)
    print(f"[{scale.name}] flows {flows}", flush=True)
    inc = incremental(sim, scale, n_ops, reconcilers)
    print(f"[{scale.name}] incremental {json.dumps(inc, indent=1)}", flush=True)
    if check:
        print(f"[{scale.name}] verified {verify(sim, reconcilers)} switches against a full "
              "compile", flush=True)
    del sim, reconcilers
    gc.collect()
    return {"build": build_t, "flows": flows, "incremental": inc}


def verdict(runs: dict[str, list[dict[str, Any]]]) -> tuple[bool, list[str]]:
    """Within budget only if p50, p95 and max of every operation are, at every scale, in every
    run. Returns (met, the figures over budget)."""
    over = [f"{name} run {i + 1} {op} {stat} {r['incremental'][op][stat]:.2f} ms"
            for name, rs in runs.items() for i, r in enumerate(rs)
            for op in OPS for stat in STATS if r["incremental"][op][stat] > BUDGET_MS]
    return not over, over


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--ops", type=int, default=1000, help="operations of each kind")
    ap.add_argument("--runs", type=int, default=1, help="runs of each scale")
    ap.add_argument("--quick", action="store_true", help="1/10 scale only, 200 ops, no write")
    ap.add_argument("--smoke", action="store_true",
                    help=f"smallest size ({SMOKE.hypervisors} hv), 20 ops, checked, no write")
    ap.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = ap.parse_args(argv)
    if args.memory:
        mem = {}
        for scale in (TENTH, FULL):
            mem[scale.name] = memory_build(scale)
            gc.collect()
        print(json.dumps(mem))
        return mem
    if args.smoke or args.quick:
        scale, ops = (SMOKE, 20) if args.smoke else (TENTH, 200)
        runs = {scale.name: [measure(scale, ops, check=True) for _ in range(args.runs)]}
        met, over = verdict(runs)
        print(f"verdict: {'met' if met else 'NOT met'} {over}")
        return {"runs": runs, "met": met, "over": over}
    w0 = time.perf_counter()
    load0 = os.getloadavg()
    runs = {TENTH.name: [], FULL.name: []}
    for _ in range(args.runs):
        runs[TENTH.name].append(measure(TENTH, args.ops, check=True))
        runs[FULL.name].append(measure(FULL, args.ops))
    load1 = os.getloadavg()
    child = start_memory_child()
    try:
        out, _ = child.communicate()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if child.returncode != 0:
        raise SystemExit(f"memory child failed with {child.returncode}")
    mem = json.loads(out.strip().splitlines()[-1])
    print(f"memory {mem}", flush=True)
    wall = time.perf_counter() - w0
    met, over = verdict(runs)
    print(f"total wall {wall:.0f} s; verdict {'met' if met else 'NOT met'} {over}")
    result = {"runs": runs, "memory": mem, "met": met, "over": over}
    if not args.no_write:
        write(runs, mem, args.ops, wall, (load0, load1))
    return result


def _row(label: str, a: object, b: object, ratio: bool = True) -> str:
    def fmt(v: object) -> str:
        return f"{v:,.2f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
    r = ""
    if ratio and isinstance(a, int | float) and isinstance(b, int | float) and a:
        r = f"{b / a:.2f}"
    return f"| {label} | {fmt(a)} | {fmt(b)} | {r} |"


def _worst(rs: list[dict[str, Any]], op: str, stat: str) -> float:
    return float(max(r["incremental"][op][stat] for r in rs))


def write(runs: dict[str, list[dict[str, Any]]], mem: dict[str, Any], n_ops: int, wall: float,
          loads: tuple[tuple[float, ...], tuple[float, ...]]) -> None:
    from _report import write_section

    small_runs, full_runs = runs[TENTH.name], runs[FULL.name]
    small, full = small_runs[-1], full_runs[-1]
    sb, fb = small["build"], full["build"]
    sf, ff = small["flows"], full["flows"]
    si, fi = small["incremental"], full["incremental"]
    sm, fm = mem[TENTH.name], mem[FULL.name]
    n_runs = len(full_runs)
    rows = [
        "| | 1/10 scale | full scale | full ÷ 1/10 |",
        "|---|---:|---:|---:|",
        _row("hypervisors / networks / VMs", f"{TENTH.hypervisors:,} / {TENTH.networks:,} / "
             f"{TENTH.vms:,}", f"{FULL.hypervisors:,} / {FULL.networks:,} / {FULL.vms:,}"),
        _row("**full compile, CPU s**", sb["cpu_s"], fb["cpu_s"]),
        _row("  topology + VM ports", sb["topology_s"], fb["topology_s"]),
        _row("  recompute (no tunnel ports yet)", sb["recompute_1_s"], fb["recompute_1_s"]),
        _row("  tunnel ports created", sb["tunnels_s"], fb["tunnels_s"]),
        _row("  recompute with tunnel ports", sb["recompute_2_s"], fb["recompute_2_s"]),
        _row("full compile, wall s", sb["wall_s"], fb["wall_s"]),
        _row("then first full diff of every switch, CPU s", sb["first_diff_s"],
             fb["first_diff_s"]),
        _row("RSS growth, MB (compile)", sb["rss_delta_mb"], fb["rss_delta_mb"]),
        _row("tracemalloc peak / retained, MB (compile)",
             f"{sm['tracemalloc_peak_mb']:,.0f} / {sm['tracemalloc_current_mb']:,.0f}",
             f"{fm['tracemalloc_peak_mb']:,.0f} / {fm['tracemalloc_current_mb']:,.0f}"),
    ]
    for op in OPS:
        a, b = si[op], fi[op]
        rows.append(_row(f"**VM {op}: p50 / p95 / max CPU ms, worst of {n_runs} run(s)**",
                         " / ".join(f"{_worst(small_runs, op, st):.2f}" for st in STATS),
                         " / ".join(f"{_worst(full_runs, op, st):.2f}" for st in STATS),
                         ratio=False))
        rows.append(_row(f"  VM {op}: mean ms", a["mean_ms"], b["mean_ms"]))
        rows.append(_row(f"  VM {op}: compile / reconciler diff / GC, mean ms",
                         f"{a['compile_mean_ms']:.2f} / {a['diff_mean_ms']:.2f} / "
                         f"{a['gc_mean_ms']:.2f}",
                         f"{b['compile_mean_ms']:.2f} / {b['diff_mean_ms']:.2f} / "
                         f"{b['gc_mean_ms']:.2f}", ratio=False))
        rows.append(_row(f"  VM {op}: reconciler diff, max ms", a["diff_max_ms"],
                         b["diff_max_ms"]))
        rows.append(_row(f"  VM {op}: GC, max ms", a["gc_max_ms"], b["gc_max_ms"]))
        rows.append(_row(f"  VM {op}: switches touched / flow mods sent, mean",
                         f"{a['touched_mean']:.2f} / {a['flow_mods_mean']:.1f}",
                         f"{b['touched_mean']:.2f} / {b['flow_mods_mean']:.1f}", ratio=False))
    rows += [
        _row("flows per hypervisor min / median / max",
             f"{sf['flows_min']:,} / {sf['flows_median']:,.0f} / {sf['flows_max']:,}",
             f"{ff['flows_min']:,} / {ff['flows_median']:,.0f} / {ff['flows_max']:,}"),
        _row("flows per hypervisor, median", float(sf["flows_median"]),
             float(ff["flows_median"])),
        _row("networks per hypervisor, median", float(sf["nets_per_hv_median"]),
             float(ff["nets_per_hv_median"])),
        _row("flows per hosted network, median (min-max)",
             f"{sf['flows_per_net_median']:.1f} ({sf['flows_per_net_min']:.1f}-"
             f"{sf['flows_per_net_max']:.1f})",
             f"{ff['flows_per_net_median']:.1f} ({ff['flows_per_net_min']:.1f}-"
             f"{ff['flows_per_net_max']:.1f})"),
        _row("correlation(flows, networks) across hypervisors", f"{sf['corr_flows_nets']:.4f}",
             f"{ff['corr_flows_nets']:.4f}", ratio=False),
        _row("tunnel ports per hypervisor, median", float(sf["tunnels_per_hv_median"]),
             float(ff["tunnels_per_hv_median"])),
        _row("flows in the fabric", sf["flows_total"], ff["flows_total"]),
    ]
    met, over = verdict(runs)
    compile_cpu = max(r["build"]["cpu_s"] for r in full_runs)
    compile_met = compile_cpu < 15.0 and fm["tracemalloc_peak_mb"] < 600
    body = f"""
Simulated switches (no OVS): every hypervisor's br-int is an in-memory port table that hands out
OpenFlow port numbers as OVSDB would (VM ports when plugged, tunnel ports when the controller asks
for them), and an in-memory flow table (`MemoryFlowChannel`) behind a real `FlowReconciler`. The
controller code is the real one: `Topology` + `FabricCompiler` + `FlowReconciler.apply_slices`.
Fabric: 5 networks per tenant (encapsulation vxlan/gre/geneve at random per tenant), 10 VMs per
network spread over 3-6 random hypervisors, underlay 10.x.y.z, seed {FULL.seed}. The 1/10 scale
has the same per-hypervisor density, so per-switch numbers should match and per-change costs
should not grow.

Per-change cost = `time.process_time` of all of the controller's work: topology mutation (intent
and/or binding) + `set_ports` of the switches whose ports changed + `recompute()` + the
tunnel-port round trip (`tunnels(hv)` compared with the switch, missing ports created,
`set_ports`, `recompute()`) + the reconciler's diff of every touched switch, which reads only the
slices the compiler's change journal reports (`apply_slices`; the flow mods themselves are not
sent anywhere). {n_ops:,} operations of each kind per run, in order: add (new VM on one of its
network's hosts), remove (random VM), move (random VM to a random other hypervisor: often a new
host of that network, so tunnels are created and removed). GC time is included (shown apart,
measured with `gc.callbacks`). A bulk compile pauses the cyclic GC and then freezes what it
built; every incremental recompute collects what is not frozen yet (what was allocated since
the previous one) and freezes the survivors (`compiler/gcpolicy.py`), so no collection walks the
compiled fabric or the flows of earlier changes (before that, full collections walking them were
the 20-300 ms maxima of the 2026-12-01 run). CPU time is per process, so other work on
the shared cores does not count in it; load average {loads[0][0]:.2f} at the start,
{loads[1][0]:.2f} at the end of the timed runs (2 cores shared with other engineers).

{chr(10).join(rows)}

**Goal < {BUDGET_MS:g} ms per VM change (compile + diff), p50, p95 and max of every operation
at both scales in all {n_runs} run(s): {"met" if met else "NOT met"}**{"" if met else
" (over budget: " + "; ".join(over) + ")"}.
**Full compile at 100,000 VMs < 15 s CPU and < 600 MB: {"met" if compile_met else "NOT met"}**
({compile_cpu:.1f} s, worst of {n_runs} run(s), tracemalloc peak {fm["tracemalloc_peak_mb"]:,.0f}
MB; the 2026-12-01 run measured 23.3 s and 795 MB at load 3-5, the 2026-11-23 run 44.9 s and
972 MB). Flows per switch follow the networks it hosts
(≈{ff['flows_per_net_median']:.0f} flows per hosted network, correlation
{ff['corr_flows_nets']:.3f}), not the fabric's VM count. After the churn at 1/10 scale every
switch's flows (as sent by the incremental diffs) and the incrementally maintained flows and
tunnels were checked equal to a compile from scratch. Memory (tracemalloc) is measured in a
separate process because tracing slows allocation. Total benchmark wall time {wall:.0f} s.
"""
    write_section("compiler_scale", "Controller scale (simulated switches)", body)


if __name__ == "__main__":
    main()
