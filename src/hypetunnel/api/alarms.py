"""REST routes for faults: the alarm book (list, acknowledge) and the state log (events).

The answers come from the runtime's fault monitor (memory on the active controller, the store
on the standby, read in a thread within a bound). A tenant role sees only the alarms and
events of its own tenant's resources, with hypervisor names hidden (api/tenantview.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Query

from hypetunnel.api.params import NAME_PATTERN
from hypetunnel.api.policy import PolicyRoute
from hypetunnel.api.runtime_ops import runtime_method
from hypetunnel.store.base import StoreUnavailable

READ_TIMEOUT = 10.0
T = TypeVar("T")


async def bounded(call: Awaitable[T]) -> T:
    try:
        return await asyncio.wait_for(call, READ_TIMEOUT)
    except TimeoutError as e:
        raise StoreUnavailable(f"the store did not answer within {READ_TIMEOUT:g} s") from e


def alarms_router(runtime: Any) -> APIRouter:
    api = APIRouter(route_class=PolicyRoute)

    def need(name: str) -> Any:
        return runtime_method(runtime, name)

    @api.get("/alarms")
    async def alarms(all: Annotated[bool, Query(
            description="cleared alarms too (the newest 500 are kept)")] = False,
    ) -> list[dict[str, Any]]:
        """Open alarms (X.733 style): id, resource, kind, severity, service_affecting,
        raised, updated, cleared, acknowledged, tenant, text."""
        return list(await bounded(need("alarms")(all)))

    @api.post("/alarms/{alarm_id}/ack")
    async def ack(alarm_id: Annotated[str, Path(pattern=NAME_PATTERN, description="Alarm id")]
                  ) -> dict[str, Any]:
        """Acknowledge an alarm (it stays open until its fault is gone)."""
        return dict(await bounded(need("ack_alarm")(alarm_id)))

    @api.get("/events")
    async def events(
        resource: Annotated[str | None, Query(
            max_length=200, description="a resource (vm/acme/web1) or a prefix (vm/acme)")
        ] = None,
        since: Annotated[float | None, Query(
            ge=0, le=10 * 365 * 86400, description="only this recent: seconds back from now "
                                                    "(as GET /audit)")] = None,
        limit: Annotated[int, Query(ge=1, le=2000)] = 1000,
    ) -> list[dict[str, Any]]:
        """The state log, oldest first: every change of state of a hypervisor, switch,
        tunnel, network or VM (and every alarm change) with its time and cause."""
        after = None if since is None else time.time() - since
        return list(await bounded(need("events")(resource, after, limit)))

    return api
