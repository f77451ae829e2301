"""Placement: capacity, spread/pack, drained hypervisors, destinations for moves and drains."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hypetunnel.errors import IntentInvalid, NotFound
from hypetunnel.model.allocate import resolve
from hypetunnel.model.intent import VM, Hypervisor, Intent
from hypetunnel.model.loader import load_intent_file
from hypetunnel.model.placement import (
    Usage,
    check_destination,
    choose_destination,
    evacuate,
    place,
    usage_of,
)
from hypetunnel.model.validate import validate_intent

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [ROOT / "examples" / "three-hypervisors.yaml",
            ROOT / "src" / "hypetunnel" / "examples" / "three-hypervisors.yaml"]


def hv(name: str, vcpus: int | None = None, memory_mb: int | None = None,
       schedulable: bool | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name}
    if vcpus is not None:
        d["capacity"] = {"vcpus": vcpus, "memory_mb": memory_mb}
    if schedulable is not None:
        d["schedulable"] = schedulable
    return d


def vm(name: str, on: str | None = None, vcpus: int = 1, memory_mb: int = 512) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name, "network": "front", "vcpus": vcpus, "memory_mb": memory_mb}
    if on is not None:
        d["hypervisor"] = on
    return d


def intent(hvs: list[dict[str, Any]], vms: list[dict[str, Any]],
           policy: str = "spread") -> Intent:
    return Intent.model_validate({
        "fabric": {"placement": policy},
        "hypervisors": hvs,
        "tenants": [{"name": "acme", "networks": [{"name": "front", "cidr": "10.1.0.0/22"}],
                     "vms": vms}],
    })


def placed(i: Intent) -> dict[str, str]:
    return {v.name: str(v.hypervisor) for t in i.tenants for v in t.vms}


def assert_within_capacity(i: Intent) -> None:
    assert validate_intent(i) == []
    usage = usage_of(i)
    for h in i.hypervisors:
        u = usage.get(h.name, Usage())
        if h.capacity is not None:
            assert u.vcpus <= h.capacity.vcpus and u.memory_mb <= h.capacity.memory_mb, h.name


def errors_of(exc: pytest.ExceptionInfo[IntentInvalid]) -> dict[str, str]:
    return {e.path: e.reason for e in exc.value.errors}


# -- the policy as a pure function ---------------------------------------------------------------
def test_place_spread_and_pack_pick_opposite_ends() -> None:
    hvs = [Hypervisor.model_validate(hv(n, 8, 8192)) for n in ("a", "b", "c")]
    usage = {"a": Usage(4, 4096, 4), "b": Usage(1, 512, 1)}
    small = VM(name="x", network="n")
    assert place(small, hvs, usage, "spread") == "c"  # empty
    assert place(small, hvs, usage, "pack") == "a"  # fullest that still fits
    big = VM(name="y", network="n", vcpus=5, memory_mb=1024)
    assert place(big, hvs, usage, "pack") == "b"  # a has only 4 vCPUs left
    huge = VM(name="z", network="n", vcpus=9)
    assert place(huge, hvs, usage) is None


def test_place_compares_by_share_of_the_scarcer_resource() -> None:
    # big is twice the size of small and twice as used: equal shares, tie broken by VM count.
    hvs = [Hypervisor.model_validate(hv("big", 16, 16384)),
           Hypervisor.model_validate(hv("small", 8, 8192))]
    usage = {"big": Usage(8, 1024, 4), "small": Usage(2, 6144, 1)}  # small is memory-bound
    assert place(VM(name="x", network="n"), hvs, usage, "spread") == "big"
    assert place(VM(name="x", network="n"), hvs, usage, "pack") == "small"


def test_place_never_returns_a_drained_hypervisor() -> None:
    hvs = [Hypervisor.model_validate(hv("a", schedulable=False)),
           Hypervisor.model_validate(hv("b", 1, 512))]
    assert place(VM(name="x", network="n"), hvs, {}) == "b"
    assert place(VM(name="x", network="n"), hvs, {"b": Usage(1, 512, 1)}) is None


# -- resolve: policies ---------------------------------------------------------------------------
def test_spread_evens_out_by_free_capacity() -> None:
    r = resolve(intent([hv("hv1", 8, 8192), hv("hv2", 4, 4096), hv("hv3", 4, 4096)],
                       [vm(f"v{i}") for i in range(8)]))
    assert Counter(placed(r).values()) == {"hv1": 4, "hv2": 2, "hv3": 2}  # proportional
    assert_within_capacity(r)


def test_spread_without_capacities_is_fewest_vms_then_name() -> None:
    r = resolve(intent([hv("hv1"), hv("hv2"), hv("hv3")],
                       [vm("pinned", "hv1")] + [vm(f"v{i}") for i in range(4)]))
    assert placed(r) == {"pinned": "hv1", "v0": "hv2", "v1": "hv3", "v2": "hv1", "v3": "hv2"}


def test_pack_fills_one_hypervisor_before_the_next() -> None:
    r = resolve(intent([hv("hv1", 4, 4096), hv("hv2", 4, 4096), hv("hv3", 4, 4096)],
                       [vm(f"v{i}") for i in range(6)], policy="pack"))
    assert Counter(placed(r).values()) == {"hv1": 4, "hv2": 2}
    assert_within_capacity(r)


def test_pack_prefers_the_partly_used_hypervisor() -> None:
    r = resolve(intent([hv("hv1", 4, 4096), hv("hv2", 4, 4096)],
                       [vm("pinned", "hv2"), vm("new")], policy="pack"))
    assert placed(r)["new"] == "hv2"


# -- capacity is never exceeded ------------------------------------------------------------------
def test_placement_never_exceeds_capacity_and_names_field_and_numbers() -> None:
    i = intent([hv("hv1", 1, 1024), hv("hv2", 2, 1024)],
               [vm("a", vcpus=2, memory_mb=512), vm("b", vcpus=2, memory_mb=1024)])
    with pytest.raises(IntentInvalid) as info:
        resolve(i)
    errors = errors_of(info)
    assert list(errors) == ["tenants[0].vms[1].hypervisor"]
    reason = errors["tenants[0].vms[1].hypervisor"]
    assert "2 vCPUs / 1024 MB" in reason
    assert "hv1 1/1024" in reason and "hv2 0/512" in reason


def test_big_vm_goes_where_it_fits_not_where_the_policy_would_rank_it() -> None:
    r = resolve(intent([hv("hv1", 16, 16384), hv("hv2", 4, 4096)],
                       [vm("a", "hv1", vcpus=14), vm("b", vcpus=4, memory_mb=2048)]))
    assert placed(r)["b"] == "hv2"


def test_explicit_placements_must_fit_too() -> None:
    i = intent([hv("hv1", 2, 2048)],
               [vm("a", "hv1"), vm("b", "hv1", vcpus=2), vm("c", "hv1")])
    errors = {e.path: e.reason for e in validate_intent(i)}
    # a (1) fits; b would make 3 > 2 and is named; c still fits next to a.
    assert list(errors) == ["tenants[0].vms[1].hypervisor"]
    reason = errors["tenants[0].vms[1].hypervisor"]
    assert "acme/b" in reason and "2 vCPUs / 512 MB" in reason
    assert "1 other VM uses 1 vCPUs / 512 MB of its 2 vCPUs / 2048 MB" in reason


def test_a_vm_larger_than_the_whole_hypervisor_says_so() -> None:
    # The old figures were "0/0 of its 16/16384 are taken" on a host that had 3 VMs.
    i = intent([hv("hv1", 16, 16384)], [vm("a", "hv1"), vm("big", "hv1", vcpus=32)])
    reason = {e.path: e.reason for e in validate_intent(i)}["tenants[0].vms[1].hypervisor"]
    assert "no room for 32 vCPUs / 512 MB: it only has 16 vCPUs / 16384 MB in all" in reason


def test_a_new_vm_in_an_earlier_tenant_is_named_not_the_vms_already_there() -> None:
    # Tenants are stored sorted by name: a new VM of tenant "a" comes before the VMs of "b"
    # that already fill hv1, and used to be counted first (so one of b's VMs was blamed).
    net = {"name": "front", "cidr": "10.1.0.0/24"}
    running = Intent.model_validate({"hypervisors": [hv("hv1", 16, 16384)], "tenants": [
        {"name": "a", "networks": [net]},
        {"name": "b", "networks": [net],
         "vms": [vm(f"v{k}", "hv1", vcpus=4, memory_mb=4096) for k in range(3)]}]})
    first = resolve(running)
    new_vm = VM(name="new", network="front", hypervisor="hv1", vcpus=8)
    second = first.model_copy(update={"tenants": [
        first.tenants[0].model_copy(update={"vms": [new_vm]}), first.tenants[1]]})
    errors = {e.path: e.reason for e in validate_intent(second, previous=first)}
    assert list(errors) == ["tenants[0].vms[0].hypervisor"]
    assert errors["tenants[0].vms[0].hypervisor"] == (
        "VM a/new: hypervisor hv1 has no room for 8 vCPUs / 512 MB: 3 other VMs use "
        "12 vCPUs / 12288 MB of its 16 vCPUs / 16384 MB")


def test_a_vm_kept_on_a_hypervisor_whose_capacity_shrank_is_reported_on_capacity() -> None:
    first = resolve(intent([hv("hv1", 4, 4096)], [vm("a"), vm("b")]))
    shrunk = intent([hv("hv1", 1, 4096)], [vm("a"), vm("b")])  # placements kept, not written
    assert validate_intent(shrunk) == []
    with pytest.raises(IntentInvalid) as info:
        resolve(shrunk, first)
    errors = errors_of(info)
    assert list(errors) == ["hypervisors[0].capacity"]
    assert "2 vCPUs / 1024 MB" in errors["hypervisors[0].capacity"]


def test_a_new_vm_written_next_to_kept_ones_is_the_one_named() -> None:
    first = resolve(intent([hv("hv1", 2, 4096)], [vm("a"), vm("b")]))
    second = intent([hv("hv1", 2, 4096)], [vm("new", "hv1"), vm("a"), vm("b")])
    with pytest.raises(IntentInvalid) as info:
        resolve(second, first)
    assert list(errors_of(info)) == ["tenants[0].vms[0].hypervisor"]


def test_a_vm_resized_on_a_drained_full_hypervisor_is_the_one_named() -> None:
    first = resolve(intent([hv("hv1", 2, 4096)], [vm("a"), vm("b")]))
    drained = intent([hv("hv1", 2, 4096, schedulable=False)], [vm("a"), vm("b")])
    assert placed(resolve(drained, first)) == {"a": "hv1", "b": "hv1"}  # staying is fine
    grown = intent([hv("hv1", 2, 4096, schedulable=False)], [vm("a", vcpus=2), vm("b")])
    with pytest.raises(IntentInvalid) as info:
        resolve(grown, first)
    errors = errors_of(info)
    assert list(errors) == ["tenants[0].vms[0].hypervisor"]
    assert "no room for 2 vCPUs" in errors["tenants[0].vms[0].hypervisor"]  # not "drained"


# -- drained hypervisors -------------------------------------------------------------------------
def test_drained_hypervisor_keeps_its_vms_but_gets_no_new_ones() -> None:
    first = resolve(intent([hv("hv1"), hv("hv2")], [vm("a", "hv1"), vm("b", "hv2")]))
    drained = intent([hv("hv1", schedulable=False), hv("hv2")],
                     [vm("a", "hv1"), vm("b", "hv2"), vm("c"), vm("d"), vm("e")])
    r = resolve(drained, first)
    assert placed(r) == {"a": "hv1", "b": "hv2", "c": "hv2", "d": "hv2", "e": "hv2"}


def test_writing_a_vm_onto_a_drained_hypervisor_is_refused() -> None:
    first = resolve(intent([hv("hv1", schedulable=False), hv("hv2")], [vm("a", "hv2")]))
    with pytest.raises(IntentInvalid) as info:
        resolve(intent([hv("hv1"), hv("hv2")], [vm("a", "hv1")]), first)
    assert "drained" in errors_of(info)["tenants[0].vms[0].hypervisor"]


def test_drain_survives_a_reapply_that_omits_it_and_true_undrains() -> None:
    first = resolve(intent([hv("hv1", 4, 4096, schedulable=False), hv("hv2")], []))
    again = resolve(intent([hv("hv1"), hv("hv2")], []), first)
    kept = again.hypervisor("hv1")
    assert kept is not None and kept.schedulable is False
    assert kept.capacity is not None and kept.capacity.vcpus == 4
    undrained = resolve(intent([hv("hv1", schedulable=True), hv("hv2")], []), again)
    assert undrained.hypervisors[0].schedulable is True


def test_no_room_reason_lists_drained_hypervisors() -> None:
    with pytest.raises(IntentInvalid) as info:
        resolve(intent([hv("hv1", schedulable=False)], [vm("a")]))
    assert "hv1 drained" in errors_of(info)["tenants[0].vms[0].hypervisor"]


# -- stability and old files ---------------------------------------------------------------------
def test_reapply_keeps_every_placement_even_when_the_policy_would_differ() -> None:
    hvs = [hv("hv1", 8, 8192), hv("hv2", 8, 8192)]
    first = resolve(intent(hvs, [vm(f"v{i}") for i in range(4)]))
    assert Counter(placed(first).values()) == {"hv1": 2, "hv2": 2}
    second = resolve(intent(hvs, [vm(f"v{i}") for i in range(4)], policy="pack"), first)
    assert placed(second) == placed(first)
    assert second.tenants[0].vms == first.tenants[0].vms


def test_an_intent_without_sizes_or_capacities_still_loads_and_places() -> None:
    old = Intent.model_validate({
        "hypervisors": [{"name": "hv1"}, {"name": "hv2"}],
        "tenants": [{"name": "acme", "networks": [{"name": "front", "cidr": "10.1.0.0/24"}],
                     "vms": [{"name": f"v{i}", "network": "front"} for i in range(40)]}],
    })
    r = resolve(old)
    assert Counter(placed(r).values()) == {"hv1": 20, "hv2": 20}
    assert r.fabric.placement == "spread"
    assert all(h.capacity is None and h.schedulable is None for h in r.hypervisors)
    assert {(v.vcpus, v.memory_mb) for v in r.tenants[0].vms} == {(1, 512)}


@pytest.mark.parametrize("path", EXAMPLES, ids=["examples", "bundled"])
def test_the_examples_load_with_capacities(path: Path) -> None:
    i = load_intent_file(path)
    assert all(h.capacity is not None for h in i.hypervisors)
    assert_within_capacity(resolve(i))


def test_example_copies_are_identical() -> None:
    assert EXAMPLES[0].read_text() == EXAMPLES[1].read_text()


# -- destinations for moves, drains and restarts -------------------------------------------------
def three() -> Intent:
    return resolve(intent([hv("hv1", 4, 4096), hv("hv2", 4, 4096), hv("hv3", 2, 1024)],
                          [vm("a", "hv1"), vm("b", "hv2", vcpus=3), vm("c", "hv3", vcpus=2)]))


def test_choose_destination_excludes_current_and_given_and_drained() -> None:
    i = three()
    # hv3 is full (2/2), so only hv2 (1 vCPU free) can take a.
    assert choose_destination("acme/a", i) == "hv2"
    with pytest.raises(IntentInvalid) as info:
        choose_destination("acme/a", i, exclude={"hv2"})
    [(path, reason)] = errors_of(info).items()
    assert path == "tenants[0].vms[0].hypervisor"
    assert "1 vCPU / 512 MB" in reason and reason.endswith("(free: hv3 0/512)")
    drained = i.model_copy(update={"hypervisors": [
        h.model_copy(update={"schedulable": False}) if h.name == "hv2" else h
        for h in i.hypervisors]})
    with pytest.raises(IntentInvalid):
        choose_destination("acme/a", drained)


def test_choose_destination_counts_the_vm_as_leaving_and_follows_the_policy() -> None:
    i = resolve(intent([hv("hv1", 4, 4096), hv("hv2", 4, 4096), hv("hv3", 4, 4096)],
                       [vm("a", "hv1", vcpus=4), vm("b", "hv2", vcpus=2)]))
    assert choose_destination("acme/b", i) == "hv3"  # spread: the empty one
    packed = i.model_copy(update={"fabric": i.fabric.model_copy(update={"placement": "pack"})})
    assert choose_destination("acme/b", packed) == "hv3"  # hv1 is full
    assert choose_destination("acme/a", packed) == "hv3"  # 4 vCPUs only fit on empty hv3


def test_choose_destination_unknown_vm() -> None:
    with pytest.raises(NotFound) as info:
        choose_destination("acme/nope", three())
    assert str(info.value) == "tenants/acme/vms/nope: not found"


def test_check_destination_reasons() -> None:
    i = three()
    check_destination("acme/a", i, "hv2")  # fits: no error
    cases = {"hv9": "unknown hypervisor", "hv1": "already on hv1", "hv3": "no room"}
    for to, words in cases.items():
        with pytest.raises(IntentInvalid) as info:
            check_destination("acme/a", i, to)
        assert words in errors_of(info)["to"], to
    with pytest.raises(NotFound):
        check_destination("acme/zz", i, "hv2")


def test_evacuate_respects_capacity_counting_earlier_choices() -> None:
    i = resolve(intent([hv("hv1", 8, 8192), hv("hv2", 2, 4096), hv("hv3", 3, 4096)],
                       [vm(f"v{n}", "hv1") for n in range(5)]))
    moves = evacuate(i, "hv1")
    assert sorted(moves) == [f"acme/v{n}" for n in range(5)]
    assert Counter(moves.values()) == {"hv2": 2, "hv3": 3}
    with pytest.raises(IntentInvalid) as info:
        evacuate(i, "hv1", exclude={"hv3"})
    assert len(info.value.errors) == 3  # every VM that fits nowhere is named
