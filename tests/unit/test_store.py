"""Store implementations (memory, SQLite): atomic conditional commits, persistence, codec."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypetunnel.errors import Conflict
from hypetunnel.model.allocate import resolve
from hypetunnel.model.intent import Intent
from hypetunnel.model.loader import load_intent_file
from hypetunnel.store.base import StaleRevision, Store
from hypetunnel.store.codec import canonical, intent_to_items, item_changes, items_to_intent
from hypetunnel.store.memory import MemoryStore
from hypetunnel.store.sqlite import SqliteStore

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "three-hypervisors.yaml"


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = MemoryStore() if request.param == "memory" else SqliteStore(
        tmp_path / f"store-{os.getpid()}.db")
    try:
        yield s
    finally:
        s.close()


def test_implements_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)


def test_revision_is_the_last_commit(store: Store) -> None:
    assert store.revision() == 0
    store.commit({"a": {"x": 1}}, [])
    store.commit({}, [])  # empty: no new revision
    assert store.revision() == 1 == store.load().revision


def test_the_etcd_store_implements_the_ha_extension() -> None:
    from hypetunnel.store.base import HaStore
    from hypetunnel.store.etcd import EtcdStore

    etcd = EtcdStore(["http://127.0.0.1:9"])
    try:
        assert isinstance(etcd, HaStore) and isinstance(etcd.fenced(3), Store)
    finally:
        etcd.close()
    assert not isinstance(MemoryStore(), HaStore)


def test_an_etcd_commit_has_one_budget_however_many_rounds_it_loses() -> None:
    """A writer that keeps losing the compare-and-swap (someone else always commits first) gives
    up with StoreUnavailable once the operation's budget is spent, not after 50 budgets."""
    import json
    import time

    from hypetunnel.store.base import StoreUnavailable
    from hypetunnel.store.etcd import EtcdStore, _b64, _Gateway

    class AlwaysBehind(_Gateway):
        def __init__(self) -> None:
            super().__init__(["http://etcd.invalid"], timeout=0.3, attempt_timeout=0.1)
            self.revision = 0
            self.rounds = 0

        def _attempt(self, endpoint: str, path: str, body: dict[str, object], timeout: float,
                     problems: list[str]) -> dict[str, object] | None:
            time.sleep(0.02)  # a round trip
            self.rounds += 1
            self.revision += 1  # another writer got there first, again
            meta = [{"key": _b64("/hypetunnel/meta/revision"), "value": _b64(str(self.revision))},
                    {"key": _b64("/hypetunnel/meta/commit"),
                     "value": _b64(json.dumps({"id": "someone-else"}))}]
            return {"succeeded": False, "responses": [{"response_range": {"kvs": meta}}]}

    gateway = AlwaysBehind()
    store = EtcdStore([], _gateway=gateway)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.commit({"a": {"x": 1}}, [])
    elapsed = time.monotonic() - t0
    assert elapsed < 0.3 + 0.1, elapsed  # the budget, plus at most one round in flight
    assert 2 <= gateway.rounds < 50


def test_empty_store(store: Store) -> None:
    snap = store.load()
    assert (snap.revision, snap.items) == (0, {})


def test_commit_puts_and_deletes_atomically_with_one_revision(store: Store) -> None:
    r1 = store.commit({"a": {"x": 1}, "b": {"y": [1, 2]}}, [])
    r2 = store.commit({"c": {"z": "s"}}, ["a"])
    assert (r1, r2) == (1, 2)
    snap = store.load()
    assert snap.revision == 2
    assert snap.items == {"b": {"y": [1, 2]}, "c": {"z": "s"}}


def test_empty_commit_changes_nothing(store: Store) -> None:
    store.commit({"a": {}}, [])
    assert store.commit({}, [], expect_revision=1) == 1
    assert store.load().revision == 1


def test_stale_revision_is_a_conflict_and_writes_nothing(store: Store) -> None:
    store.commit({"a": {"v": 1}}, [])
    with pytest.raises(Conflict) as info:
        store.commit({"a": {"v": 2}, "b": {}}, ["a"], expect_revision=0)
    assert isinstance(info.value, StaleRevision)
    assert info.value.errors[0].path == "revision"
    snap = store.load()
    assert (snap.revision, snap.items) == (1, {"a": {"v": 1}})
    assert store.commit({"a": {"v": 3}}, [], expect_revision=1) == 2


def test_unencodable_value_writes_nothing(store: Store) -> None:
    store.commit({"a": {"v": 1}}, [])
    with pytest.raises(TypeError):
        store.commit({"b": {"ok": 1}, "c": {"bad": object()}}, ["a"])
    snap = store.load()
    assert (snap.revision, snap.items) == (1, {"a": {"v": 1}})


def test_loaded_documents_are_copies(store: Store) -> None:
    doc = {"v": [1]}
    store.commit({"a": doc}, [])
    doc["v"].append(2)
    store.load().items["a"]["v"].append(3)
    assert store.load().items["a"] == {"v": [1]}


