"""Abuse of the API: oversized bodies (413 while streaming), floods (429 per caller, then
recovery), path parameters that cannot be names, and errors that never echo a huge request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hypetunnel.api.app import create_app
from hypetunnel.api.audit import AuditMiddleware
from hypetunnel.api.guards import Guards
from hypetunnel.api.limits import MIB, BodyLimitMiddleware, BodyLimits
from hypetunnel.api.params import NAME_PATTERN
from hypetunnel.api.policy import authorize, unruled_routes
from hypetunnel.api.ratelimit import RateLimit, RateLimitMiddleware, TokenBuckets
from hypetunnel.controller.service import FabricService
from hypetunnel.store.memory import MemoryStore
from tests.unit.auth_helpers import admin_client, bearer, mint
from tests.unit.test_audit import UNKNOWN_TOKEN, example

API = "/api/v1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(guards: Guards | None = None) -> TestClient:
    """A client of the real app sending an admin token (requests may override it)."""
    return admin_client(create_app(FabricService(MemoryStore()), guards=guards))


@pytest.fixture
def api() -> Iterator[TestClient]:
    with client() as c:
        assert c.post(f"{API}/apply", json={"intent": example()}).status_code == 200
        yield c


def reason(r: Any) -> str:
    return str(r.json()["detail"]["errors"][0]["reason"])


# -- body size ------------------------------------------------------------------------------------
def test_a_2_mib_body_is_413_with_a_clear_error_and_stores_nothing(api: TestClient) -> None:
    before = api.get(f"{API}/intent").json()
    body = b'{"name": "big", "pad": "' + b"x" * (2 * MIB) + b'"}'
    r = api.post(f"{API}/tenants", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "over 1 MiB" in reason(r) and "/api/v1/apply takes up to 16 MiB" in reason(r)
    assert len(r.text) < 500
    assert api.get(f"{API}/intent").json() == before


@pytest.mark.parametrize("token", [None, UNKNOWN_TOKEN])
def test_a_2_mib_body_is_413_before_the_token_is_looked_at(token: str | None) -> None:
    """The body limit wraps the auth layer: an oversized body is refused for its size, without
    the token being checked, and its audit row names no principal nor any auth failure."""
    app = create_app(FabricService(MemoryStore()))
    checked: list[str | None] = []
    verify = app.state.tokens.verify
    app.state.tokens.verify = lambda t: checked.append(t) or verify(t)
    with TestClient(app) as c:
        headers = {"content-type": "application/json", **(bearer(token) if token else {})}
        r = c.post(f"{API}/tenants", content=b"x" * (2 * MIB), headers=headers)
        assert r.status_code == 413 and "over 1 MiB" in reason(r)
        assert checked == []
        assert app.state.audit.flush()
        [row] = app.state.audit.store.audit_range(0, None, 10)
    assert (row["kind"], row["status"], row["who"], row["role"]) == ("request", 413,
                                                                    "anonymous", None)
    assert "auth_failure" not in row


def test_a_chunked_body_is_cut_off_as_it_passes_the_limit(api: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: only counting can refuse it
        yield b'{"name": "big", "pad": "'
        for _ in range(64):
            yield b"x" * (64 * 1024)
        yield b'"}'

    r = api.post(f"{API}/tenants", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over 1 MiB" in reason(r)


def test_the_limit_stops_reading_the_moment_it_is_passed() -> None:
    """Straight at the middleware: a 64 MiB chunked body is not read past its first MiB."""
    pulled = 0
    answer: list[Any] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * (64 * 1024), "more_body": pulled < 1024}

    async def send(message: dict[str, Any]) -> None:
        answer.append(message)

    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        while (await rcv()).get("more_body"):  # an app that reads everything it is given
            pass

    scope = {"type": "http", "method": "POST", "path": "/api/v1/tenants", "headers": []}
    asyncio.run(BodyLimitMiddleware(app, BodyLimits())(scope, receive, send))
    assert pulled == 17  # 16 chunks fill the MiB, the 17th passes it
    assert answer[0]["status"] == 413


def test_the_whole_fabric_apply_takes_more_than_1_mib(api: TestClient) -> None:
    intent = example()
    intent["pad"] = "x" * (2 * MIB)  # reaches validation: an unknown key, not a size error
    r = api.post(f"{API}/apply", json={"intent": intent, "dry_run": True})
    assert r.status_code == 422, r.text[:300]
    r = api.post(f"{API}/apply", content=b"{" + b" " * (17 * MIB) + b"}",
                 headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over 16 MiB" in reason(r)


def test_an_oversized_write_is_audited_as_a_request(api: TestClient) -> None:
    api.post(f"{API}/tenants", content=b"x" * (2 * MIB),
             headers={"content-type": "application/json"})
    assert api.app.state.audit.flush()  # type: ignore[attr-defined]
    [row] = api.get(f"{API}/audit", params={"limit": 1}).json()
    assert (row["kind"], row["status"], row["route"]) == ("request", 413, "/api/v1/tenants")


# -- rate limit -----------------------------------------------------------------------------------
def limited(clock: Clock, **kw: Any) -> TestClient:
    return client(Guards(rate=RateLimit(rate=2, burst=3, refused_rate=1, refused_burst=5,
                                        clock=clock, **kw)))


def test_a_caller_over_its_rate_gets_429_with_retry_after_then_recovers() -> None:
    clock = Clock()
    with limited(clock) as c:
        token = bearer(mint(c.app, "t1", "operator"))  # type: ignore[arg-type]
        assert [c.get(f"{API}/tenants", headers=token).status_code for _ in range(3)] == [200] * 3
        r = c.get(f"{API}/tenants", headers=token)
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        assert "over 2 requests/s" in reason(r)
        # Another token has a bucket of its own; so has a caller without one (its address):
        # the auth layer, not the limit, answers it.
        other = bearer(mint(c.app, "t2", "operator"))  # type: ignore[arg-type]
        assert c.get(f"{API}/tenants", headers=other).status_code == 200
        assert c.get(f"{API}/tenants", headers={"Authorization": ""}).status_code == 401
        assert c.get(f"{API}/healthz", headers=token).status_code == 200  # never limited
        clock.now += 0.5  # one token back at 2/s
        assert c.get(f"{API}/tenants", headers=token).status_code == 200
        assert c.get(f"{API}/tenants", headers=token).status_code == 429
        clock.now += 10  # refilled, but never above the burst
        codes = [c.get(f"{API}/tenants", headers=token).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]


def test_made_up_tokens_exhaust_the_addresss_budget_of_401s() -> None:
    clock = Clock()
    with limited(clock) as c:
        # Each made-up token would have a fresh bucket; the 401s drain the address's instead.
        codes = [c.get(f"{API}/tenants", headers={"Authorization": f"Bearer bad{i}"}).status_code
                 for i in range(7)]
        assert codes == [401] * 5 + [429] * 2
        good = bearer(mint(c.app, "good", "operator"))  # type: ignore[arg-type]
        r = c.get(f"{API}/tenants", headers=good)
        assert r.status_code == 429 and "invalid credentials" in reason(r)
        clock.now += 1.0
        assert c.get(f"{API}/tenants", headers=good).status_code == 200


def test_the_bucket_table_is_bounded() -> None:
    buckets = TokenBuckets(1, 1, 10, Clock())
    for i in range(50):
        buckets.take(f"k{i}")
    assert len(buckets._buckets) == 10


# -- path parameters and echoes -------------------------------------------------------------------
def test_every_path_parameter_of_every_route_is_an_intent_name(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    seen = 0
    for template, item in paths.items():
        for method, op in item.items():
            for p in op.get("parameters", []):
                if p["in"] == "path":
                    seen += 1
                    assert p["schema"].get("pattern") == NAME_PATTERN, (method, template, p)
    assert seen >= 15  # tenants, networks, VMs, hypervisors, moves, drain...


@pytest.mark.parametrize("path", [
    "/tenants/{x}", "/tenants/acme/vms/{x}", "/tenants/acme/networks/{x}",
    "/hypervisors/{x}", "/hypervisors/{x}/drain", "/tenants/{x}/vms/web1/move",
])
def test_a_huge_bad_path_parameter_is_4xx_without_echo(api: TestClient, path: str) -> None:
    huge = "A" * 20_000
    method = "POST" if path.endswith(("drain", "move")) else "GET"
    body = {"to": "hv1"} if path.endswith("move") else None
    r = api.request(method, API + path.replace("{x}", huge), json=body)
    assert 400 <= r.status_code < 500
    assert "AAAAAAAAAA" not in r.text and len(r.text) < 500


def test_errors_clip_values_they_quote(api: TestClient) -> None:
    huge = "B" * 50_000
    for r in (api.get(f"{API}/trace", params={"src": "acme/web1", "dst": "x", "kind": huge}),
              api.get(f"{API}/no/such/{huge}"),
              api.post(f"{API}/tenants", json={"name": "ok2", "networks": [
                  {"name": "n", "cidr": huge}]})):
        assert 400 <= r.status_code < 500
        assert len(r.text) < 1000 and "characters, clipped" in r.text


def test_the_guards_wrap_everything_and_auth_is_the_apps_dependency() -> None:
    """Outermost first: the rate limit, the audit, the body limit; then the app, whose every
    route depends on `authorize` (the first dependency), so a refusal of the auth layer passes
    through the audit on its way out, and an oversized body never reaches the auth layer."""
    app = create_app(FabricService(MemoryStore()), guards=Guards(rate=RateLimit()))
    assert [m.cls for m in app.user_middleware] == [RateLimitMiddleware, AuditMiddleware,
                                                    BodyLimitMiddleware]
    assert app.router.dependencies[0].dependency is authorize
    # The audit route came in with the guards, before create_app checked every route's rule.
    assert "get" in app.openapi()["paths"][f"{API}/audit"] and unruled_routes(app) == []
    with admin_client(app) as c:  # the audit route is ruled like every other one
        assert c.get(f"{API}/audit").status_code == 200
        assert c.get(f"{API}/audit", headers={"Authorization": ""}).status_code == 401
