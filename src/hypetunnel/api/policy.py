"""The policy: ONE table, every route of the API -> who may call it and what a tenant sees.

Decided for each request before its handler runs (an app-wide dependency), in this order:
1. a public route (the health probes) needs no token;
2. no usable token -> 401 (`request.state.auth_failure` says why);
3. the principal is set on `request.state.principal` (also when it is then refused);
4. a tenant role naming another tenant in the path -> 404 with the very body a missing tenant
   gets, whatever its role would allow: a tenant never learns that another tenant exists;
5. a role the rule does not allow -> 403.
A tenant role's answer is then cut down by the rule's view (api/tenantview.py).

`check_routes(app)` refuses an app with a route the table does not rule, so a new route cannot
ship unguarded; the matrix test (tests/unit/test_policy_matrix.py) walks the same table.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from hypetunnel.api import tenantview
from hypetunnel.api.auth import (
    PROVIDER_ROLES,
    TENANT_ROLES,
    Forbidden,
    Principal,
    Role,
    Unauthenticated,
    bearer_token,
)
from hypetunnel.api.bodies import IntegralJsonRoute
from hypetunnel.api.tokens import Rejected, TokenRegistry
from hypetunnel.controller.service import ObjectNotFound
from hypetunnel.controller.tracing import TraceNotFound
from hypetunnel.errors import FieldError, HypeTunnelError, IntentInvalid
from hypetunnel.store.base import StoreUnavailable

Guard = Callable[[Principal, Request], Awaitable[None]]
TOKEN_RELOAD_TIMEOUT = 5.0  # seconds: a store this slow answers 503, as a slow write does


@dataclass(frozen=True)
class Rule:
    allow: frozenset[Role]
    public: bool = False
    # Tenant roles in `allow` may call it for their own tenant only: "path" = the {tenant}
    # path parameter is theirs; "filtered" = no tenant in the path, the answer is filtered.
    scope: str | None = None
    view: tenantview.View | None = None  # a tenant role's view of the answer
    guard: Guard | None = None  # extra checks of a tenant role's request

    def allows(self, role: Role) -> bool:
        return role in self.allow


A, TA = Role.ADMIN, Role.TENANT_ADMIN
PUBLIC = Rule(frozenset(), public=True)
ADMIN = Rule(frozenset({A}))
PROVIDER_READ = Rule(PROVIDER_ROLES)
OPERATION = Rule(PROVIDER_ROLES)
TENANT_ADMIN_ONLY = Rule(frozenset({A}), scope="path")  # tenant roles: 404/403, never 200
TENANT_OPERATION = Rule(PROVIDER_ROLES, scope="path")


def tenant_read(view: tenantview.View | None = None) -> Rule:
    return Rule(PROVIDER_ROLES | TENANT_ROLES, scope="path", view=view)


def tenant_write(guard: Guard | None = None) -> Rule:
    return Rule(frozenset({A, TA}), scope="path", view=tenantview.plan, guard=guard)


def filtered(view: tenantview.View | None, guard: Guard | None = None) -> Rule:
    return Rule(PROVIDER_ROLES | TENANT_ROLES, scope="filtered", view=view, guard=guard)


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except ValueError:
        return None  # the route's own parsing answers 400


def provider_field(field: str, why: str) -> Guard:
    """A guard refusing `field` in a tenant's body: the provider decides it, fabric-wide, and
    its errors would tell about others (which hypervisors exist, whose network holds a VNI)."""

    async def guard(principal: Principal, request: Request) -> None:
        body = await _json_body(request)
        if isinstance(body, dict) and body.get(field) is not None:
            raise IntentInvalid([FieldError(field, f"{why}: a tenant token cannot choose it")])

    return guard


no_placement = provider_field("hypervisor", "placement is the provider's")
no_vni = provider_field("vni", "VNIs are assigned by the provider, fabric-wide")


async def own_trace(principal: Principal, request: Request) -> None:
    """A tenant traces between its own VMs (or to an address in the source's network); any
    other VM answers exactly as one that does not exist."""
    intent = request.app.state.service.intent
    src, dst = request.query_params.get("src", ""), request.query_params.get("dst", "")

    def own_vm(vm_id: str) -> bool:
        t_name, _, vm_name = vm_id.partition("/")
        t = intent.tenant(t_name) if t_name == principal.tenant else None
        return t is not None and any(v.name == vm_name for v in t.vms)

    if src and not own_vm(src):
        raise TraceNotFound("src", f"unknown VM {src!r} (give the source as tenant/vm)")
    if "/" in dst and not own_vm(dst):
        raise TraceNotFound("dst", f"{dst!r} is neither a VM (tenant/vm) nor the address of a VM "
                                   f"in {src}'s network")


P = "/api/v1"
RULES: dict[tuple[str, str], Rule] = {
    ("GET", f"{P}/healthz"): PUBLIC,
    ("GET", f"{P}/readyz"): PUBLIC,
    ("GET", f"{P}/intent"): PROVIDER_READ,
    ("POST", f"{P}/apply"): ADMIN,
    ("GET", f"{P}/hypervisors"): PROVIDER_READ,
    ("GET", f"{P}/hypervisors/{{name}}"): PROVIDER_READ,
    ("PUT", f"{P}/hypervisors/{{name}}"): ADMIN,
    ("DELETE", f"{P}/hypervisors/{{name}}"): ADMIN,
    ("POST", f"{P}/hypervisors/{{name}}/drain"): OPERATION,
    ("POST", f"{P}/hypervisors/{{name}}/undrain"): OPERATION,
    ("GET", f"{P}/tenants"): filtered(tenantview.tenants),
    ("POST", f"{P}/tenants"): ADMIN,
    ("GET", f"{P}/tenants/{{tenant}}"): tenant_read(tenantview.tenant),
    ("DELETE", f"{P}/tenants/{{tenant}}"): TENANT_ADMIN_ONLY,
    ("GET", f"{P}/tenants/{{tenant}}/networks"): tenant_read(),
    ("POST", f"{P}/tenants/{{tenant}}/networks"): tenant_write(no_vni),
    ("GET", f"{P}/tenants/{{tenant}}/networks/{{network}}"): tenant_read(),
    ("DELETE", f"{P}/tenants/{{tenant}}/networks/{{network}}"): tenant_write(),
    ("GET", f"{P}/tenants/{{tenant}}/vms"): tenant_read(tenantview.vms),
    ("POST", f"{P}/tenants/{{tenant}}/vms"): tenant_write(no_placement),
    ("GET", f"{P}/tenants/{{tenant}}/vms/{{vm}}"): tenant_read(tenantview.vm),
    ("DELETE", f"{P}/tenants/{{tenant}}/vms/{{vm}}"): tenant_write(),
    # Moves are operations: placement is the provider's (a tenant does not know hypervisors).
    ("POST", f"{P}/tenants/{{tenant}}/vms/{{vm}}/move"): TENANT_OPERATION,
    ("GET", f"{P}/moves"): filtered(tenantview.moves),
    ("GET", f"{P}/status"): PROVIDER_READ,
    ("GET", f"{P}/overlay"): PROVIDER_READ,
    ("GET", f"{P}/controller"): PROVIDER_READ,
    # Prometheus scrapes with a provider token (admin or operator): fabric-wide figures.
    ("GET", f"{P}/metrics"): PROVIDER_READ,
    ("POST", f"{P}/controller/failover"): OPERATION,
    ("GET", f"{P}/trace"): filtered(tenantview.trace, own_trace),
    # The audit route (its engineer's) filters a tenant's entries itself.
    ("GET", f"{P}/audit"): filtered(None),
    # Faults: a tenant sees the alarms and events of its own resources; acknowledging is
    # the provider's operation.
    ("GET", f"{P}/alarms"): filtered(tenantview.alarms),
    ("POST", f"{P}/alarms/{{alarm_id}}/ack"): OPERATION,
    ("GET", f"{P}/events"): filtered(tenantview.events),
    # Accounting: a tenant reads its own usage only.
    ("GET", f"{P}/usage"): filtered(tenantview.usage),
    ("GET", f"{P}/tokens"): ADMIN,
    ("POST", f"{P}/tokens"): ADMIN,
    ("DELETE", f"{P}/tokens/{{name}}"): ADMIN,
}


def route_template(request: Request) -> str:
    """The matched route's full path template, e.g. /api/v1/tenants/{tenant}/vms.

    Some FastAPI versions keep an included router's routes with their own (prefix-less) path,
    so the prefix is taken from the request: the segments before the ones the route matched
    (names never contain a slash).
    """
    route = request.scope.get("route")
    template = str(getattr(route, "path_format", None) or getattr(route, "path", ""))
    if not template:
        return ""
    own = template.strip("/").split("/")
    actual = request.url.path.strip("/").split("/")
    prefix = actual[: max(0, len(actual) - len(own))]
    return "/" + "/".join([*prefix, *own]) if prefix else template


def rule_of(request: Request) -> Rule | None:
    return RULES.get((request.method, route_template(request)))


async def _fresh(tokens: TokenRegistry) -> None:
    if not tokens.stale:
        return
    try:
        await asyncio.wait_for(asyncio.to_thread(tokens.reload), TOKEN_RELOAD_TIMEOUT)
    except TimeoutError as e:
        raise StoreUnavailable(f"the store did not answer within {TOKEN_RELOAD_TIMEOUT:g} s "
                               "(reading the tokens)") from e


async def authorize(request: Request) -> None:
    """The app-wide dependency: authenticate, then apply the route's rule."""
    rule = rule_of(request)
    if rule is None:  # check_routes makes this unreachable; fail closed all the same
        raise Forbidden("no policy rule for this route")
    if rule.public:
        return
    tokens: TokenRegistry = request.app.state.tokens
    presented = bearer_token(request)
    if presented is None:
        who: Principal | Rejected = Rejected("missing")
    elif presented == "":
        who = Rejected("malformed")
    else:
        await _fresh(tokens)
        who = tokens.verify(presented)
    if isinstance(who, Rejected):
        request.state.auth_failure = who.failure  # for the audit trail (INTERFACES.md)
        raise Unauthenticated(who.failure)
    request.state.principal = who
    if who.role in TENANT_ROLES and rule.scope == "path":
        tenant = request.path_params.get("tenant")
        if tenant != who.tenant:
            raise ObjectNotFound(f"tenants/{tenant}")
    if not rule.allows(who.role):
        raise Forbidden(f"role {who.role.value} may not {request.method} "
                        f"{route_template(request)}")
    if who.role in TENANT_ROLES and rule.guard is not None:
        await rule.guard(who, request)


class PolicyRoute(IntegralJsonRoute):
    """Routes whose successful answers a tenant role sees through its rule's view."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                response = await handler(request)
            except HypeTunnelError as e:
                _scrub(e, request)
                raise
            principal = getattr(request.state, "principal", None)
            rule = rule_of(request)
            if (principal is None or principal.is_provider or rule is None or rule.view is None
                    or not 200 <= response.status_code < 300):
                return response
            data = json.loads(bytes(response.body) or b"null")
            seen = rule.view(data, principal, request.app.state.service.intent)
            return JSONResponse(seen, status_code=response.status_code)

        return run


def _scrub(exc: HypeTunnelError, request: Request) -> None:
    """A tenant role's error names no hypervisor (e.g. placement: "hv2 is full")."""
    principal = getattr(request.state, "principal", None)
    errors = getattr(exc, "errors", None)
    if principal is None or principal.is_provider or not isinstance(errors, list):
        return
    names = [h.name for h in request.app.state.service.intent.hypervisors]

    def scrubbed(e: FieldError) -> FieldError:
        if e.path.endswith("hypervisor"):  # placement: which hypervisors, how full, drained
            return FieldError(e.path, "no room for this VM now (capacity is the provider's)")
        return FieldError(e.path, tenantview.hide_names(e.reason, names))

    exc.errors = [scrubbed(e) if isinstance(e, FieldError) else e  # type: ignore[attr-defined]
                  for e in errors]


class UnruledRoute(HypeTunnelError):
    """The app has a route the policy table does not rule."""


HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def unruled_routes(app: FastAPI) -> list[str]:
    """Routes of the app's OpenAPI document that the table does not rule."""
    return [f"{m.upper()} {path}" for path, item in app.openapi().get("paths", {}).items()
            for m in item if m in HTTP_METHODS and (m.upper(), path) not in RULES]


def check_routes(app: FastAPI) -> None:
    missing = unruled_routes(app)
    if missing:
        raise UnruledRoute("routes without a policy rule (api/policy.py): " + ", ".join(missing))


BEARER_SCHEME = {"type": "http", "scheme": "bearer",
                 "description": "A token from `hypetunnel token create` (ht.<name>.<secret>)"}
_AUTH_RESPONSES = {
    "401": {"description": "No usable token (missing, malformed, unknown, expired, revoked)"},
    "403": {"description": "The token's role may not do this"},
}


def document_security(app: FastAPI) -> None:
    """Declare the bearer scheme in the OpenAPI document: every route but the public ones
    needs it, and may answer 401 and 403."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = (
            BEARER_SCHEME)
        for path, item in schema.get("paths", {}).items():
            for method, operation in item.items():
                rule = RULES.get((method.upper(), path))
                if not isinstance(operation, dict) or rule is None or rule.public:
                    continue
                operation["security"] = [{"bearer": []}]
                for status, response in _AUTH_RESPONSES.items():
                    operation.setdefault("responses", {}).setdefault(status, dict(response))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