def test_sqlite_survives_reopen_and_records_mod_revision(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = SqliteStore(path)
    try:
        s.commit({"a": {"v": 1}, "b": {"v": 1}}, [])
        s.commit({"b": {"v": 2}}, [])
    finally:
        s.close()
    s2 = SqliteStore(path)
    try:
        snap = s2.load()
        assert (snap.revision, snap.items) == (2, {"a": {"v": 1}, "b": {"v": 2}})
        rows = dict(s2._db.execute("SELECT key, mod_revision FROM kv").fetchall())
        assert rows == {"a": 1, "b": 2}
        mode = s2._db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode.lower() == "wal"
    finally:
        s2.close()


def test_two_sqlite_handles_on_one_file_cannot_interleave(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    a, b = SqliteStore(path), SqliteStore(path)
    try:
        base = a.load().revision
        assert a.commit({"x": {"by": "a"}}, [], expect_revision=base) == base + 1
        with pytest.raises(StaleRevision):
            b.commit({"x": {"by": "b"}}, [], expect_revision=base)
        assert b.load().items == {"x": {"by": "a"}}
    finally:
        a.close()
        b.close()


# -- codec ------------------------------------------------------------------------------------
def resolved_example() -> Intent:
    return canonical(resolve(load_intent_file(EXAMPLE)))


def test_codec_round_trip_is_exact() -> None:
    intent = resolved_example()
    items = intent_to_items(intent)
    assert "fabric" in items and "hypervisor/hv1" in items and "tenant/acme" in items
    assert "network/globex/front" in items and "vm/globex/web1" in items
    assert "networks" not in items["tenant/acme"]
    assert items_to_intent(items) == intent


def test_codec_round_trip_through_a_store(store: Store) -> None:
    intent = resolved_example()
    store.commit(intent_to_items(intent), [])
    assert items_to_intent(store.load().items) == intent


def test_empty_items_decode_to_the_empty_intent() -> None:
    assert items_to_intent({}) == Intent()


def test_item_changes_touch_only_what_changed_and_never_foreign_keys() -> None:
    old = intent_to_items(resolved_example())
    old_with_binding = {**old, "binding/acme/web1": {"hypervisor": "hv1"}}
    new_intent = resolved_example()
    tenants = [t.model_copy(update={"vms": [v for v in t.vms if v.name != "web2"]})
               if t.name == "acme" else t for t in new_intent.tenants]
    new = intent_to_items(new_intent.model_copy(update={"tenants": tenants}))
    puts, deletes = item_changes(old_with_binding, new)
    assert puts == {}
    assert deletes == ["vm/acme/web2"]
    assert items_to_intent(old_with_binding) == resolved_example()  # binding ignored


def test_intent_changes_agrees_with_a_full_document_diff() -> None:
    from hypetunnel.store.codec import intent_changes

    old = resolved_example()
    doc = old.model_dump(mode="json")
    doc["fabric"]["underlay_mtu"] = 9000
    doc["hypervisors"].pop()  # hv3 ...
    doc["tenants"][0]["vms"] = [v for v in doc["tenants"][0]["vms"] if v["hypervisor"] != "hv3"]
    doc["tenants"][0]["vms"][0]["ip"] = "10.2.0.99"
    doc["tenants"][1]["encapsulation"] = "geneve"
    doc["tenants"][1]["networks"].append({"name": "extra", "cidr": "10.9.0.0/24", "vni": 9})
    new = canonical(Intent.model_validate(doc))
    expected = item_changes(intent_to_items(old), intent_to_items(new))
    puts, deletes = intent_changes(old, new)
    assert (puts, sorted(deletes)) == (expected[0], sorted(expected[1]))
    assert "tenant/globex" in puts and "fabric" in puts and "hypervisor/hv3" in deletes
    assert intent_changes(old, old) == ({}, [])
    assert list(intent_changes(old, old, put_fabric=True)[0]) == ["fabric"]


def test_side_documents_stay_out_of_the_intent_and_its_revision(store: Store) -> None:
    from hypetunnel.store.side import SideStore

    assert isinstance(store, SideStore)
    store.commit({"fabric": {"v": 1}}, [])
    store.side_commit({"fcaps/alarm/a1": {"id": "a1"}, "fcaps/event/000000000001": {"seq": 1},
                       "other/x": {"y": 2}}, [])
    assert store.revision() == 1 and store.load().items == {"fabric": {"v": 1}}
    assert store.side_load("fcaps/") == {"fcaps/alarm/a1": {"id": "a1"},
                                         "fcaps/event/000000000001": {"seq": 1}}
    store.side_commit({"fcaps/alarm/a1": {"id": "a1", "acked": True}},
                      ["fcaps/event/000000000001", "nosuch"])
    assert store.side_load("fcaps/") == {"fcaps/alarm/a1": {"id": "a1", "acked": True}}
    assert store.revision() == 1
