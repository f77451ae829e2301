"""FabricService over a real SQLite file: plan/apply, stability across restarts, bad input."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hypetunnel.controller.service import FabricService
from hypetunnel.errors import Conflict, IntentInvalid, NotFound
from hypetunnel.model.intent import VM, Hypervisor, Intent, Network, Tenant
from hypetunnel.model.loader import load_intent_file, load_intent_text, parse_intent
from hypetunnel.store.base import StoreSnapshot
from hypetunnel.store.memory import MemoryStore
from hypetunnel.store.sqlite import SqliteStore

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "three-hypervisors.yaml"

# Nothing optional is written: every VNI, IP, MAC and hypervisor is the controller's choice.
BARE: dict[str, Any] = {
    "fabric": {"encapsulation": "vxlan", "underlay_mtu": 1500},
    "hypervisors": [{"name": "hv1"}, {"name": "hv2"}, {"name": "hv3"}],
    "tenants": [
        {
            "name": "acme",
            "networks": [{"name": "front", "cidr": "10.1.0.0/24"},
                         {"name": "back", "cidr": "10.2.0.0/24"}],
            "vms": [{"name": "web1", "network": "front"}, {"name": "web2", "network": "front"},
                    {"name": "db1", "network": "back"}],
        },
        {
            "name": "globex",
            "encapsulation": "gre",
            "networks": [{"name": "front", "cidr": "10.1.0.0/24"}],
            "vms": [{"name": "web1", "network": "front"}, {"name": "web2", "network": "front"}],
        },
    ],
}


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Intent, Intent]] = []

    def __call__(self, old: Intent, new: Intent) -> None:
        self.calls.append((old, new))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / f"hypetunnel-{os.getpid()}.db"


@pytest.fixture
def opened(db: Path) -> Iterator[Callable[[], tuple[FabricService, Recorder]]]:
    """Open (or re-open: a controller restart) a service on the same SQLite file."""
    stores: list[SqliteStore] = []

    def open_service() -> tuple[FabricService, Recorder]:
        store = SqliteStore(db)
        stores.append(store)
        rec = Recorder()
        return FabricService(store, on_change=rec), rec

    try:
        yield open_service
    finally:
        for s in stores:
            s.close()


def text(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False)


def assignments(intent: Intent) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t in intent.tenants:
        for n in t.networks:
            out[f"{t.name}/{n.name}"] = n.vni
        for v in t.vms:
            out[f"{t.name}/{v.name}"] = (str(v.ip), v.mac, v.hypervisor)
    return out


# -- stability -------------------------------------------------------------------------------
def test_assignments_are_stable_across_reapply_and_restart(
        opened: Callable[[], tuple[FabricService, Recorder]]) -> None:
    service, rec = opened()
    intent = load_intent_text(text(BARE), "bare.yaml")
    plan = service.apply(intent)
    assert plan.applied and plan.revision == service.revision == 1
    assert len(plan.added) == 3 + 2 + 3 + 5  # hypervisors, tenants, networks, vms
    first = assignments(service.intent)
    assert all(v is not None for v in first.values())
    assert first["acme/web1"][0] == first["globex/web1"][0] == "10.1.0.2"  # same CIDR, same IP
    assert len(rec.calls) == 1

    again = service.apply(load_intent_text(text(BARE), "bare.yaml"))
    assert again.empty and again.applied and again.revision == 1
    assert len(rec.calls) == 1  # nothing changed: nothing to recompile
    assert assignments(service.intent) == first

    restarted, _ = opened()
    assert restarted.revision == 1
    assert restarted.intent == service.intent
    third = restarted.apply(load_intent_text(text(BARE), "bare.yaml"))
    assert third.empty and restarted.revision == 1
    assert assignments(restarted.intent) == first


def test_adding_a_vm_changes_no_other_assignment(
        opened: Callable[[], tuple[FabricService, Recorder]]) -> None:
    service, rec = opened()
    service.apply(parse_intent(BARE))
    before = assignments(service.intent)
    doc = copy.deepcopy(BARE)
    doc["tenants"][0]["vms"].insert(0, {"name": "cache", "network": "front"})
    plan = service.apply(parse_intent(doc))
    assert [(i.kind, i.key) for i in plan.added] == [("vm", "acme/cache")]
    assert plan.changed == [] and plan.removed == []
    after = assignments(service.intent)
    assert {k: v for k, v in after.items() if k != "acme/cache"} == before
    old, new = rec.calls[-1]
    assert assignments(old) == before and assignments(new) == after


def test_dry_run_and_plan_store_nothing(
        opened: Callable[[], tuple[FabricService, Recorder]]) -> None:
    service, rec = opened()
    snap = service.store.load()
    intent = load_intent_file(EXAMPLE)
    preview = service.plan(intent)
    dry = service.apply(intent, dry_run=True)
    assert not dry.applied and not dry.empty and dry.revision == 0
    assert dry.to_dict() == preview.to_dict()
    assert service.store.load() == snap and service.intent == Intent() and rec.calls == []
    real = service.apply(intent)
    assert real.applied and real.added == dry.added and real.revision == 1
    assert service.plan(intent).empty
    assert service.apply(intent, dry_run=True).empty


def test_apply_is_declarative_and_removes_what_is_absent(
        opened: Callable[[], tuple[FabricService, Recorder]]) -> None:
    service, rec = opened()
    service.apply(parse_intent(BARE))
    doc = copy.deepcopy(BARE)
    del doc["tenants"][1]
    plan = service.apply(parse_intent(doc))
    assert [(i.kind, i.key) for i in plan.removed] == [
        ("vm", "globex/web1"), ("vm", "globex/web2"), ("network", "globex/front"),
        ("tenant", "globex")]
    assert not any(k.startswith(("tenant/globex", "network/globex", "vm/globex"))
                   for k in service.store.load().items)
    old, new = rec.calls[-1]
    assert old.tenant("globex") is not None and new.tenant("globex") is None


def test_plan_render_is_terraform_like(
        opened: Callable[[], tuple[FabricService, Recorder]]) -> None:
    service, _ = opened()
    service.apply(parse_intent(BARE))
    doc = copy.deepcopy(BARE)
    doc["tenants"][0]["vms"][0]["ip"] = "10.1.0.50"
    doc["tenants"][0]["vms"].pop(2)
    doc["tenants"][0]["vms"].append({"name": "db2", "network": "back"})
    rendered = service.apply(parse_intent(doc)).render()
    assert "+ vm acme/db2: 10.2.0.2 " in rendered  # db1's address is free again
    assert "~ vm acme/web1: ip 10.1.0.2 -> 10.1.0.50" in rendered
    assert "- vm acme/db1" in rendered
    assert "Plan: 1 to add, 1 to change, 1 to remove." in rendered


# -- bad input --------------------------------------------------------------------------------
def mutate(fn: Callable[[dict[str, Any]], None]) -> str:
    doc = copy.deepcopy(BARE)
    fn(doc)
    return text(doc)


def _vm(doc: dict[str, Any], t: int, v: int) -> dict[str, Any]:
    vm: dict[str, Any] = doc["tenants"][t]["vms"][v]
    return vm


def _same_vni(doc: dict[str, Any]) -> None:
    doc["tenants"][0]["networks"][0]["vni"] = 4000
    doc["tenants"][1]["networks"][0]["vni"] = 4000


def _same_ip(doc: dict[str, Any]) -> None:
    _vm(doc, 0, 0)["ip"] = "10.1.0.20"
    _vm(doc, 0, 1)["ip"] = "10.1.0.20"


BAD: list[tuple[str, str, str, str]] = [
    ("malformed yaml", text(BARE).replace("- name: hv2\n", "- name: [hv2\n"), "",
     "malformed YAML at line"),
    ("unknown key", mutate(lambda d: _vm(d, 0, 1).update(colour="red")),
     "tenants[0].vms[1].colour", "unknown key"),
    ("overlapping networks", mutate(
        lambda d: d["tenants"][0]["networks"][1].update(cidr="10.1.0.128/25")),
     "tenants[0].networks[1].cidr", "overlaps network 'front'"),
    ("ip outside cidr", mutate(lambda d: _vm(d, 0, 2).update(ip="10.1.0.9")),
     "tenants[0].vms[2].ip", "outside the network 10.2.0.0/24"),
    ("duplicate hypervisor", mutate(lambda d: d["hypervisors"].append({"name": "hv2"})),
     "hypervisors[3].name", "duplicate hypervisor name 'hv2'"),
    ("duplicate tenant", mutate(lambda d: d["tenants"][1].update(name="acme")),
     "tenants[1].name", "duplicate tenant name 'acme'"),
    ("duplicate network", mutate(lambda d: d["tenants"][0]["networks"].append(
        {"name": "front", "cidr": "10.9.0.0/24"})),
     "tenants[0].networks[2].name", "duplicate network name 'front'"),
    ("duplicate vm", mutate(lambda d: _vm(d, 1, 1).update(name="web1")),
     "tenants[1].vms[1].name", "duplicate VM name 'web1'"),
    ("unknown hypervisor", mutate(lambda d: _vm(d, 1, 0).update(hypervisor="hv7")),
     "tenants[1].vms[0].hypervisor", "unknown hypervisor 'hv7'"),
    ("unknown network", mutate(lambda d: _vm(d, 1, 0).update(network="back")),
     "tenants[1].vms[0].network", "unknown network 'back' in tenant 'globex'"),
    ("duplicate vni", mutate(_same_vni),
     "tenants[1].networks[0].vni", "VNI 4000 is already used by acme/front"),
    ("duplicate ip", mutate(_same_ip),
     "tenants[0].vms[1].ip", "10.1.0.20 is already used by VM 'web1'"),
    ("bad mac", mutate(lambda d: _vm(d, 0, 0).update(mac="02:00:00:00:00")),
     "tenants[0].vms[0].mac", "must be a MAC address"),
]


@pytest.mark.parametrize(("case", "body", "path", "reason"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_rejected_with_path_and_reason_and_stores_nothing(
        opened: Callable[[], tuple[FabricService, Recorder]],
        case: str, body: str, path: str, reason: str) -> None:
    service, rec = opened()
    service.apply(load_intent_file(EXAMPLE))
    snap: StoreSnapshot = service.store.load()
    current = service.intent

    with pytest.raises(IntentInvalid) as info:
        service.apply(load_intent_text(body, "bad.yaml"))
    err = info.value
    matching = [e for e in err.errors if e.path == path and reason in e.reason]
    assert matching, f"{case}: wanted {path}: {reason}, got {err}"
    assert "bad.yaml: " in str(err)
    assert body.count("\n") > 5 and body != text(BARE)

    # The semantic rules are enforced by the service itself, not only by the file loader.
    try:
        structurally_ok = load_intent_text(body, "bad.yaml", check=False)
    except IntentInvalid:
        structurally_ok = None
    if structurally_ok is not None:
        with pytest.raises(IntentInvalid) as info2:
            service.apply(structurally_ok)
        assert any(e.path == path and reason in e.reason for e in info2.value.errors)

    assert service.store.load() == snap
    assert service.intent == current and service.revision == snap.revision
    assert len(rec.calls) == 1


def test_identical_cidrs_and_ips_in_different_tenants_are_accepted(
        opened: Callable[[], tuple[FabricService, Recorder]]) -> None:
    service, _ = opened()
    doc = copy.deepcopy(BARE)
    _vm(doc, 0, 0).update(ip="10.1.0.10", mac="02:00:00:00:00:10")
    _vm(doc, 1, 0).update(ip="10.1.0.10", mac="02:00:00:00:00:10")
    assert service.apply(parse_intent(doc)).applied


# -- object operations ----------------------------------------------------------------------
@pytest.fixture
def mem() -> FabricService:
    service = FabricService(MemoryStore())
    service.apply(parse_intent(BARE))
    return service


def test_create_and_delete_objects(mem: FabricService) -> None:
    plan = mem.create_tenant(Tenant(name="initech", encapsulation="geneve"))
    assert [(i.kind, i.key) for i in plan.added] == [("tenant", "initech")]
    mem.create_network("initech", Network(name="lan", cidr="10.1.0.0/24"))
    plan = mem.create_vm("initech", VM(name="bob", network="lan"))
    [item] = plan.added
    assert item.key == "initech/bob" and "10.1.0.2" in item.detail and "vni 1003" in item.detail
    t = mem.intent.tenant("initech")
    assert t is not None and t.vms[0].hypervisor == "hv3"  # the least loaded
    assert mem.delete_vm("initech", "bob").removed[0].key == "initech/bob"
    assert mem.delete_network("initech", "lan").removed[0].key == "initech/lan"
    assert mem.delete_tenant("initech").removed[0].key == "initech"
    assert mem.intent.tenant("initech") is None


def test_delete_tenant_cascades(mem: FabricService) -> None:
    plan = mem.delete_tenant("globex")
    assert {(i.kind, i.key) for i in plan.removed} == {
        ("vm", "globex/web1"), ("vm", "globex/web2"), ("network", "globex/front"),
        ("tenant", "globex")}


def test_not_found(mem: FabricService) -> None:
    revision = mem.revision
    with pytest.raises(NotFound) as info:
        mem.delete_vm("acme", "nope")
    assert info.value.errors[0].path == "tenants/acme/vms/nope"  # type: ignore[attr-defined]
    for call in (lambda: mem.delete_tenant("nope"), lambda: mem.delete_network("acme", "x"),
                 lambda: mem.create_vm("nope", VM(name="a", network="front")),
                 lambda: mem.delete_hypervisor("hv9")):
        with pytest.raises(NotFound):
            call()
    assert mem.revision == revision


def test_conflicts(mem: FabricService) -> None:
    revision = mem.revision
    with pytest.raises(Conflict, match="still has VMs: web1, web2"):
        mem.delete_network("acme", "front")
    with pytest.raises(Conflict, match="still hosts VMs"):
        mem.delete_hypervisor("hv1")
    with pytest.raises(Conflict, match="already exists"):
        mem.create_tenant(Tenant(name="acme"))
    with pytest.raises(Conflict, match="already exists"):
        mem.create_vm("acme", VM(name="web1", network="front"))
    assert mem.revision == revision


def test_create_errors_are_relative_to_the_new_object(mem: FabricService) -> None:
    with pytest.raises(IntentInvalid) as info:
        mem.create_vm("acme", VM(name="x", network="front", ip="10.2.0.5", hypervisor="hv9"))
    assert {e.path for e in info.value.errors} == {"ip", "hypervisor"}
    with pytest.raises(IntentInvalid) as info:
        mem.create_network("globex", Network(name="more", cidr="10.1.0.0/16"))
    assert [e.path for e in info.value.errors] == ["cidr"]


def test_upsert_hypervisor_keeps_enlistment_fields(mem: FabricService) -> None:
    mem.upsert_hypervisor(Hypervisor(name="hv1", underlay_ip="172.31.0.11", ovsdb="unix:/x"))
    plan = mem.upsert_hypervisor(Hypervisor(name="hv1"))
    assert plan.empty
    hv = mem.intent.hypervisor("hv1")
    assert hv is not None and str(hv.underlay_ip) == "172.31.0.11" and hv.ovsdb == "unix:/x"
    plan = mem.upsert_hypervisor(Hypervisor(name="hv1", underlay_ip="172.31.0.12"))
    assert [(i.kind, i.key, i.detail) for i in plan.changed] == [
        ("hypervisor", "hv1", "underlay_ip 172.31.0.11 -> 172.31.0.12")]


def test_upsert_hypervisor_with_a_taken_underlay_ip_is_invalid(mem: FabricService) -> None:
    mem.upsert_hypervisor(Hypervisor(name="hv1", underlay_ip="172.31.0.11"))
    with pytest.raises(IntentInvalid) as info:
        mem.upsert_hypervisor(Hypervisor(name="hv4", underlay_ip="172.31.0.11"))
    assert [e.path for e in info.value.errors] == ["underlay_ip"]


def test_stale_revision_conflict_then_reload(
        opened: Callable[[], tuple[FabricService, Recorder]]) -> None:
    a, _ = opened()
    b, _ = opened()
    a.apply(parse_intent(BARE))
    with pytest.raises(Conflict):
        b.create_tenant(Tenant(name="late"))
    # b reloaded what won and can now proceed on top of it.
    assert b.revision == a.revision and b.intent == a.intent
    assert b.create_tenant(Tenant(name="late")).applied
    assert b.store.load().revision == a.revision + 1


def test_a_failing_on_change_does_not_undo_the_commit() -> None:
    def boom(old: Intent, new: Intent) -> None:
        raise RuntimeError("runtime is sad")

    service = FabricService(MemoryStore(), on_change=boom)
    plan = service.apply(parse_intent(BARE))
    assert plan.applied and service.revision == 1
    assert service.store.load().revision == 1


def test_on_change_sees_the_revision_it_was_committed_at() -> None:
    """The runtime reads service.revision inside on_change to know which revision it applies."""
    seen: list[int] = []
    service: FabricService

    def record(old: Intent, new: Intent) -> None:
        seen.append(service.revision)
        assert service.intent is new

    service = FabricService(MemoryStore(), on_change=record)
    service.apply(parse_intent(BARE))
    service.delete_vm("acme", "db1")
    assert seen == [1, 2] == [1, service.revision]
