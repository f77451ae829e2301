"""OpenFlow with identity: over TLS a switch is bound to the hypervisor its certificate names;
without TLS a second connection never silently takes a switch whose connection still answers.

In-process fake switches against the real controller runtime (fake OVSDB behind it).
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from hypetunnel.controller.runtime import Controller
from hypetunnel.controller.session import OpenFlowState
from hypetunnel.controller.switch import datapath_id_for
from hypetunnel.model.intent import VM, Hypervisor, Intent, Network, Tenant
from hypetunnel.pki import Identity, TlsConfig, client_context, issue
from hypetunnel.southbound.openflow import codec
from hypetunnel.southbound.openflow.fakeswitch import FakeSwitch
from hypetunnel.store.memory import MemoryStore
from tests.unit.controller_fakes import Fabric, running, until

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def socket() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="htt-"))  # unix socket paths are short
    try:
        yield root / "of.sock"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def intent() -> Intent:
    hvs = [Hypervisor.model_validate({"name": h, "underlay_ip": f"172.31.9.{i}",
                                      "ovsdb": f"unix:/fake/{h}.sock"})
           for i, h in enumerate(("hv1", "hv2"), start=1)]
    return Intent(hypervisors=hvs, tenants=[Tenant(
        name="acme", networks=[Network.model_validate({"name": "web", "cidr": "10.0.1.0/24"})],
        vms=[VM(name="web1", network="web", hypervisor="hv1"),
             VM(name="web2", network="web", hypervisor="hv2")])])


def tls_fabric(pki: Path) -> Fabric:
    fabric = Fabric("hv1", "hv2")
    for name, hv in fabric.hvs.items():
        hv.ssl_context = client_context(Identity.in_directory(pki, name))
    return fabric


async def converged(ctl: Controller, fabric: Fabric) -> None:
    await asyncio.to_thread(ctl.service.apply, intent())
    fabric.hvs["hv1"].plug("acme/web1")
    fabric.hvs["hv2"].plug("acme/web2")
    await until(lambda: ctl.status()["converged"] and all(
        hv.our_cookies() for hv in fabric.hvs.values()), "converged over TLS", timeout=10)


async def serve_once(switch: FakeSwitch, target: str, ctx: ssl.SSLContext | None) -> None:
    """One connection of `switch`, until the controller closes it (or 5 s pass)."""
    async with asyncio.timeout(5):
        await switch.connect(target, ctx)


def test_over_tls_each_switch_is_its_certificate_and_an_impostor_gets_no_flow(
        pki: Path, socket: Path) -> None:
    fabric = tls_fabric(pki)

    async def body() -> None:
        async with running(MemoryStore(), fabric, socket,
                           tls=TlsConfig(pki, "controller")) as ctl:
            await converged(ctl, fabric)
            assert ctl.switches["hv1"].channel is not None
            assert ctl.switches["hv1"].channel.identity == "hv1"
            real = ctl.switches["hv1"].channel
            # hv2's certificate, hv1's datapath id: dropped before any flow or role request.
            impostor = FakeSwitch(datapath_id_for("hv1"))
            await serve_once(impostor, f"unix:{socket}",
                             client_context(Identity.in_directory(pki, "hv2")))
            assert impostor.flow_mods == 0 and impostor.flows == {}
            assert impostor.received["multipart"] == 0 and impostor.received["barrier"] == 0
            assert ctl.switches.impostors == 1
            # ... and hv1's own connection was never replaced.
            assert ctl.switches["hv1"].channel is real and real.is_ready()
            assert ctl.status()["converged"]

    asyncio.run(body())


def test_over_tls_a_plain_client_and_another_ca_get_nothing(
        pki: Path, other_ca: Path, socket: Path) -> None:
    fabric = tls_fabric(pki)

    async def body() -> None:
        async with running(MemoryStore(), fabric, socket,
                           tls=TlsConfig(pki, "controller")) as ctl:
            await converged(ctl, fabric)
            # Plain: an OpenFlow HELLO in clear text is answered by nothing but a close.
            reader, writer = await asyncio.open_unix_connection(str(socket))
            writer.write(codec.hello_bytes())
            async with asyncio.timeout(5):
                try:
                    got = await reader.read()
                except ConnectionResetError:
                    got = b""  # reset instead of closed: still not a byte
            assert got == b""
            writer.close()
            # A certificate for "hv1" from another CA: the TLS handshake fails.
            stranger = FakeSwitch(datapath_id_for("hv1"))
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await serve_once(stranger, f"unix:{socket}",
                                 client_context(Identity.in_directory(other_ca, "hv1")))
            assert stranger.flow_mods == 0
            assert ctl.switches["hv1"].channel is not None
            assert ctl.switches["hv1"].channel.identity == "hv1"

    asyncio.run(body())


def test_over_tls_the_authenticated_switch_reconnecting_takes_over(
        pki: Path, socket: Path) -> None:
    """A rotated certificate (same name, new key): the switch's new connection is its own."""
    fabric = tls_fabric(pki)

    async def body() -> None:
        async with running(MemoryStore(), fabric, socket,
                           tls=TlsConfig(pki, "controller")) as ctl:
            await converged(ctl, fabric)
            old = ctl.switches["hv1"].channel
            rotated = tempfile.mkdtemp(prefix="htr-")
            try:
                for f in ("ca.crt", "ca.key"):
                    shutil.copy(pki / f, rotated)
                issue(Path(rotated), "hv1")
                hv1 = fabric.hvs["hv1"]
                hv1.ssl_context = client_context(Identity.in_directory(Path(rotated), "hv1"))
                await hv1.disconnect()
                mods = hv1.switch.flow_mods
                hv1.connect(socket)
                await until(lambda: ctl.switches["hv1"].channel not in (None, old)
                            and ctl.switches["hv1"].openflow_state is OpenFlowState.READY
                            and ctl.status()["converged"], "hv1 back")
                # Its flows were right: the reconnection re-read them and sent nothing.
                assert hv1.switch.flow_mods == mods
                channel = ctl.switches["hv1"].channel
                assert channel is not None and channel.identity == "hv1"
                assert channel.certificate_serial == x509.load_pem_x509_certificate(
                    (Path(rotated) / "hv1.crt").read_bytes()).serial_number
                assert old is not None and old.certificate_serial != channel.certificate_serial
            finally:
                shutil.rmtree(rotated, ignore_errors=True)

    asyncio.run(body())


def test_without_tls_a_second_connection_never_replaces_a_live_one(socket: Path) -> None:
    fabric = Fabric("hv1", "hv2")

    async def body() -> None:
        async with running(MemoryStore(), fabric, socket) as ctl:
            await converged(ctl, fabric)
            real = ctl.switches["hv1"].channel
            squatter = FakeSwitch(datapath_id_for("hv1"))
            await serve_once(squatter, f"unix:{socket}", None)
            assert squatter.flow_mods == 0 and squatter.received["multipart"] == 0
            assert ctl.switches["hv1"].channel is real and ctl.switches.impostors == 1
            # Once hv1's own connection is gone, a reconnection (the switch back) is taken.
            hv1 = fabric.hvs["hv1"]
            await hv1.disconnect()
            hv1.connect(socket)
            await until(lambda: ctl.switches["hv1"].channel not in (None, real)
                        and ctl.status()["converged"], "hv1 reconnected")

    asyncio.run(body())
