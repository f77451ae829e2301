"""Token lifecycle through the API: create (shown once, stored as a hash), use, list, expire,
revoke; bad requests name their field and store nothing; a revocation made by the other
controller of a pair holds here as soon as this one's service has seen the commit."""

from __future__ import annotations

import pytest

from hypetunnel.api.tokens import PREFIX, TokenRegistry, hash_secret, parse_duration
from hypetunnel.controller.service import FabricService
from hypetunnel.errors import IntentInvalid
from tests.unit.policy_world import World

P = "/api/v1"


def test_a_created_token_works_is_listed_without_secret_and_stored_as_a_hash() -> None:
    w = World()
    r = w.request("admin", "POST", f"{P}/tokens", json={"name": "ci", "role": "operator",
                                                          "expires_in": 3600})
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert token.startswith("ht.ci.") and r.json()["expires_at"] == w.clock.now + 3600
    assert w.http.get(f"{P}/status", headers={"Authorization": f"Bearer {token}"}).status_code \
        == 200
    doc = w.store.load().items[f"{PREFIX}ci"]
    secret = token.split(".")[2]
    assert doc["sha256"] == hash_secret(secret) and secret not in str(w.store.load().items)
    listed = {t["name"]: t for t in w.request("admin", "GET", f"{P}/tokens").json()}
    assert listed["ci"]["state"] == "valid" and listed["t-revoked"]["state"] == "revoked"
    assert listed["t-expired"]["state"] == "expired"
    assert all("sha256" not in t and "token" not in t for t in listed.values())


def test_expiry_and_revocation_answer_401_saying_why() -> None:
    w = World()
    token = w.mint("short", "operator", expires_in=10)
    assert w.http.get(f"{P}/status", headers={"Authorization": f"Bearer {token}"}).status_code \
        == 200
    w.clock.now += 10
    r = w.http.get(f"{P}/status", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "expired" in r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    ops = w.token["operator"]
    assert w.request("admin", "DELETE", f"{P}/tokens/t-operator").json()["state"] == "revoked"
    r = w.http.get(f"{P}/status", headers={"Authorization": f"Bearer {ops}"})
    assert r.status_code == 401 and "revoked" in r.text


@pytest.mark.parametrize("header", ["", "Bearer", "Basic dXNlcjpwdw==", "Bearer x y",
                                    "Bearer ht.admin", "Bearer ht.t-admin." + "A" * 43])
def test_malformed_or_unknown_tokens_answer_401(header: str) -> None:
    w = World()
    r = w.http.get(f"{P}/tenants", headers={"Authorization": header})
    assert r.status_code == 401, header
    assert r.json()["detail"]["errors"][0]["path"] == "authorization"


def test_a_wrong_secret_for_a_known_name_is_unknown() -> None:
    w = World()
    real = w.token["admin"]
    forged = real[:-1] + ("A" if real[-1] != "A" else "B")
    r = w.http.get(f"{P}/tenants", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401 and "unknown token" in r.text


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "x1", "role": "root"}, "role"),
    ({"name": "x1", "role": "tenant-admin"}, "tenant"),
    ({"name": "x1", "role": "tenant-reader"}, "tenant"),
    ({"name": "x1", "role": "operator", "tenant": "acme"}, "tenant"),
    ({"name": "x1", "role": "tenant-admin", "tenant": "nosuch"}, "tenant"),
    ({"name": "Bad_Name", "role": "admin"}, "name"),
    ({"name": "t-admin", "role": "admin"}, "name"),  # taken
    ({"name": "t-revoked", "role": "admin"}, "name"),  # a revoked token keeps its name
    ({"name": "x1", "role": "admin", "expires_in": 0}, "expires_in"),
    ({"name": "x1", "role": "admin", "expires_in": "30d"}, "expires_in"),
    ({"name": "x1", "role": "admin", "extra": 1}, "extra"),
])
def test_bad_token_requests_name_the_field_and_store_nothing(body: dict[str, object],
                                                              field: str) -> None:
    w = World()
    before = w.store.load()
    r = w.request("admin", "POST", f"{P}/tokens", json=body)
    assert r.status_code in (409, 422), r.text
    assert field in [e["path"] for e in r.json()["detail"]["errors"]], r.text
    assert w.store.load() == before


def test_only_an_admin_manages_tokens() -> None:
    w = World()
    for who in ("operator", "tenant-admin", "tenant-reader"):
        r = w.request(who, "POST", f"{P}/tokens", json={"name": "mine", "role": "admin"})
        assert r.status_code == 403, who
    assert w.request("admin", "DELETE", f"{P}/tokens/nosuch").status_code == 404


