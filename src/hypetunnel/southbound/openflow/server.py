"""Passive OpenFlow listener: switches connect to us (`ovs-vsctl set-controller br-int ...`).

With a TLS context every listener speaks TLS only (OVS's `ssl:` targets; the `pssl:` of our
listen targets): a switch must present a certificate our CA signed, and its common name — the
hypervisor it is — is carried on the channel (`SwitchChannel.identity`) for whoever binds
connections to hypervisors. There is no plain listener then: a plain TCP client gets its
connection closed after a failed handshake, before any OpenFlow byte.

Each accepted connection is handshaken into a SwitchChannel and handed to `on_switch` in a
supervised task: its exceptions are logged, never lost, and a handler that fails closes its
channel. A handler that returns normally leaves the channel open (it may have handed it on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from hypetunnel.aio import reap
from hypetunnel.errors import SouthboundError
from hypetunnel.pki import certificate_serial, peer_common_name
from hypetunnel.southbound.openflow.channel import SwitchChannel

log = logging.getLogger(__name__)

# Many switches (or a scale test) connect at once after a controller restart.
BACKLOG = 4096

OnSwitch = Callable[[SwitchChannel], Awaitable[None]]


def parse_target(target: str, tls: bool = False) -> tuple[str, str, int]:
    """"tcp:HOST:PORT" -> ("tcp", host, port); "unix:/path" -> ("unix", path, 0); with `tls`
    also "ssl:"/"pssl:HOST:PORT" -> ("tcp", host, port) (the TLS is the listener's). Port 0
    asks for any free port (tests). Anything else raises SouthboundError saying what is
    accepted."""
    kind, _, rest = target.partition(":")
    if kind == "unix" and rest:
        return "unix", rest, 0
    if kind in ("ssl", "pssl") and not tls:
        raise SouthboundError(f"OpenFlow listen target {target!r}: {kind}: needs TLS "
                              "(--tls-dir); without it use tcp:HOST:PORT or unix:PATH")
    if kind in ("tcp", "ssl", "pssl"):
        host, _, port = rest.rpartition(":")
        if host and port.isdigit() and int(port) <= 65535:
            return "tcp", host.strip("[]"), int(port)
    also = ", ssl:HOST:PORT, pssl:HOST:PORT" if tls else ""
    raise SouthboundError(f"bad OpenFlow listen target {target!r}: "
                          f"expected tcp:HOST:PORT (port 0-65535){also} or unix:PATH")


class OpenFlowServer:
    def __init__(self, on_switch: OnSwitch, *, echo_interval: float = 1.0,
                 echo_timeout: float = 3.0, channel_options: dict[str, Any] | None = None,
                 ssl_context: ssl.SSLContext | None = None,
                 handshake_timeout: float = 10.0) -> None:
        """ssl_context: a server context that requires client certificates (pki), or None
        for plain listeners."""
        self.on_switch = on_switch
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self._channel_options = {"echo_interval": echo_interval, "echo_timeout": echo_timeout,
                                 **(channel_options or {})}
        self._servers: list[asyncio.Server] = []
        self._unix_paths: list[Path] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.channels: set[SwitchChannel] = set()

    async def listen(self, target: str) -> str:
        """Start listening; returns the printable address (tcp port resolved if 0 was asked)."""
        kind, where, port = parse_target(target, tls=self.ssl_context is not None)
        tls: dict[str, Any] = {}
        if self.ssl_context is not None:
            tls = {"ssl": self.ssl_context, "ssl_handshake_timeout": self.handshake_timeout}
        try:
            if kind == "unix":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(where)  # a stale socket from a crashed run would block bind
                server = await asyncio.start_unix_server(self._accept, path=where,
                                                         backlog=BACKLOG, **tls)
                self._unix_paths.append(Path(where))
            else:
                server = await asyncio.start_server(self._accept, host=where, port=port,
                                                    backlog=BACKLOG, **tls)
        except OSError as e:
            raise SouthboundError(f"cannot listen on {target}: {e}") from e
        self._servers.append(server)
        return self._describe(server)

    def _describe(self, server: asyncio.Server) -> str:
        out = []
        tcp = "pssl" if self.ssl_context is not None else "tcp"
        for sock in server.sockets:
            name = sock.getsockname()
            out.append(f"{tcp}:{name[0]}:{name[1]}" if isinstance(name, tuple)
                       else f"unix:{name}")
        return ",".join(out)

    @property
    def addresses(self) -> list[str]:
        return [self._describe(s) for s in self._servers]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        channel = SwitchChannel(reader, writer, **self._channel_options)
        if self.ssl_context is not None:
            # The handshake already required a certificate of our CA; its CN says who it is.
            tls = writer.get_extra_info("ssl_object")
            channel.identity = peer_common_name(tls)
            channel.certificate_serial = certificate_serial(tls)
            if not channel.identity:
                log.warning("rejected OpenFlow connection from %s: its certificate names no "
                            "common name", channel.peer)
                writer.close()
                return
        try:
            await channel.handshake()
        except SouthboundError as e:
            log.warning("rejected OpenFlow connection from %s: %s", channel.peer, e)
            await channel.close()
            return
        self.channels.add(channel)
        task = asyncio.create_task(self._supervise(channel),
                                   name=f"on_switch {channel.datapath_id:016x}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _supervise(self, channel: SwitchChannel) -> None:
        try:
            await self.on_switch(channel)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A failed handler leaves the switch in an unknown state: drop the connection so
            # the switch reconnects and a fresh handler starts from a resync.
            log.exception("switch handler for %r failed; closing its channel", channel)
            await channel.close()

    @property
    def switches(self) -> list[SwitchChannel]:
        """Channels that are currently connected (closed ones are pruned here)."""
        self.channels = {c for c in self.channels if c.is_ready()}
        return sorted(self.channels, key=lambda c: c.datapath_id or 0)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        for channel in list(self.channels):
            await channel.close()
        for task in list(self._tasks):
            await reap(task)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        for path in self._unix_paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._unix_paths.clear()
