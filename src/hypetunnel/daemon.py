"""Run the controller as a service: store + OpenFlow endpoint + OVSDB clients + REST API.

The composition root: the only module that knows both the controller and the API, so neither
package imports the other's top.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from hypetunnel.api.app import create_app
from hypetunnel.api.tokens_bootstrap import ensure_bootstrap_token
from hypetunnel.controller.ha import HaConfig
from hypetunnel.controller.runtime import Controller
from hypetunnel.store.base import Store

log = logging.getLogger(__name__)


@dataclass
class DaemonConfig:
    state_dir: Path
    api: str = "127.0.0.1:8650"  # HOST:PORT, or unix:/path for a unix socket
    openflow: list[str] = field(default_factory=lambda: ["tcp:0.0.0.0:6653"])
    switch_targets: list[str] | None = None
    etcd: list[str] | None = None  # etcd client URLs: shared store + election (HA)
    node: str | None = None  # HA: this controller's name
    peer: str | None = None  # HA: HOST:PORT for heartbeats to the standby


def open_store(config: DaemonConfig) -> Store:
    if config.etcd:
        from hypetunnel.store.etcd import EtcdStore

        return EtcdStore(config.etcd)
    from hypetunnel.store.sqlite import SqliteStore

    config.state_dir.mkdir(parents=True, exist_ok=True)
    return SqliteStore(config.state_dir / "store.db")


async def serve(config: DaemonConfig) -> None:
    store = open_store(config)
    ha = None
    if config.etcd:
        if not (config.node and config.peer):
            raise SystemExit("--etcd needs --node and --peer (the HA pair)")
        ha = HaConfig(config.node, config.peer, api_url=config.api)
    controller = Controller(store, openflow_listen=config.openflow,
                            switch_targets=config.switch_targets, ha=ha)
    await controller.start()
    app = create_app(controller.service, controller)
    # The first admin token, once this controller may write and none exists in the store.
    bootstrap = asyncio.create_task(ensure_bootstrap_token(app.state.tokens, config.state_dir))
    if config.api.startswith("unix:"):
        uv = uvicorn.Config(app, uds=config.api.removeprefix("unix:"), log_level="warning",
                            lifespan="off")
    else:
        host, _, port = config.api.rpartition(":")
        uv = uvicorn.Config(app, host=host or "127.0.0.1", port=int(port), log_level="warning",
                            lifespan="off")
    server = uvicorn.Server(uv)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    log.info("API on %s, OpenFlow on %s%s", config.api, ", ".join(config.openflow),
             f", HA node {config.node} (peer {config.peer})" if ha else "")
    try:
        await server.serve()
    finally:
        bootstrap.cancel()
        await controller.stop()
        store.close()
