"""The policy matrix, generated from the OpenAPI document: every route x every role x (own
tenant, other tenant), plus no token and a malformed, unknown, expired and revoked one.

EXPECTED below is the specification written independently of api/policy.py's table; a route
in the document that either misses makes the test fail, so no route ships unruled.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hypetunnel.api.policy import RULES, UnruledRoute, check_routes
from tests.unit.policy_world import World

P = "/api/v1"
# public | admin | provider-read | operation | tenant-read | tenant-write | tenant-operation
# | tenant-admin-only | any (a tenant role sees its own part of the answer)
EXPECTED: dict[tuple[str, str], str] = {
    ("GET", f"{P}/healthz"): "public",
    ("GET", f"{P}/readyz"): "public",
    ("GET", f"{P}/intent"): "provider-read",
    ("POST", f"{P}/apply"): "admin",
    ("GET", f"{P}/hypervisors"): "provider-read",
    ("GET", f"{P}/hypervisors/{{name}}"): "provider-read",
    ("PUT", f"{P}/hypervisors/{{name}}"): "admin",
    ("DELETE", f"{P}/hypervisors/{{name}}"): "admin",
    ("POST", f"{P}/hypervisors/{{name}}/drain"): "operation",
    ("POST", f"{P}/hypervisors/{{name}}/undrain"): "operation",
    ("GET", f"{P}/tenants"): "any",
    ("POST", f"{P}/tenants"): "admin",
    ("GET", f"{P}/tenants/{{tenant}}"): "tenant-read",
    ("DELETE", f"{P}/tenants/{{tenant}}"): "tenant-admin-only",
    ("GET", f"{P}/tenants/{{tenant}}/networks"): "tenant-read",
    ("POST", f"{P}/tenants/{{tenant}}/networks"): "tenant-write",
    ("GET", f"{P}/tenants/{{tenant}}/networks/{{network}}"): "tenant-read",
    ("DELETE", f"{P}/tenants/{{tenant}}/networks/{{network}}"): "tenant-write",
    ("GET", f"{P}/tenants/{{tenant}}/vms"): "tenant-read",
    ("POST", f"{P}/tenants/{{tenant}}/vms"): "tenant-write",
    ("GET", f"{P}/tenants/{{tenant}}/vms/{{vm}}"): "tenant-read",
    ("DELETE", f"{P}/tenants/{{tenant}}/vms/{{vm}}"): "tenant-write",
    ("POST", f"{P}/tenants/{{tenant}}/vms/{{vm}}/move"): "tenant-operation",
    ("GET", f"{P}/moves"): "any",
    ("GET", f"{P}/status"): "provider-read",
    ("GET", f"{P}/overlay"): "provider-read",
    ("GET", f"{P}/controller"): "provider-read",
    ("GET", f"{P}/metrics"): "provider-read",
    ("POST", f"{P}/controller/failover"): "operation",
    ("GET", f"{P}/trace"): "any",
    ("GET", f"{P}/audit"): "any",
    ("GET", f"{P}/alarms"): "any",
    ("POST", f"{P}/alarms/{{alarm_id}}/ack"): "operation",
    ("GET", f"{P}/events"): "any",
    ("GET", f"{P}/usage"): "any",
    ("GET", f"{P}/tokens"): "admin",
    ("POST", f"{P}/tokens"): "admin",
    ("DELETE", f"{P}/tokens/{{name}}"): "admin",
}
BODIES: dict[tuple[str, str], Any] = {
    ("POST", f"{P}/apply"): {"intent": {}, "dry_run": True},
    ("PUT", f"{P}/hypervisors/{{name}}"): {"schedulable": True},
    ("POST", f"{P}/tenants"): {"name": "newco"},
    ("POST", f"{P}/tenants/{{tenant}}/networks"): {"name": "extra", "cidr": "10.9.0.0/24"},
    ("POST", f"{P}/tenants/{{tenant}}/vms"): {"name": "vm9", "network": "front"},
    ("POST", f"{P}/tenants/{{tenant}}/vms/{{vm}}/move"): {"to": "hv3"},
    ("POST", f"{P}/tokens"): {"name": "t-new", "role": "operator"},
}
BAD_TOKENS = (None, "malformed", "unknown", "expired", "revoked")
PROVIDER = ("admin", "operator")
TENANT = ("tenant-admin", "tenant-reader")
# Destructive calls last, so that earlier cases still find what they address.
ROLE_ORDER = (*BAD_TOKENS, "tenant-reader", "tenant-admin", "operator", "admin")


def routes() -> list[tuple[str, str]]:
    doc = World().app.openapi()
    return sorted((m.upper(), path) for path, item in doc["paths"].items() for m in item
                  if m in ("get", "put", "post", "delete", "patch"))


ROUTES = routes()


def test_every_documented_route_has_a_rule_and_an_expectation() -> None:
    assert ROUTES, "the OpenAPI document lists no route"
    assert [r for r in ROUTES if r not in RULES] == []
    assert [r for r in ROUTES if r not in EXPECTED] == []


def test_an_app_with_an_unruled_route_refuses_to_start() -> None:
    world = World()

    @world.app.get(f"{P}/unguarded")
    async def unguarded() -> dict[str, bool]:
        return {"ok": True}

    world.app.openapi_schema = None  # the document is generated once; make it again
    with pytest.raises(UnruledRoute, match="GET /api/v1/unguarded"):
        check_routes(world.app)


def url_of(path: str, tenant: str) -> tuple[str, dict[str, str]]:
    params = {}
    if path.endswith("/trace"):
        params = {"src": f"{tenant}/web1", "dst": "10.1.0.11"}
    if path.endswith("/audit"):  # a tenant asking for another's entries gets none
        params = {"tenant": tenant}
    name = "nosuch-token" if "/tokens/" in path else "hv1"
    return (path.replace("{tenant}", tenant).replace("{network}", "front")
            .replace("{alarm_id}", "a1")
            .replace("{vm}", "web1").replace("{name}", name)), params


def expect(kind: str, who: str | None, own: bool) -> str:
    """'ok' (the rule lets it through), 401, 403 or 'hidden' (404 as for a missing tenant)."""
    if kind == "public":
        return "ok"
    if who in BAD_TOKENS:
        return "401"
    if who == "admin":
        return "ok"
    if who == "operator":
        return "403" if kind in ("admin", "tenant-write", "tenant-admin-only") else "ok"
    assert who in TENANT
    if kind.startswith("tenant-") and not own:
        return "hidden"
    if kind in ("tenant-read", "any") or (kind == "tenant-write" and who == "tenant-admin"):
        return "ok"
    return "403"


def cases() -> Iterator[tuple[str, str]]:
    yield from ROUTES


@pytest.mark.parametrize(("method", "path"), list(cases()), ids=lambda v: str(v))
def test_route_by_role(method: str, path: str) -> None:
    kind = EXPECTED[(method, path)]
    body = BODIES.get((method, path))
    world = World()  # one per route: earlier writes of the route do not matter
    for who in ROLE_ORDER:
        for tenant, own in (("acme", True), ("globex", False)):
            url, params = url_of(path, tenant)
            r = world.request(who, method, url, params=params,
                              **({"json": body} if body is not None else {}))
            want = expect(kind, who, own)
            where = f"{who} {method} {url} {params}: {r.status_code} {r.text[:200]}"
            if want == "401":
                assert r.status_code == 401, where
                assert r.headers["www-authenticate"].startswith("Bearer"), where
            elif want == "403":
                assert r.status_code == 403, where
            elif want == "hidden":
                missing_url, _ = url_of(path, "nosuch")
                missing = world.request(who, method, missing_url, params=params,
                                        **({"json": body} if body is not None else {}))
                assert r.status_code == 404, where
                # The same answer, word for word, but for the name asked about.
                assert r.text.replace("globex", "X") == missing.text.replace("nosuch", "X"), where
            else:
                assert r.status_code not in (401, 403), where
                if who in TENANT:  # never the answer that hides another tenant
                    assert "tenants/globex" not in r.text, where
                if path.endswith("/audit"):
                    assert r.status_code == 200, where
                    if who in TENANT:
                        assert own or r.json() == [], where
                        assert all(e["tenant"] == "acme" for e in r.json()), where


@pytest.mark.parametrize("who", ["tenant-admin", "tenant-reader"])
def test_trace_from_another_tenants_vm_answers_as_a_missing_vm(who: str) -> None:
    world = World()
    other = world.request(who, "GET", f"{P}/trace", params={"src": "globex/web1",
                                                           "dst": "10.1.0.11"})
    missing = world.request(who, "GET", f"{P}/trace", params={"src": "nosuch/web1",
                                                             "dst": "10.1.0.11"})
    assert other.status_code == 404
    assert other.json()["detail"]["errors"][0]["reason"].replace("globex", "X") == \
        missing.json()["detail"]["errors"][0]["reason"].replace("nosuch", "X")
