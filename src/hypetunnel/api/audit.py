"""The audit middleware: every request that changes something, or is refused, leaves a row.

Around each request it binds a PendingAudit to the context (store/audit.py), so a commit made
for the request writes its `change` row in the same transaction. When the answer is known it
hands the trail (api/audit_trail.py): the status and the plan of each change row; a
`request` row for a write request that committed nothing; a `refusal` for 401/403. Reads that
succeed leave none.

Who is `request.state.principal` (duck-typed: name, role, tenant; set by the auth layer, also
when it answers 403), else "anonymous" with the 401's `request.state.auth_failure`. A row's
`tenant` is the principal's tenant for a tenant role, else the `{tenant}` of the route; rows of
provider-wide routes (apply, hypervisors, failover) have none.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hypetunnel.api.audit_trail import AuditTrail
from hypetunnel.api.policy import route_template
from hypetunnel.store.audit import CURRENT, AuditRow, PendingAudit, row_key

READS = frozenset({"GET", "HEAD", "OPTIONS"})
REFUSALS = frozenset({401, 403})
CAPTURE = 4 * 1024 * 1024  # bytes of a write's answer kept to read its plan
SHOWN_ITEMS = 50  # plan items listed per list (the counts are exact)
CLIP = 200  # characters of any value copied from the request or the answer


def clip(text: str, limit: int = CLIP) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _value(x: Any) -> Any:
    return getattr(x, "value", x)  # an Enum's value ("admin"), else the thing itself


def _route(scope: Scope) -> tuple[str | None, dict[str, Any]]:
    """(route template, path parameters): the router's, or matched here against the OpenAPI
    paths when the request was answered before routing (an auth middleware's 401), so
    refusals group by route whatever the made-up path."""
    if scope.get("route") is not None:
        # The policy's reading of the template: with the prefix of an included router.
        return route_template(Request(scope)) or None, dict(scope.get("path_params") or {})
    openapi = getattr(scope.get("app"), "openapi", None)
    paths: dict[str, Any] = openapi().get("paths", {}) if callable(openapi) else {}
    got = str(scope.get("path", "")).strip("/").split("/")
    method = str(scope.get("method", "")).lower()
    for template, item in paths.items():
        want = template.strip("/").split("/")
        if len(want) != len(got) or method not in item:
            continue
        params = {w[1:-1]: g for w, g in zip(want, got, strict=True) if w.startswith("{")}
        if all(w == g or (w.startswith("{") and g) for w, g in zip(want, got, strict=True)):
            return template, params
    return None, {}


def describe(scope: Scope, node: str) -> dict[str, Any]:
    """Who did what where: read from the scope after routing and authentication."""
    state = scope.get("state") or {}
    principal = state.get("principal")
    route, raw = _route(scope)
    params = {k: clip(str(v)) for k, v in raw.items()}
    client = scope.get("client")
    who = getattr(principal, "name", None)
    role = getattr(principal, "role", None)
    tenant = getattr(principal, "tenant", None) or params.get("tenant")
    doc: dict[str, Any] = {
        "node": node,
        "who": str(who) if who else "anonymous",
        "role": str(_value(role)) if role is not None else None,
        "tenant": tenant,
        "method": scope.get("method"),
        "route": route or clip(str(scope.get("path", "")), 100),
        "params": params,
        "client": client[0] if client else None,
    }
    failure = state.get("auth_failure")
    if failure:
        doc["auth_failure"] = clip(str(failure), 40)
    return doc


def _plan(body: dict[str, Any]) -> dict[str, Any] | None:
    lists = ("added", "changed", "removed")
    if not all(isinstance(body.get(k), list) for k in lists):
        return None
    out: dict[str, Any] = {k: [clip(f"{i.get('kind')} {i.get('key')}", 100)
                               for i in body[k][:SHOWN_ITEMS] if isinstance(i, dict)]
                           for k in lists}
    out["counts"] = {k: len(body[k]) for k in lists}
    out["applied"] = body.get("applied")
    return out


# Answer fields never copied into a row: POST /tokens answers with the new token's secret,
# and the audit log must not be a second place to read it from (the store keeps only hashes).
SECRET_FIELDS = frozenset({"token"})


def redacted(x: Any) -> Any:
    """`x` with the value of every SECRET_FIELDS key, at any depth, replaced."""
    if isinstance(x, dict):
        return {k: "(secret, not recorded)" if k in SECRET_FIELDS else redacted(v)
                for k, v in x.items()}
    if isinstance(x, list):
        return [redacted(v) for v in x]
    return x


def outcome(status: int, raw: bytes, complete: bool) -> dict[str, Any]:
    """What the answer says, briefly: the plan of a write, the errors of a failure."""
    out: dict[str, Any] = {"status": status}
    if not complete:
        out["answer"] = f"over {CAPTURE} bytes, not recorded"
        return out
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        return out
    if status >= 400:
        errors = (body.get("detail") or {}).get("errors") if isinstance(body, dict) else None
        if isinstance(errors, list):
            out["errors"] = [clip(f"{e.get('path')}: {e.get('reason')}") for e in errors[:5]
                             if isinstance(e, dict)]
        return out
    plan = _plan(body) if isinstance(body, dict) else None
    if plan is not None:
        out["plan"] = plan
    elif body is not None:
        out["answer"] = clip(json.dumps(redacted(body), sort_keys=True), 500)
    return out


class AuditMiddleware:
    def __init__(self, app: ASGIApp, trail: AuditTrail) -> None:
        self.app = app
        self.trail = trail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        pending = PendingAudit(lambda: describe(scope, self.trail.node))
        write = scope["method"] not in READS
        status = 500  # an exception escaping the app is answered 500 by the server
        body = bytearray()
        complete = True

        async def sending(message: Message) -> None:
            nonlocal status, complete
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and write:
                chunk = message.get("body", b"")
                if len(body) + len(chunk) <= CAPTURE:
                    body.extend(chunk)
                else:
                    complete = False
            await send(message)

        token = CURRENT.set(pending)
        try:
            await self.app(scope, receive, sending)
        finally:
            pending.responded = True
            CURRENT.reset(token)
            self._record(scope, pending, status, bytes(body), complete)

    def _record(self, scope: Scope, pending: PendingAudit, status: int, body: bytes,
                complete: bool) -> None:
        committed = pending.committed_rows()
        if committed:
            self.trail.put(lambda: [AuditRow(r.key, {**r.doc, **outcome(status, body, complete)})
                                    for r in committed])
            return
        doc = describe(scope, self.trail.node)
        if status in REFUSALS:
            group = (status, doc["who"], doc.get("auth_failure"), doc["client"],
                     doc["method"], doc["route"])
            self.trail.refused(group, {**doc, "kind": "refusal", "status": status})
        elif scope["method"] not in READS:
            now = time.time()
            self.trail.put(lambda: [AuditRow(row_key("request", now), {
                **doc, "kind": "request", "time": now, **outcome(status, body, complete)})])
