"""The HA peer channel over mutual TLS: only the pair's controllers get (or give) heartbeats.

Real TLS handshakes on 127.0.0.1 with certificates issued by hypetunnel.pki in a temporary
directory; the election runs on the in-memory term store of test_election.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypetunnel.controller.ha import Election, HaConfig, Role
from hypetunnel.controller.peertls import PeerTls
from hypetunnel.pki import Identity, client_context, init_ca, issue, server_context
from tests.unit.test_election import FakeTerms, until

PAIR = ("ctl1", "ctl2")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    init_ca(d)
    for name in (*PAIR, "hv1"):
        issue(d, name, ips=["127.0.0.1"])
    return d


@pytest.fixture(scope="module")
def foreign_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another CA that also issued a certificate named ctl2."""
    d = tmp_path_factory.mktemp("foreign")
    init_ca(d)
    issue(d, "ctl2", ips=["127.0.0.1"])
    return d


def peer_tls(pki: Path, name: str) -> PeerTls:
    return PeerTls.from_identity(Identity.in_directory(pki, name), PAIR)


class TlsNode:
    def __init__(self, name: str, terms: FakeTerms, tls: PeerTls) -> None:
        config = HaConfig(name, "127.0.0.1:0", heartbeat_interval=0.02, heartbeat_timeout=0.5,
                          term_check_interval=0.05, tls=tls)
        self.election = Election(terms, config, on_active=self._noop, on_standby=self._noop)
        self.task: asyncio.Task[None] | None = None

    async def _noop(self, term: int) -> None:
        pass

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.election.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await self.task

    @property
    def port(self) -> int:
        return int(self.election.config.peer_listen.rpartition(":")[2])


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.WARNING, logger="hypetunnel.controller.ha"):
        yield caplog


async def _pair(pki: Path) -> tuple[FakeTerms, TlsNode, TlsNode]:
    terms = FakeTerms()
    a = TlsNode("ctl1", terms, peer_tls(pki, "ctl1"))
    a.start()
    await until(lambda: a.election.role is Role.ACTIVE)
    b = TlsNode("ctl2", terms, peer_tls(pki, "ctl2"))
    b.start()
    await until(lambda: a.election.describe()["standbys_connected"] == 1)
    return terms, a, b


