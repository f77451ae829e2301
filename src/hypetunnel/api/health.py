"""Health endpoints that can fail: /healthz (the process serves) and /readyz (it can do its job).

/readyz asks the runtime why it is not ready (store unreachable, role unknown, event loop late,
intent not applied yet, switches not synced) and answers 503 with those reasons, in the
project's error shape, so a load balancer, the lab or an operator sees what is missing.
Both are public (api/policy.py): a probe carries no token, and neither answer holds data.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from hypetunnel.api.errors import error_body
from hypetunnel.errors import FieldError


@runtime_checkable
class ReadinessView(Protocol):
    def readiness(self) -> list[str]:
        """Why the runtime is not ready now; empty when it is."""
        ...


def health_router(runtime: object | None) -> APIRouter:
    api = APIRouter(tags=["health"])

    @api.get("/healthz", operation_id="alive")
    async def alive() -> dict[str, bool]:
        """Alive: the process answers on its event loop."""
        return {"ok": True}

    @api.get("/readyz", operation_id="ready",
             responses={503: {"description": "Not ready; the reasons are listed"}})
    async def ready() -> Any:
        """Ready: store reachable, role known, event loop on time, intent applied, switches
        synced. 503 with one error per reason otherwise."""
        if not isinstance(runtime, ReadinessView):
            return JSONResponse(error_body([FieldError("", "no controller runtime")]),
                                status_code=503)
        reasons = runtime.readiness()
        if reasons:
            return JSONResponse(error_body([FieldError("", r) for r in reasons]),
                                status_code=503)
        return {"ok": True}

    return api
