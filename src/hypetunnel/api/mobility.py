"""REST routes for VM mobility: move, drain/undrain, the move log."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from hypetunnel.api.params import HypervisorName, TenantName, VmName
from hypetunnel.api.policy import PolicyRoute
from hypetunnel.api.runtime_ops import runtime_method
from hypetunnel.store.base import StoreUnavailable

# The move log is read from the store (SQLite on disk, or etcd over HTTP): in a thread, so the
# OpenFlow channels and heartbeats on the loop never wait for it, and within a bound, so a
# store that stopped answering gives a 503 rather than a request that hangs.
READ_TIMEOUT = 10.0


class MoveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str
    cold: bool = False


def mobility_router(runtime: Any) -> APIRouter:
    api = APIRouter(route_class=PolicyRoute)

    def need(name: str) -> Any:
        return runtime_method(runtime, name)

    @api.post("/tenants/{tenant}/vms/{vm}/move")
    async def move(tenant: TenantName, vm: VmName, body: MoveBody) -> dict[str, Any]:
        """Start a hot (default) or cold move; the record tracks it to its end."""
        return dict(await need("move")(f"{tenant}/{vm}", body.to, body.cold))

    @api.post("/hypervisors/{name}/drain")
    async def drain(name: HypervisorName) -> list[dict[str, Any]]:
        """Unschedulable, and every VM moved away (hot) within capacity."""
        return list(await need("drain")(name))

    @api.post("/hypervisors/{name}/undrain")
    async def undrain(name: HypervisorName) -> dict[str, Any]:
        return dict(await need("undrain")(name))

    @api.get("/moves")
    async def moves(vm: str | None = None) -> list[dict[str, Any]]:
        """Every move: VM, from, to, kind, start, end, measured interruption, result."""
        try:
            records = await asyncio.wait_for(asyncio.to_thread(need("moves")), READ_TIMEOUT)
        except TimeoutError as e:
            raise StoreUnavailable(f"the store did not answer within {READ_TIMEOUT:g} s") from e
        return [m for m in records if vm is None or m["vm"] == vm]

    return api
