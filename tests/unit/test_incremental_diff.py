"""The reconciler's incremental diff (apply_slices) sends exactly what the full diff sends.

A small random fabric is churned by random changes (VM add / remove / move, a move's second
location, network and hypervisor changes, network removal); after each change every switch is
reconciled twice, once by a full diff of all its flows and once from the compiler's change
journal, each against its own in-memory switch. Both must send the same batch and end equal to
the desired flows.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

import pytest

from benchmarks.compiler_scale import Scale, SimFabric, build
from hypetunnel.compiler.compile import BASE_SLICE, FabricCompiler, SwitchSlices
from hypetunnel.compiler.flows import Flow, Output, match
from hypetunnel.compiler.topology import HypervisorView, NetworkView, Topology, VmView
from hypetunnel.controller.reconciler import DesiredIndex, FlowReconciler, plan_flows
from hypetunnel.errors import SouthboundError
from hypetunnel.southbound.openflow.fakeswitch import MemoryFlowChannel

T = TypeVar("T")
TINY = Scale("tiny", hypervisors=6, tenants=3, networks_per_tenant=3, vms_per_network=4,
             hosts_per_network=(2, 4), seed=7)
_renumbered = itertools.count()


def now(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the in-memory switch answers at once)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("the coroutine suspended")


class CountingSlices:
    """A SwitchSlices that records what the reconciler read from it."""

    def __init__(self, inner: SwitchSlices) -> None:
        self.inner = inner
        self.read: list[int] = []
        self.full_reads = 0

    @property
    def source(self) -> object:
        return self.inner.source

    @property
    def generation(self) -> int:
        return self.inner.generation

    def changed_since(self, generation: int) -> list[int]:
        return self.inner.changed_since(generation)

    def slice(self, key: int) -> frozenset[Flow]:
        self.read.append(key)
        return self.inner.slice(key)

    def items(self) -> Iterable[tuple[int, frozenset[Flow]]]:
        self.full_reads += 1
        return self.inner.items()


def random_change(sim: SimFabric, rng: random.Random) -> str:
    topo = sim.topology
    hvs = sorted(sim.switches)
    kind = rng.choice(["add", "remove", "move", "move", "second", "encap", "underlay",
                       "drop-network", "drop-hypervisor"])
    if kind == "add" and topo.networks:
        vni = rng.choice(sorted(topo.networks))
        vid = f"{topo.networks[vni].tenant}/x{sim.vm_counter}"
        sim.new_vm(vid, vni)
        sim.plug(vid, rng.choice(hvs))
    elif kind in ("remove", "move", "second") and sim.vm_list:
        vid = rng.choice(sim.vm_list)
        where = topo.location.get(vid)
        if kind == "remove":
            if where is not None:
                sim.unplug(vid, where)
            sim.forget_vm(vid)
        elif kind == "move":
            if where is not None:
                sim.unplug(vid, where)
            sim.plug(vid, rng.choice(hvs))
        else:  # a hot move's make-before-break moment, or its end
            topo.set_secondary(vid, None if vid in topo.secondary else rng.choice(hvs))
    elif kind == "encap" and topo.networks:
        net = topo.networks[rng.choice(sorted(topo.networks))]
        encap = rng.choice([e for e in ("vxlan", "gre", "geneve") if e != net.encapsulation])
        topo.set_network(NetworkView(net.vni, net.tenant, net.name, encap))
    elif kind == "underlay":
        hv = rng.choice(hvs)
        n = next(_renumbered)  # a fresh address each time: two hosts never share one
        topo.set_hypervisor(HypervisorView(hv, f"10.200.{n // 250}.{n % 250 + 1}"))
    elif kind == "drop-network" and len(topo.networks) > 2:
        vni = rng.choice(sorted(topo.networks))
        for vid in [v for v in sim.vm_list if topo.vms[v].vni == vni]:
            where = topo.location.get(vid)
            if where is not None:
                sim.unplug(vid, where)
            sim.forget_vm(vid)
        topo.remove_network(vni)
    elif kind == "drop-hypervisor" and len(topo.hypervisors) > 3:
        topo.remove_hypervisor(rng.choice(sorted(topo.hypervisors)))
    return kind


@pytest.mark.parametrize("seed", range(4))
def test_incremental_diff_equals_full_diff_over_random_changes(seed: int) -> None:
    sim, _ = build(Scale(**{**TINY.__dict__, "seed": seed}))
    comp = sim.compiler
    full = {hv: (FlowReconciler(s := MemoryFlowChannel()), s) for hv in sim.switches}
    inc = {hv: (FlowReconciler(s := MemoryFlowChannel()), s) for hv in sim.switches}
    rng = random.Random(seed)
    for step in range(150):
        kind = random_change(sim, rng) if step else "initial"
        sim.converge()
        for hv in sorted(sim.switches):
            desired = comp.flows(hv)
            f_rec, f_sw = full[hv]
            i_rec, i_sw = inc[hv]
            expected = plan_flows(desired, set(f_sw.cookies), set())
            f_diff = now(f_rec.apply(desired))
            n_batches = len(i_sw.batches)
            i_diff = now(i_rec.apply_slices(comp.slices(hv)))
            where = f"seed {seed} step {step} ({kind}) on {hv}"
            assert i_diff == f_diff == expected.diff, where
            if not f_diff.empty:
                assert i_sw.batches[-1] == f_sw.batches[-1], where
            else:
                assert len(i_sw.batches) == n_batches, where
            assert i_sw.cookies == f_sw.cookies == {f.cookie for f in desired}, where
            assert i_rec.follows(comp.slices(hv)) and i_rec.installed == i_sw.cookies, where


def test_after_the_first_diff_only_changed_slices_are_read() -> None:
    sim, _ = build(TINY)
    hv = max(sim.switches, key=lambda h: len(sim.topology.networks_on.get(h, ())))
    rec = FlowReconciler(MemoryFlowChannel())
    first = CountingSlices(sim.compiler.slices(hv))
    now(rec.apply_slices(first))
    assert first.full_reads == 1
    vni = sorted(sim.topology.networks_on[hv])[0]
    vid = f"{sim.topology.networks[vni].tenant}/new"
    sim.new_vm(vid, vni)
    sim.plug(vid, hv)
    sim.converge()
    view = CountingSlices(sim.compiler.slices(hv))
    diff = now(rec.apply_slices(view))
    assert view.full_reads == 0 and view.read == [vni]
    # New: port security x2, L2, ARP responder; the 2 flood flows that list local ports are
    # replaced (2 adds, 2 deletes).
    assert diff.added == 6 and diff.removed == 2
    again = CountingSlices(sim.compiler.slices(hv))
    assert now(rec.apply_slices(again)).empty and again.read == []


def test_resync_or_a_plain_apply_forces_one_full_diff() -> None:
    sim, _ = build(TINY)
    hv = sorted(sim.switches)[0]
    switch = MemoryFlowChannel()
    rec = FlowReconciler(switch)
    now(rec.apply_slices(sim.compiler.slices(hv)))
    switch.cookies.add(0x1234)  # somebody else's flow appears; only a resync can see it
    now(rec.resync())
    assert not rec.follows(sim.compiler.slices(hv))
    view = CountingSlices(sim.compiler.slices(hv))
    assert now(rec.apply_slices(view)).foreign_removed == 1 and view.full_reads == 1
    now(rec.apply([]))  # the switch now follows another desired set
    view = CountingSlices(sim.compiler.slices(hv))
    assert now(rec.apply_slices(view)).added == len(sim.compiler.flows(hv))
    assert view.full_reads == 1 and switch.cookies == {f.cookie for f in sim.compiler.flows(hv)}


def test_a_failed_batch_is_followed_by_a_full_diff() -> None:
    class Failing(MemoryFlowChannel):
        fail = False

        async def send_flow_batch(self, adds: list[Flow], delete_cookies: Iterable[int],
                                  atomic: bool = True) -> None:
            if self.fail:
                raise SouthboundError("switch went away mid-batch")
            await super().send_flow_batch(adds, delete_cookies, atomic)

    sim, _ = build(TINY)
    hv = sorted(sim.switches)[0]
    switch = Failing()
    rec = FlowReconciler(switch)
    now(rec.apply_slices(sim.compiler.slices(hv)))
    vni = sorted(sim.topology.networks_on[hv])[0]
    sim.new_vm(f"{sim.topology.networks[vni].tenant}/late", vni)
    sim.plug(f"{sim.topology.networks[vni].tenant}/late", hv)
    sim.converge()
    switch.fail = True
    with pytest.raises(SouthboundError):
        now(rec.apply_slices(sim.compiler.slices(hv)))
    switch.fail = False
    view = CountingSlices(sim.compiler.slices(hv))
    now(rec.apply_slices(view))
    assert view.full_reads == 1  # re-read the switch, then diffed everything
    assert switch.cookies == {f.cookie for f in sim.compiler.flows(hv)}


def test_index_keeps_a_flow_that_moves_between_slices_and_refuses_key_clashes() -> None:
    a = Flow(20, 100, match(metadata=1, eth_dst="02:00:00:00:00:01"), (Output(1),))
    b = Flow(20, 100, match(metadata=1, eth_dst="02:00:00:00:00:02"), (Output(2),))
    index = DesiredIndex.of([(1, frozenset({a, b}))])
    assert set(index.refs) == {a.cookie, b.cookie}
    # a moves to slice 2 while b leaves: for the switch only b goes.
    adds, stale = index.update({1: frozenset(), 2: frozenset({a})})
    assert adds == [] and stale == [b.cookie]
    adds, stale = index.update({3: frozenset({a})})  # in two slices now: one more reference
    assert adds == [] and stale == []
    assert index.update({2: frozenset()}) == ([], [])
    assert index.update({3: frozenset()}) == ([], [a.cookie])
    clash = Flow(20, 100, match(metadata=1, eth_dst="02:00:00:00:00:02"), (Output(9),))
    index.update({4: frozenset({b})})
    with pytest.raises(SouthboundError, match="share table=20 priority=100"):
        index.update({5: frozenset({clash})})


def test_journal_reports_each_changed_slice_once_newest_first() -> None:
    topo = Topology()
    comp = FabricCompiler(topo)
    topo.set_hypervisor(HypervisorView("a", "10.0.0.1"))
    topo.set_hypervisor(HypervisorView("b", "10.0.0.2"))
    for vni in (5, 6):
        topo.set_network(NetworkView(vni, "t", f"n{vni}", "vxlan"))
        topo.set_vm(VmView(f"t/v{vni}", vni, f"02:00:00:00:00:0{vni}", f"10.1.0.{vni}"))
        topo.bind(f"t/v{vni}", "a")
    comp.set_ports("a", {"tap5": 1, "tap6": 2}, {"t/v5": 1, "t/v6": 2})
    comp.set_ports("b", {}, {})
    comp.recompute()
    view = comp.slices("a")
    g1 = view.generation
    assert sorted(view.changed_since(0)) == [5, 6]
    assert dict(view.items())[BASE_SLICE] == view.slice(BASE_SLICE)
    topo.set_vm(VmView("t/v5", 5, "02:00:00:00:00:15", "10.1.0.5"))  # new MAC
    comp.recompute()
    assert view.changed_since(g1) == [5] and view.generation == g1 + 1
    comp.set_ports("a", {"tap5": 1, "tap6": 2}, {"t/v5": 1, "t/v6": 2})  # same ports
    comp.recompute()
    assert view.changed_since(g1 + 1) == []
    assert comp.slices("b").changed_since(0) == []  # b hosts nothing