def test_a_revocation_by_the_other_controller_holds_once_the_store_is_reloaded() -> None:
    w = World()
    # The other controller of a pair: its own service and registry over the shared store.
    other = TokenRegistry(FabricService(w.store), clock=w.clock)
    other.reload()
    assert w.request("operator", "GET", f"{P}/status").status_code == 200  # ours is fresh
    other.revoke("t-operator")
    assert w.request("operator", "GET", f"{P}/status").status_code == 200  # not seen yet
    w.service.reload()  # what the standby's store watch does on every commit
    assert w.request("operator", "GET", f"{P}/status").status_code == 401


def test_token_keys_stay_out_of_the_intent() -> None:
    w = World()
    before = w.service.intent
    w.service.reload()
    assert w.service.intent == before
    assert "token" not in w.request("admin", "GET", f"{P}/intent").text
    # A whole-fabric apply removes intent objects only: the tokens stay.
    r = w.request("admin", "POST", f"{P}/apply", json={"intent": {}})
    assert r.status_code == 200, r.text
    assert w.request("admin", "GET", f"{P}/tenants").json() == []
    assert any(k.startswith(PREFIX) for k in w.store.load().items)


@pytest.mark.parametrize(("text", "seconds"), [("30d", 30 * 86400), ("12h", 43200),
                                               ("90m", 5400), ("1s", 1)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "d", "0d", "1.5h", "-1d", "30 days", "99999999d"])
def test_bad_durations_name_the_field(text: str) -> None:
    with pytest.raises(IntentInvalid) as info:
        parse_duration(text, "--expires")
    assert info.value.errors[0].path == "--expires"


def test_the_request_state_tells_the_audit_who_asked_or_why_not() -> None:
    w = World()
    seen: list[tuple[object, object]] = []

    @w.app.middleware("http")
    async def record(request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        seen.append((getattr(request.state, "principal", None),
                     getattr(request.state, "auth_failure", None)))
        return response

    w.http.get(f"{P}/status")
    w.request("revoked", "GET", f"{P}/status")
    w.request("tenant-reader", "GET", f"{P}/status")  # 403: the principal is known
    assert seen[0] == (None, "missing") and seen[1] == (None, "revoked")
    principal, failure = seen[2]
    assert failure is None and principal.name == "t-acme-reader"  # type: ignore[attr-defined]


def test_an_unreadable_token_record_is_ignored_not_fatal() -> None:
    w = World()
    w.service.put_records({f"{PREFIX}broken": {"name": "broken", "role": "root"}})
    assert w.request("admin", "GET", f"{P}/status").status_code == 200
    assert "broken" not in {t["name"] for t in w.request("admin", "GET", f"{P}/tokens").json()}


def test_removing_a_tenant_revokes_its_tokens_in_the_same_commit() -> None:
    w = World()
    acme = w.token["tenant-admin"]
    other = w.mint("t-globex", "tenant-reader", "globex")
    revision = w.store.load().revision
    r = w.request("admin", "DELETE", f"{P}/tenants/acme")
    assert r.status_code == 200, r.text
    snap = w.store.load()
    assert snap.revision == revision + 1  # the removal and the revocations: one commit
    assert snap.items[f"{PREFIX}t-acme-admin"]["revoked_at"] is not None
    assert snap.items[f"{PREFIX}t-acme-reader"]["revoked_at"] is not None
    assert snap.items[f"{PREFIX}t-globex"]["revoked_at"] is None
    r = w.http.get(f"{P}/tenants/acme", headers={"Authorization": f"Bearer {acme}"})
    assert r.status_code == 401 and "revoked" in r.text
    assert w.http.get(f"{P}/tenants/globex",
                      headers={"Authorization": f"Bearer {other}"}).status_code == 200


def test_a_tenant_token_outlives_no_tenant_even_without_a_revocation() -> None:
    """A record written before tenants' tokens were revoked with them (or by a controller that
    did not yet do so) opens nothing while its tenant is gone."""
    w = World()
    acme = w.token["tenant-reader"]
    w.tokens.service.commit_hooks.clear()  # as an older controller would have deleted it
    assert w.request("admin", "DELETE", f"{P}/tenants/acme").status_code == 200
    assert w.store.load().items[f"{PREFIX}t-acme-reader"]["revoked_at"] is None
    r = w.http.get(f"{P}/status", headers={"Authorization": f"Bearer {acme}"})
    assert r.status_code == 401 and "no longer exists" in r.text
