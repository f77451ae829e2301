"""GET /metrics in the Prometheus text format (token required: api/policy.py), and the API's
own request count and latency, measured by a plain ASGI middleware around every request.

The metrics are the runtime's (metrics/registry.py: one registry per controller); without a
controller runtime there are none (404). The handler is `async def`: it reads the runtime's
status on the event loop, as GET /status does.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, FastAPI, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hypetunnel.api.policy import PolicyRoute, route_template
from hypetunnel.errors import NotFound
from hypetunnel.metrics.instruments import Instruments
from hypetunnel.metrics.registry import CONTENT_TYPE, ControllerMetrics


def controller_metrics(runtime: object | None) -> ControllerMetrics | None:
    metrics = getattr(runtime, "metrics", None)
    return metrics if isinstance(metrics, ControllerMetrics) else None


def metrics_router(runtime: object | None) -> APIRouter:
    api = APIRouter(route_class=PolicyRoute)

    @api.get("/metrics", response_class=Response,
             responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {}},
                              "description": "Prometheus text exposition format"}})
    async def metrics() -> Response:
        """This controller's metrics (Prometheus text format): switches, flows, reconcile
        and store latency, flow-mods, OpenFlow errors, role and term, moves, open alarms."""
        found = controller_metrics(runtime)
        if found is None:
            raise NotFound("metrics need the controller runtime")
        return Response(found.exposition(), media_type=CONTENT_TYPE)

    return api


class RequestMetrics:
    """Counts and times every HTTP request by method, route template (bounded: never the
    actual path) and status code."""

    def __init__(self, app: ASGIApp, instruments: Instruments) -> None:
        self.app = app
        self.instruments = instruments

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500

        async def sending(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            method = str(scope.get("method", ""))
            route = route_template(Request(scope)) or "unmatched"
            self.instruments.api_requests.labels(method, route, str(code)).inc()
            self.instruments.api_seconds.labels(method, route).observe(
                time.perf_counter() - started)


def install_request_metrics(app: FastAPI, runtime: object | None) -> None:
    """Outermost (added last): the time includes the guards (rate and body limits, audit)."""
    found = controller_metrics(runtime)
    if found is not None:
        app.add_middleware(RequestMetrics, instruments=found.instruments)
