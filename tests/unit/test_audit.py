"""The audit trail through the real app (TestClient): change rows committed with their change,
their answers, write requests that committed nothing, coalesced refusals, tenant filtering,
retention, stores."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from hypetunnel.api.app import create_app
from hypetunnel.api.audit_trail import AuditTrail, Retention
from hypetunnel.api.guards import Guards
from hypetunnel.controller.service import FabricService
from hypetunnel.store.audit import (
    CURRENT,
    KINDS,
    AuditRow,
    AuditStore,
    PendingAudit,
    row_key,
    tenant_of_keys,
)
from hypetunnel.store.base import StaleRevision, Store
from hypetunnel.store.etcd import EtcdStore, prefix_end
from hypetunnel.store.memory import MemoryStore
from hypetunnel.store.sqlite import SqliteStore
from tests.unit.auth_helpers import authorized, bearer, mint, separate_tokens

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "three-hypervisors.yaml"
API = "/api/v1"


def example() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return doc


UNKNOWN_TOKEN = "ht.nosuch." + "A" * 43  # well-formed, but no such token: a 401 "unknown"
# The callers of these tests: token name -> (role, tenant). Minted through the app's own
# registry (not through the API: no audit rows of their own), the tenants' once they exist.
CALLERS: dict[str, tuple[str, str | None]] = {
    "alice": ("admin", None),
    "tom": ("tenant-admin", "acme"),
    "gus": ("tenant-admin", "globex"),
    "rita": ("tenant-reader", "acme"),
}


class Ctx:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.service = FabricService(store)
        # The refusal window closes only when a test says so (close_window): a window
        # of 10 s could close in the middle of a test's requests on a loaded machine.
        self.app = create_app(self.service, guards=Guards(node="ctl-test", refusal_window=3600))
        self.client = TestClient(self.app)
        self.trail: AuditTrail = self.app.state.audit
        self.tokens = {"alice": mint(self.app, "alice")}

    def mint_tenant_tokens(self) -> None:
        self.tokens.update({name: mint(self.app, name, role, tenant)
                            for name, (role, tenant) in CALLERS.items() if tenant is not None})

    def as_(self, name: str) -> dict[str, str]:
        """The headers of a request made with the token named `name` (CALLERS)."""
        return bearer(self.tokens[name])

    def admin(self) -> dict[str, str]:
        return self.as_("alice")

    def tenant_admin(self, tenant: str) -> dict[str, str]:
        return self.as_({"acme": "tom", "globex": "gus"}[tenant])

    def entries(self, headers: dict[str, str] | None = None, **query: Any) -> list[Any]:
        assert self.trail.flush()
        r = self.client.get(f"{API}/audit", params=query, headers=headers or self.admin())
        assert r.status_code == 200, r.text
        entries: list[Any] = r.json()
        return entries


@pytest.fixture(params=["memory", "sqlite"])
def ctx(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ctx]:
    store: Store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "s.db")
    c = Ctx(store)
    try:
        with c.client:
            yield c
    finally:
        store.close()


@pytest.fixture
def loaded(ctx: Ctx) -> Ctx:
    r = ctx.client.post(f"{API}/apply", json={"intent": example()}, headers=ctx.admin())
    assert r.status_code == 200, r.text
    ctx.mint_tenant_tokens()
    return ctx


def test_a_write_leaves_a_change_row_with_who_what_result_and_where(loaded: Ctx) -> None:
    r = loaded.client.delete(f"{API}/tenants/acme/vms/web1", headers=loaded.tenant_admin("acme"))
    assert r.status_code == 200, r.text
    newest, applied = loaded.entries()[:2]
    assert newest["kind"] == "change"
    assert (newest["who"], newest["role"], newest["tenant"]) == ("tom", "tenant-admin", "acme")
    assert newest["method"] == "DELETE"
    assert newest["route"] == "/api/v1/tenants/{tenant}/vms/{vm}"
    assert newest["params"] == {"tenant": "acme", "vm": "web1"}
    assert newest["keys"] == {"put": [], "delete": ["vm/acme/web1"], "count": 1}
    assert newest["status"] == 200 and newest["revision"] == r.json()["revision"]
    assert newest["plan"]["removed"] == ["vm acme/web1"]
    assert newest["plan"]["counts"] == {"added": 0, "changed": 0, "removed": 1}
    assert newest["node"] == "ctl-test" and newest["client"] == "testclient"
    assert applied["route"] == "/api/v1/apply" and applied["who"] == "alice"
    assert applied["tenant"] is None and applied["plan"]["counts"]["added"] > 10


def test_audit_rows_never_show_in_the_intent_nor_move_the_revision(loaded: Ctx) -> None:
    before = loaded.store.load()
    loaded.client.post(f"{API}/tenants", json={"name": "bad_name"}, headers=loaded.admin())  # 422
    loaded.client.delete(f"{API}/tenants/acme", headers=bearer(UNKNOWN_TOKEN))
    loaded.trail.close_window()
    assert len(loaded.entries()) == 3  # apply, the bad request, the refusal
    assert loaded.store.load() == before
    assert all(not k.startswith(KINDS) for k in before.items)


def test_a_write_that_commits_nothing_is_a_request_row_with_its_errors(loaded: Ctx) -> None:
    r = loaded.client.post(f"{API}/tenants/acme/vms", json={"name": "web9", "network": "nope"},
                           headers=loaded.admin())
    assert r.status_code == 422
    dry = loaded.client.post(f"{API}/apply", json={"intent": {}, "dry_run": True},
                             headers=loaded.admin())
    assert dry.status_code == 200
    dry_row, bad = loaded.entries()[:2]
    assert bad["kind"] == "request" and bad["status"] == 422
    assert bad["errors"] and "network" in bad["errors"][0]
    assert dry_row["kind"] == "request" and dry_row["plan"]["applied"] is False
    assert dry_row["plan"]["counts"]["removed"] > 10  # what it would have removed


def test_refusals_are_recorded_with_their_reason_and_coalesced(loaded: Ctx) -> None:
    for _ in range(300):
        r = loaded.client.delete(f"{API}/tenants/acme", headers=bearer(UNKNOWN_TOKEN))
        assert r.status_code == 401
    assert loaded.client.delete(f"{API}/tenants/acme").status_code == 401  # no token at all
    r = loaded.client.post(f"{API}/tenants/acme/vms", json={"name": "x1", "network": "front"},
                           headers=loaded.as_("rita"))
    assert r.status_code == 403  # a tenant-reader may not write: the real policy said so
    loaded.trail.close_window()
    refusals = [e for e in loaded.entries() if e["kind"] == "refusal"]
    assert len(refusals) == 3  # 300 unknown tokens from one client on one route: one row
    forbidden, missing, unknown = refusals
    assert (unknown["status"], unknown["who"], unknown["auth_failure"]) == (401, "anonymous",
                                                                          "unknown")
    assert unknown["role"] is None
    assert unknown["count"] == 300 and unknown["route"] == "/api/v1/tenants/{tenant}"
    assert (missing["status"], missing["auth_failure"], missing["count"]) == (401, "missing", 1)
    # A 403 is recorded under the real token's name and role (its principal was set).
    assert (forbidden["status"], forbidden["who"], forbidden["role"]) == (403, "rita",
                                                                         "tenant-reader")
    assert forbidden["tenant"] == "acme" and "auth_failure" not in forbidden
    assert forbidden["route"] == "/api/v1/tenants/{tenant}/vms"


def test_a_refused_token_of_each_kind_is_recorded_with_its_reason(
        loaded: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = loaded.app.state.tokens
    expired = tokens.create("stale", "operator", None, 1)[1]
    revoked = tokens.create("fired", "operator")[1]
    tokens.revoke("fired")
    later = time.time() + 3600
    monkeypatch.setattr(tokens, "clock", lambda: later)  # "stale" lived for one second
    sent = {"missing": {}, "malformed": {"Authorization": "Bearer not-a-token"},
            "unknown": bearer(UNKNOWN_TOKEN), "expired": bearer(expired),
            "revoked": bearer(revoked)}
    for headers in sent.values():
        assert loaded.client.delete(f"{API}/tenants/globex", headers=headers).status_code == 401
    loaded.trail.close_window()
    got = {e["auth_failure"]: e for e in loaded.entries() if e["kind"] == "refusal"}
    assert set(got) == set(sent)
    assert all((e["status"], e["who"], e["method"], e["route"]) ==
               (401, "anonymous", "DELETE", "/api/v1/tenants/{tenant}") for e in got.values())


def test_many_kinds_of_refusal_in_one_window_are_bounded(loaded: Ctx) -> None:
    groups = loaded.trail.refusal_groups
    for i in range(groups * 5):  # each from another address: another group
        caller = TestClient(loaded.app, client=(f"192.0.2.{i + 1}", 50000))
        for path in (f"{API}/tenants/t{i}", f"{API}/tenants/t{i}/vms/v{i}"):
            assert caller.delete(path, headers=bearer(UNKNOWN_TOKEN)).status_code == 401
    loaded.trail.close_window()
    refusals = [e for e in loaded.entries(limit=1000) if e["kind"] == "refusal"]
    assert len(refusals) == groups + 1
    assert sum(e["count"] for e in refusals) == groups * 10
    assert any(e.get("overflow") for e in refusals)


def test_a_tenant_sees_only_its_own_tenants_entries(loaded: Ctx) -> None:
    loaded.client.delete(f"{API}/tenants/acme/vms/web1", headers=loaded.tenant_admin("acme"))
    loaded.client.delete(f"{API}/tenants/globex/vms/web1", headers=loaded.tenant_admin("globex"))
    acme = loaded.entries(loaded.tenant_admin("acme"))
    assert [e["params"] for e in acme] == [{"tenant": "acme", "vm": "web1"}]
    assert "node" not in acme[0] and "client" not in acme[0]  # provider facts stay hidden
    assert loaded.entries(loaded.tenant_admin("acme"), tenant="globex") == []
    assert [e["who"] for e in loaded.entries(loaded.admin(), tenant="globex")] == ["gus"]
    assert len(loaded.entries(loaded.admin())) == 3  # the provider sees all, the apply included


def test_since_and_limit_filter_and_bad_queries_are_422(loaded: Ctx) -> None:
    loaded.client.delete(f"{API}/tenants/acme/vms/web1", headers=loaded.admin())
    assert len(loaded.entries(limit=1)) == 1
    assert len(loaded.entries(since=3600)) == 2
    future = loaded.client.get(f"{API}/audit", params={"since": 0.000001}, headers=loaded.admin())
    assert future.status_code == 200
    for bad in ({"limit": 0}, {"limit": 5000}, {"since": -1}, {"tenant": "Bad!" * 100}):
        r = loaded.client.get(f"{API}/audit", params=bad, headers=loaded.admin())
        assert r.status_code == 422, bad
        assert len(r.text) < 600


# -- the store's half -----------------------------------------------------------------------------
@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    s = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "s.db")
    try:
        yield s
    finally:
        s.close()


def bound(pending: PendingAudit) -> Any:
    class Bound:
        def __enter__(self) -> None:
            self.token = CURRENT.set(pending)

        def __exit__(self, *exc: object) -> None:
            CURRENT.reset(self.token)

    return Bound()


def test_every_store_offers_the_audit_log(store: Any) -> None:
    assert isinstance(store, AuditStore)


def test_a_change_row_commits_with_its_change_and_only_then(store: Any) -> None:
    pending = PendingAudit(lambda: {"who": "alice", "tenant": "acme"})
    with bound(pending):
        rev = store.commit({"tenant/acme": {"name": "acme"}}, [])
        with pytest.raises(StaleRevision):
            store.commit({"tenant/b": {"name": "b"}}, [], expect_revision=rev - 1)
    [row] = pending.committed_rows()
    assert store.audit_range(0, None, 10) == [row.doc]
    assert row.doc["revision"] == rev and row.doc["keys"]["put"] == ["tenant/acme"]
    assert store.revision() == rev and set(store.load().items) == {"tenant/acme"}


def test_no_change_commits_without_its_row(store: Any) -> None:
    """The row is in the change's transaction; if it cannot be written, neither is the change
    (here the request's description fails to encode)."""
    pending = PendingAudit(lambda: {"who": object()})
    with bound(pending), pytest.raises(TypeError):
        store.commit({"tenant/acme": {"name": "acme"}}, [])
    assert store.revision() == 0 and store.load().items == {}
    assert store.audit_range(0, None, 10) == []


def test_sqlite_rows_survive_a_reopen(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path / "s.db")
    with bound(PendingAudit(lambda: {"who": "alice"})):
        first.commit({"tenant/acme": {"name": "acme"}}, [])
    first.close()
    again = SqliteStore(tmp_path / "s.db")
    try:
        [row] = again.audit_range(0, None, 10)
        assert row["who"] == "alice" and row["revision"] == 1
    finally:
        again.close()


def test_prune_keeps_the_newest_of_each_kind_apart(store: Any) -> None:
    rows = [AuditRow(row_key("refusal", 1000 + i), {"time": 1000 + i, "n": i}) for i in range(30)]
    rows += [AuditRow(row_key("change", 900 + i), {"time": 900 + i, "n": i}) for i in range(5)]
    store.audit_put(rows)
    trail = AuditTrail(store, "n", Retention(change=10, request=10, refusal=10))
    trail.prune()
    kept = store.audit_range(0, None, 1000)
    assert sorted(r["n"] for r in kept if r["time"] >= 1000) == list(range(20, 30))
    assert len([r for r in kept if r["time"] < 1000]) == 5  # refusals never prune changes


def test_a_full_queue_drops_and_counts_rather_than_block() -> None:
    class Slow(MemoryStore):
        def audit_put(self, rows: Any) -> None:
            raise OSError("disk gone")

    trail = AuditTrail(Slow(), "n", queue_size=2)
    for _ in range(50):
        trail.put([AuditRow(row_key("request", 1), {"time": 1})])  # never blocks
    assert trail.flush(10)
    assert trail._dropped == 50  # every row is either written or counted as lost


def test_large_values_are_clipped_in_rows(loaded: Ctx) -> None:
    huge = "a" * 5000
    loaded.client.post(f"{API}/tenants", json={"name": "ok1", "networks": [
        {"name": "n", "cidr": huge}]}, headers=loaded.admin())
    [row] = loaded.entries()[:1]
    assert len(json.dumps(row)) < 2000


def test_a_change_within_one_tenant_is_that_tenants_however_it_was_made() -> None:
    assert tenant_of_keys(["vm/acme/web1", "network/acme/front", "move/acme/web1/000001"]) \
        == "acme"
    assert tenant_of_keys(["vm/acme/web1", "vm/globex/web1"]) is None
    assert tenant_of_keys(["tenant/acme", "fabric"]) is None
    assert tenant_of_keys(["hypervisor/hv1"]) is None


def test_an_admins_apply_touching_one_tenant_is_visible_to_it(loaded: Ctx) -> None:
    doc = example()
    doc["tenants"][0]["vms"] = doc["tenants"][0]["vms"][1:]
    assert loaded.client.post(f"{API}/apply", json={"intent": doc},
                              headers=loaded.admin()).status_code == 200
    [row] = loaded.entries(loaded.tenant_admin(doc["tenants"][0]["name"]))
    assert row["route"] == "/api/v1/apply" and row["who"] == "alice"


def test_the_etcd_audit_prefix_is_outside_what_load_and_the_watch_read() -> None:
    for prefix in ("/hypetunnel/", "/ht-test-1-abc/"):
        store = EtcdStore(["http://127.0.0.1:9"], prefix=prefix)  # connects to nothing
        try:
            start, end = prefix.encode(), prefix_end(prefix)
            assert not start <= store.audit_prefix.encode() < end
        finally:
            store.close()


def test_a_write_that_lands_after_its_503_is_recorded_as_such() -> None:
    import threading

    release = threading.Event()

    class Hung(MemoryStore):
        def commit(self, *args: Any, **kwargs: Any) -> int:
            release.wait(10)
            return super().commit(*args, **kwargs)

    store = Hung()
    app = create_app(FabricService(store), write_timeout=0.2, tokens=separate_tokens())
    trail: AuditTrail = app.state.audit
    with authorized(TestClient(app)) as c:
        r = c.post(f"{API}/tenants", json={"name": "late"})
        assert r.status_code == 503
        release.set()
        deadline = time.monotonic() + 10
        while len(store.audit_range(0, None, 10)) < 2:  # the late change and the 503
            assert time.monotonic() < deadline, "the late change row never appeared"
            time.sleep(0.01)
        assert trail.flush()
        change, refused = store.audit_range(0, None, 10)
    assert (refused["kind"], refused["status"]) == ("request", 503)
    assert change["kind"] == "change" and change["after_response"] is True
    assert "tenant/late" in change["keys"]["put"]


def test_a_hung_audit_read_is_503_and_never_blocks_the_loop() -> None:
    import threading

    release, entered = threading.Event(), threading.Event()

    class Hung(MemoryStore):
        def audit_range(self, *args: Any) -> list[dict[str, Any]]:
            entered.set()
            release.wait(10)
            return []

    app = create_app(FabricService(Hung()), guards=Guards(audit_read_timeout=0.5))
    try:
        with authorized(TestClient(app)) as c:
            answers: dict[str, int] = {}
            reader = threading.Thread(
                target=lambda: answers.update(audit=c.get(f"{API}/audit").status_code))
            reader.start()
            assert entered.wait(10)
            # While the read hangs in its thread, the loop serves everyone else.
            assert c.get(f"{API}/healthz").status_code == 200
            reader.join(10)
            assert answers == {"audit": 503}
    finally:
        release.set()


def test_a_new_tokens_secret_never_reaches_the_audit_log(loaded: Ctx) -> None:
    """POST /tokens answers with the only copy of the secret; its change row records who
    made which token, not the secret (the store keeps only its hash)."""
    r = loaded.client.post(f"{API}/tokens", json={"name": "ops", "role": "operator"},
                           headers=loaded.admin())
    assert r.status_code == 201, r.text
    secret = r.json()["token"].split(".")[2]
    [row] = loaded.entries()[:1]
    assert (row["kind"], row["who"], row["route"]) == ("change", "alice", "/api/v1/tokens")
    assert row["keys"]["put"] == ["token/ops"]
    assert "(secret, not recorded)" in row["answer"] and '"name": "ops"' in row["answer"]
    assert secret not in json.dumps(loaded.store.audit_range(0, None, 1000))
