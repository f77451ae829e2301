"""GET /api/v1/audit: the audit trail, newest first; a tenant principal sees only its own.

The store is read in a thread of the trail's own (bounded by `timeout`, then 503), never on
the event loop.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from hypetunnel.api.audit_trail import AuditTrail
from hypetunnel.api.params import NAME_PATTERN
from hypetunnel.store.base import StoreUnavailable

MAX_LIMIT = 1000
# What a tenant principal sees of a row: not which controller, nor client addresses, nor the
# raw answers (a move's answer names hypervisors, a provider-only fact).
TENANT_FIELDS = frozenset({"time", "kind", "who", "role", "tenant", "method", "route", "params",
                           "status", "revision", "plan", "errors", "count", "last",
                           "auth_failure", "after_response"})
READ_TIMEOUT = 5.0  # seconds


def audit_router(trail: AuditTrail, timeout: float = READ_TIMEOUT) -> APIRouter:
    api = APIRouter()
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="audit-read")

    @api.get("/audit")
    async def audit(
        request: Request,
        tenant: Annotated[str | None, Query(pattern=NAME_PATTERN,
                                            description="only this tenant's entries")] = None,
        since: Annotated[float | None, Query(ge=0, le=10 * 365 * 86400,
                                             description="only the last SECONDS seconds")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    ) -> list[dict[str, Any]]:
        """Changes, write requests that committed nothing, and refusals: who (token name,
        role), what (method, route, parameters, plan), result (status), when, and which
        controller."""
        own = getattr(getattr(request.state, "principal", None), "tenant", None)
        if own is not None:
            if tenant not in (None, own):
                return []  # as for a tenant without entries: no other tenant is confirmed
            tenant = own
        start = 0.0 if since is None else time.time() - since
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(pool, trail.store.audit_range, start, tenant, limit)
        try:
            rows = await asyncio.wait_for(future, timeout)
        except TimeoutError as e:
            raise StoreUnavailable(f"the store did not answer within {timeout:g} s") from e
        if own is None:
            return rows
        return [{k: v for k, v in row.items() if k in TENANT_FIELDS} for row in rows]

    return api
