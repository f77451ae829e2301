"""Run the controller as a service: store + OpenFlow endpoint + OVSDB clients + REST API.

The composition root: the only module that knows both the controller and the API, so neither
package imports the other's top.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from cryptography import x509

# Loaded here, before the event loop runs, not lazily when the first switch is enlisted: the
# import (python-ovs pulls in eventlet) took the loop 0.3 s on an idle machine and over 1 s on
# a busy one, long enough for the standby to miss the heartbeats and take over.
import hypetunnel.southbound.ovsdb.client  # noqa: F401
from hypetunnel.api.app import create_app
from hypetunnel.api.guards import Guards
from hypetunnel.api.ratelimit import RateLimit
from hypetunnel.api.tokens_bootstrap import ensure_bootstrap_token
from hypetunnel.controller.ha import HaConfig
from hypetunnel.controller.peertls import PeerTls
from hypetunnel.controller.runtime import Controller
from hypetunnel.errors import HypeTunnelError
from hypetunnel.pki import TlsConfig, reload_all, track
from hypetunnel.store import opening, schema
from hypetunnel.store.audit import AuditStore
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
    api_rate: float = RateLimit.rate  # requests/s per API caller (0: unlimited), see ratelimit
    api_burst: float = RateLimit.burst
    # Our identity on every control channel (OpenFlow, OVSDB, ...); None: all plain.
    tls: TlsConfig | None = None
    # HA with TLS: the certificate names (CN) of the pair's controllers, the only peers
    # accepted on the peer channel.
    peer_names: list[str] = field(default_factory=list)
    # Alarms (fcaps/): URLs every alarm change is POSTed to; how often flow tables are audited.
    webhooks: list[str] = field(default_factory=list)
    flow_audit_interval: float = 5.0
    usage_interval: float = 10.0  # accounting (accounting/): how often counters are read

    def guards(self) -> Guards:
        rate = RateLimit(rate=self.api_rate, burst=self.api_burst) if self.api_rate > 0 else None
        return Guards(rate=rate, node=self.node or "controller")


def reload_tls(tls: TlsConfig, uv: uvicorn.Config) -> None:
    """SIGHUP: every channel's TLS context loads our certificate, key and CA files again
    (later handshakes present the new certificate; no listener or connection restarts)."""
    if uv.loaded and isinstance(uv.ssl, ssl.SSLContext):  # made by uvicorn, not by us
        track(uv.ssl, tls.identity)
    try:
        n = reload_all(tls.identity)
    except HypeTunnelError as e:
        log.error("%s", e)
        return
    cert = x509.load_pem_x509_certificate(tls.identity.cert.read_bytes())
    log.info("TLS reloaded: %d contexts now present %s (serial %x)", n, tls.identity.cert,
             cert.serial_number)


def open_store(config: DaemonConfig) -> Store:
    try:
        return opening.open_store(config.state_dir, config.etcd, config.tls)
    except ValueError as e:  # e.g. an http:// endpoint while TLS is configured
        raise SystemExit(f"--etcd: {e}") from e


async def serve(config: DaemonConfig) -> None:
    if config.etcd and config.tls is not None and not config.peer_names:
        raise SystemExit("--etcd with --tls-dir needs --peer-name for every controller of the "
                         "pair (their certificates' CN)")
    store = open_store(config)
    try:  # before anything uses it: a store newer than this code is refused untouched
        schema.ensure(store)
    except BaseException:
        store.close()
        raise
    ha = None
    if config.etcd:
        if not (config.node and config.peer):
            raise SystemExit("--etcd needs --node and --peer (the HA pair)")
        peer_tls = None
        if config.tls is not None:
            peer_tls = PeerTls.from_identity(config.tls.identity, config.peer_names)
        ha = HaConfig(config.node, config.peer, api_url=config.api, tls=peer_tls)
    if config.tls is not None:
        from hypetunnel.southbound.ovsdb.tls import use_identity

        config.tls.identity.check()  # a missing file: one clear line before anything starts
        use_identity(config.tls.identity)
    controller = Controller(store, openflow_listen=config.openflow,
                            switch_targets=config.switch_targets, ha=ha, tls=config.tls,
                            webhooks=config.webhooks,
                            flow_audit_interval=config.flow_audit_interval,
                            usage_interval=config.usage_interval)
    await controller.start()
    # The audit log is written through the store itself, not the role's fenced view: a
    # standby records the writes it refuses too.
    app = create_app(controller.service, controller, guards=config.guards(),
                     audit_store=store if isinstance(store, AuditStore) else None)
    # The first admin token, once this controller may write and none exists in the store.
    bootstrap = asyncio.create_task(ensure_bootstrap_token(app.state.tokens, config.state_dir))
    # HTTPS with our certificate; clients authenticate with tokens, not certificates.
    cert, key = ((str(config.tls.identity.cert), str(config.tls.identity.key)) if config.tls
                 else (None, None))
    if config.api.startswith("unix:"):
        uv = uvicorn.Config(app, uds=config.api.removeprefix("unix:"), log_level="warning",
                            lifespan="off", ssl_certfile=cert, ssl_keyfile=key, log_config=None)
    else:
        host, _, port = config.api.rpartition(":")
        uv = uvicorn.Config(app, host=host or "127.0.0.1", port=int(port), log_level="warning",
                            lifespan="off", ssl_certfile=cert, ssl_keyfile=key, log_config=None)
    # log_config=None: uvicorn's records go through the root logger (logs.configure) like
    # ours, one format on one stream, instead of its own handlers on stderr.
    server = uvicorn.Server(uv)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    if config.tls is not None:
        loop.add_signal_handler(signal.SIGHUP, reload_tls, config.tls, uv)
    log.info("API on %s, OpenFlow on %s%s", config.api, ", ".join(config.openflow),
             f", HA node {config.node} (peer {config.peer})" if ha else "")
    try:
        await server.serve()
    finally:
        bootstrap.cancel()
        await controller.stop()
        trail = app.state.audit
        if trail is not None:  # the audit rows still queued (answers, requests, refusals)
            await asyncio.to_thread(trail.flush, 2.0)
        store.close()
