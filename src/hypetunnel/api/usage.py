"""REST route for accounting: usage per tenant, network or VM over a window.

The answer comes from the runtime's accounting (memory on the active controller, the store on
the standby, read in a thread within a bound). A tenant role sees only its own tenant's rows.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from hypetunnel.api.alarms import bounded
from hypetunnel.api.params import NAME_PATTERN
from hypetunnel.api.policy import PolicyRoute
from hypetunnel.api.runtime_ops import runtime_method


def usage_router(runtime: Any) -> APIRouter:
    api = APIRouter(route_class=PolicyRoute)

    @api.get("/usage")
    async def usage(
        by: Annotated[Literal["tenant", "network", "vm"], Query(
            description="one row per tenant, network or VM")] = "tenant",
        tenant: Annotated[str | None, Query(pattern=NAME_PATTERN,
                                            description="this tenant only")] = None,
        since: Annotated[float | None, Query(
            ge=0, le=10 * 365 * 86400,
            description="only traffic this recent: seconds back from now (exact to within "
                        "one 5-minute sample at the window's start)")] = None,
    ) -> list[dict[str, Any]]:
        """Bytes and packets in (unicast delivered to the VMs) and out (sent by them), and,
        per network and tenant, dropped at the source (to no known address: another
        tenant's included). Monotonic across restarts, failovers and moves."""
        after = None if since is None else time.time() - since
        return list(await bounded(runtime_method(runtime, "usage")(by, tenant, after)))

    return api
