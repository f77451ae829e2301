"""Run the controller as a service: store + OpenFlow endpoint + OVSDB clients + REST API."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import uvicorn

from hypetunnel.api.app import create_app
from hypetunnel.controller.runtime import Controller
from hypetunnel.store.sqlite import SqliteStore

log = logging.getLogger(__name__)


async def serve(state_dir: Path, api_host: str, api_port: int, openflow: list[str],
                switch_targets: list[str] | None = None) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(state_dir / "store.db")
    controller = Controller(store, openflow_listen=openflow, switch_targets=switch_targets)
    await controller.start()
    app = create_app(controller.service, controller)
    server = uvicorn.Server(uvicorn.Config(app, host=api_host, port=api_port, log_level="warning",
                                           lifespan="off"))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    log.info("API on http://%s:%d, OpenFlow on %s", api_host, api_port, ", ".join(openflow))
    try:
        await server.serve()
    finally:
        await controller.stop()
        store.close()
