"""What every request passes before the routes: the rate limit, the audit trail, the body
limit (outermost first), and the audit route. create_app calls install() last, so these wrap
every other middleware (the auth layer's too): a request the auth layer refuses is still seen
by the audit, and a flood is refused before anything else runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import FastAPI

from hypetunnel.api.audit import AuditMiddleware
from hypetunnel.api.audit_route import READ_TIMEOUT, audit_router
from hypetunnel.api.audit_trail import AuditTrail
from hypetunnel.api.limits import BodyLimitMiddleware, BodyLimits
from hypetunnel.api.ratelimit import RateLimit, RateLimitMiddleware
from hypetunnel.store.audit import AuditStore


@dataclass(frozen=True)
class Guards:
    body: BodyLimits = field(default_factory=BodyLimits)
    rate: RateLimit | None = None  # None: not limited (tests); the daemon passes its own
    node: str = "controller"  # the name audit rows give this controller
    audit_read_timeout: float = READ_TIMEOUT  # GET /audit: then 503
    refusal_window: float = 10.0  # refusals coalesced per window (api/audit_trail.py)


def install(app: FastAPI, store: object, guards: Guards | None = None, *,
            trail: AuditTrail | None = None, prefix: str = "/api/v1") -> AuditTrail | None:
    """Add the guards to `app`; the audit trail needs a store with an audit log (AuditStore)."""
    guards = guards or Guards()
    if trail is None and isinstance(store, AuditStore):
        trail = AuditTrail(store, guards.node, refusal_window=guards.refusal_window)
    app.add_middleware(BodyLimitMiddleware, limits=guards.body)
    if trail is not None:
        app.add_middleware(AuditMiddleware, trail=trail)
        app.include_router(audit_router(trail, guards.audit_read_timeout), prefix=prefix)
    if guards.rate is not None:
        app.add_middleware(RateLimitMiddleware, limit=guards.rate)
    app.state.audit = trail
    return trail