async def _heartbeats_to(port: int, ctx: ssl.SSLContext | None) -> bytes:
    """What the active sends a client that connects with `ctx` (None: plain TCP) within 0.3 s:
    b"" when it drops the connection (or the handshake fails)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    except (OSError, ssl.SSLError):
        return b""
    try:
        async with asyncio.timeout(0.3):
            return await reader.read(100)
    except (TimeoutError, OSError):
        return b""
    finally:
        writer.close()


def test_the_pair_elects_and_takes_over_over_tls(pki: Path) -> None:
    async def main() -> None:
        _, a, b = await _pair(pki)
        assert b.election.role is Role.STANDBY
        await a.stop()  # a kill closes the TLS connection: seen at once
        await until(lambda: b.election.role is Role.ACTIVE, timeout=2)
        assert b.election.term == 2
        await b.stop()

    asyncio.run(main())


def test_a_controller_certificate_gets_heartbeats(pki: Path) -> None:
    async def main() -> None:
        _, a, b = await _pair(pki)
        got = await _heartbeats_to(a.port, client_context(Identity.in_directory(pki, "ctl2")))
        assert got.startswith(b"hb ctl1 1\n")
        await b.stop()
        await a.stop()

    asyncio.run(main())


@pytest.mark.parametrize("who", ["hypervisor", "other CA", "no certificate", "plain TCP"])
def test_anyone_else_on_the_peer_port_is_logged_and_dropped(
        pki: Path, foreign_pki: Path, who: str, warnings: pytest.LogCaptureFixture) -> None:
    contexts = {
        "hypervisor": lambda: client_context(Identity.in_directory(pki, "hv1")),
        "other CA": lambda: _trusting(client_context(Identity.in_directory(foreign_pki, "ctl2")),
                                      pki),
        "no certificate": lambda: _trusting(ssl.create_default_context(), pki),
        "plain TCP": lambda: None,
    }

    async def main() -> None:
        _, a, b = await _pair(pki)
        ctx = contexts[who]()
        assert await _heartbeats_to(a.port, ctx) == b""
        await until(lambda: "peer channel" in warnings.text)
        assert a.election.role is Role.ACTIVE and a.election.term == 1
        assert a.election.describe()["standbys_connected"] == 1  # the real standby stays
        await b.stop()
        await a.stop()

    asyncio.run(main())
    # Plain TCP: a timeout or a reset, whichever the silent client causes first.
    expected = "not a controller of this pair" if who == "hypervisor" else "TLS handshake"
    assert expected in warnings.text, warnings.text


def _trusting(ctx: ssl.SSLContext, pki: Path) -> ssl.SSLContext:
    """A client context that accepts our server (so only its own certificate is on trial)."""
    ctx.load_verify_locations(str(pki / "ca.crt"))
    ctx.check_hostname = False
    return ctx


def test_a_standby_does_not_follow_an_impostor_at_the_active_address(
        pki: Path, warnings: pytest.LogCaptureFixture) -> None:
    """A hypervisor's certificate serving at the leader record's peer address is no active: the
    standby refuses it, as it would an unreachable active, and claims the next term."""
    async def main() -> None:
        impostor_ctx = server_context(Identity.in_directory(pki, "hv1"))

        async def beat(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"hb ctl1 1\n")
            await writer.drain()

        server = await asyncio.start_server(beat, "127.0.0.1", 0, ssl=impostor_ctx)
        port = server.sockets[0].getsockname()[1]
        terms = FakeTerms()
        terms.claim_term(0, "ctl1", {"peer": f"127.0.0.1:{port}", "api": None})
        b = TlsNode("ctl2", terms, peer_tls(pki, "ctl2"))
        b.start()
        await until(lambda: b.election.role is Role.ACTIVE, timeout=3)
        assert b.election.term == 2
        await b.stop()
        server.close()

    asyncio.run(main())
    assert "not the active controller" in warnings.text and "'hv1'" in warnings.text


def test_peer_tls_needs_the_pair_names(pki: Path) -> None:
    with pytest.raises(ValueError, match="--peer-name"):
        PeerTls.from_identity(Identity.in_directory(pki, "ctl1"), [])


def test_a_reset_connection_to_the_active_is_a_lost_active_not_a_crash() -> None:
    """A reset (or a broken TLS record) while reading heartbeats raises instead of reading EOF;
    the standby must treat it as the active gone and claim, not let its election task die."""
    async def main() -> None:
        async def beat_then_reset(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"hb ctl1 1\n")
            await writer.drain()
            await asyncio.sleep(0.1)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # linger 0: an RST, not a FIN

        server = await asyncio.start_server(beat_then_reset, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        terms = FakeTerms()
        terms.claim_term(0, "ctl1", {"peer": f"127.0.0.1:{port}", "api": None})
        config = HaConfig("ctl2", "127.0.0.1:0", heartbeat_interval=0.02, heartbeat_timeout=5,
                          term_check_interval=0.05)

        async def noop(term: int) -> None:
            pass

        election = Election(terms, config, on_active=noop, on_standby=noop)
        task = asyncio.get_running_loop().create_task(election.run())
        await until(lambda: election.role is Role.ACTIVE or task.done(), timeout=3)
        assert not task.done(), task.exception()
        assert election.term == 2  # well before the 5 s heartbeat timeout
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        server.close()

    asyncio.run(main())


@pytest.mark.parametrize(("etcd", "peer_names", "message"), [
    ("https://127.0.0.1:9", [], "--peer-name"),
    ("http://127.0.0.1:9", ["ctl1", "ctl2"], "--etcd: etcd endpoint 'http://127.0.0.1:9': TLS"),
])
def test_the_daemon_refuses_an_ha_tls_setup_it_cannot_secure(
        pki: Path, tmp_path: Path, etcd: str, peer_names: list[str], message: str) -> None:
    """Before anything listens: no peer names (anyone with a CA certificate would do), or a
    plain etcd endpoint while TLS is configured."""
    from hypetunnel.daemon import DaemonConfig, serve
    from hypetunnel.pki import TlsConfig

    config = DaemonConfig(state_dir=tmp_path, etcd=[etcd], node="ctl1", peer="127.0.0.1:0",
                          tls=TlsConfig(pki, "ctl1"), peer_names=peer_names)
    with pytest.raises(SystemExit, match=message):
        asyncio.run(serve(config))
