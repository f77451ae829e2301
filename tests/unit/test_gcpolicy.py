"""The compiler keeps what it builds out of the cyclic GC's way, without freezing garbage.

A single VM change must not pay for a collection that walks the whole compiled fabric (that was
the 50-300 ms outliers of benchmarks/compiler_scale.py): after an incremental recompute, what
survives is frozen (gc.freeze), and garbage cycles made before it are collected first.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from benchmarks.compiler_scale import Scale, build
from hypetunnel.compiler import gcpolicy
from hypetunnel.compiler.gcpolicy import settle

TINY = Scale("tiny", hypervisors=4, tenants=2, networks_per_tenant=2, vms_per_network=3,
             hosts_per_network=(2, 3), seed=11)


class Node:
    def __init__(self) -> None:
        self.me = self


def unfrozen_ids() -> set[int]:
    return {id(o) for o in gc.get_objects()}  # every generation but the permanent one


@pytest.fixture
def gc_enabled() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_a_recompute_collects_earlier_cycles_and_freezes_the_flows_it_built(
        gc_enabled: None) -> None:
    sim, _ = build(TINY)
    vni = sorted(sim.topology.networks)[0]
    hv = sim.topology.hosts_of(vni)[0]
    cycle = Node()
    dead = weakref.ref(cycle)
    del cycle
    sim.new_vm("t0000/late", vni)
    sim.plug("t0000/late", hv)
    assert hv in sim.converge()
    assert dead() is None  # collected before the freeze, so not leaked
    built = sim.compiler.slices(hv).slice(vni)
    # Frozen: no collection will walk them again. (Not "the freeze count grew": frozen objects
    # of earlier tests freed by reference counting meanwhile make it shrink.)
    assert built and not {id(f) for f in built} & unfrozen_ids()


def test_settle_leaves_a_disabled_collector_alone(gc_enabled: None) -> None:
    gc.disable()
    cycle = Node()
    dead = weakref.ref(cycle)
    del cycle
    settle()
    assert dead() is not None and id(dead()) in unfrozen_ids()
    gc.enable()
    gc.collect()
    assert dead() is None


def test_a_cycle_frozen_while_alive_is_reclaimed_within_reclaim_every_settles(
        gc_enabled: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gcpolicy, "RECLAIM_EVERY", 3)
    monkeypatch.setattr(gcpolicy, "_settles", 0)
    cycle = Node()  # alive at the freeze: an in-flight request's objects, say
    dead = weakref.ref(cycle)
    settle()
    assert id(cycle) not in unfrozen_ids()
    del cycle
    settle()
    assert dead() is not None  # frozen: no ordinary collection sees it
    settle()  # the third: a full collection over the frozen objects too
    assert dead() is None


def test_a_dict_of_atoms_put_back_among_the_young_is_frozen_tracked_not_walked_again(
        gc_enabled: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # A memo dict whose keys hold no container: a full collection untracks it (CPython's
    # untrack_dicts), and every new key tracks it again. If each settle were a full
    # collection, every change would walk the whole dict and untrack it anew.
    monkeypatch.setattr(gcpolicy, "RECLAIM_EVERY", 2)
    monkeypatch.setattr(gcpolicy, "_settles", 0)
    threshold = gc.get_threshold()
    gc.set_threshold(1_000_000, 10, 10)  # no automatic collection in between
    try:
        memo = {(i, i): i for i in range(1000)}
        settle()
        settle()  # the reclaim: a full collection over everything
        assert not gc.is_tracked(memo)
        memo[tuple([1000, 1000])] = 1000  # a new tuple is tracked: so is the dict again
        assert gc.is_tracked(memo) and id(memo) in unfrozen_ids()
        settle()
        assert gc.is_tracked(memo) and id(memo) not in unfrozen_ids()  # frozen, as it is
    finally:
        gc.set_threshold(*threshold)
