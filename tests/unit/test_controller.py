"""The controller runtime over fake OVSDB clients and in-process OpenFlow switches."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hypetunnel import __version__
from hypetunnel.controller.runtime import Controller
from hypetunnel.controller.session import Lifecycle, OpenFlowState, OvsdbState
from hypetunnel.errors import HypeTunnelError
from hypetunnel.model.intent import VM, Hypervisor, Intent, Network, Tenant
from hypetunnel.store.base import StoreUnavailable
from hypetunnel.store.memory import MemoryStore
from hypetunnel.store.schema import SCHEMA_VERSION
from tests.unit.controller_fakes import Fabric, running, until

pytestmark = pytest.mark.timeout(30)

UNDERLAY = {"hv1": "172.31.9.1", "hv2": "172.31.9.2", "hv3": "172.31.9.3"}


@pytest.fixture
def socket() -> Iterator[Path]:
    # Short: unix socket paths are limited to 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="htu-"))
    try:
        yield root / "of.sock"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def intent(vms: dict[str, str], hvs: tuple[str, ...] = ("hv1", "hv2", "hv3")) -> Intent:
    return Intent(
        hypervisors=[Hypervisor.model_validate({"name": h, "underlay_ip": UNDERLAY[h],
                                                "ovsdb": f"unix:/fake/{h}.sock"}) for h in hvs],
        tenants=[Tenant(name="acme",
                        networks=[Network.model_validate({"name": "web",
                                                          "cidr": "10.0.1.0/24"})],
                        vms=[VM(name=v, network="web", hypervisor=h) for v, h in vms.items()])])


async def ready(ctl: Controller, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while ctl.readiness():
        assert time.monotonic() < deadline, f"not ready after {timeout}s: {ctl.readiness()}"
        await asyncio.sleep(0.01)


def synced(ctl: Controller, fabric: Fabric) -> bool:
    """Every fake switch holds exactly the compiled flows and tunnel ports."""
    return all(
        sorted(hv.switch.cookies) == sorted(f.cookie for f in ctl.fabric.flows(name))
        and hv.tunnels == ctl.fabric.tunnels(name)
        for name, hv in fabric.hvs.items() if name in ctl.switches)


def test_flows_and_tunnels_follow_the_intent_and_the_bindings(socket: Path) -> None:
    fabric = Fabric("hv1", "hv2", "hv3")

    async def body() -> None:
        async with running(MemoryStore(), fabric, socket) as ctl:
            await asyncio.to_thread(ctl.service.apply, intent({"web1": "hv1", "web2": "hv2"}))
            await until(lambda: all(st.openflow_state is OpenFlowState.READY
                                    and st.ovsdb_state is OvsdbState.SYNCED
                                    for st in ctl.switches.values()), "sessions ready")
            fabric.hvs["hv1"].plug("acme/web1")
            fabric.hvs["hv2"].plug("acme/web2")
            await until(lambda: ctl.status()["converged"] and synced(ctl, fabric), "converged")
            # hv1 and hv2 share "web": one tunnel each way; hv3 hosts nothing.
            assert [t.remote_hypervisor for t in fabric.hvs["hv1"].tunnels] == ["hv2"]
            assert [t.remote_hypervisor for t in fabric.hvs["hv2"].tunnels] == ["hv1"]
            assert fabric.hvs["hv3"].tunnels == frozenset()
            assert ctl.bindings() == {"acme/web1": "hv1", "acme/web2": "hv2"}
            assert ctl.readiness() == []
            # The bridge was made ours with the stable datapath id.
            [client] = fabric.hvs["hv1"].clients
            assert client.bridge_calls[0]["datapath_id"] == ctl.switches["hv1"].datapath_id

            # Nothing changed: a kick sends no flow mod at all.
            mods = {n: hv.switch.flow_mods for n, hv in fabric.hvs.items()}
            ctl.kick()
            await until(lambda: not ctl.switches.busy(), "idle")
            assert {n: hv.switch.flow_mods for n, hv in fabric.hvs.items()} == mods

    asyncio.run(body())


def test_converged_needs_every_intended_vm_bound(socket: Path) -> None:
    fabric = Fabric("hv1", "hv2", "hv3")

    async def body() -> None:
        async with running(MemoryStore(), fabric, socket) as ctl:
            ctl.service.apply(intent({"web1": "hv1", "web2": "hv2"}))
            fabric.hvs["hv1"].plug("acme/web1")
            await until(lambda: synced(ctl, fabric) and ctl.status()["vms"]["bound"] == 1
                        and all(s["converged"] for s in ctl.status()["switches"]),
                        "every switch converged")
            status = ctl.status()
            assert status["vms"] == {"total": 2, "bound": 1}
            assert status["converged"] is False  # web2 is not plugged anywhere yet
            fabric.hvs["hv2"].plug("acme/web2")
            await until(lambda: ctl.status()["converged"], "converged with web2 bound")

    asyncio.run(body())


def test_a_retired_hypervisor_is_cleaned_then_forgotten(socket: Path) -> None:
    fabric = Fabric("hv1", "hv2", "hv3")
    hv3 = fabric.hvs["hv3"]

    async def body() -> None:
        async with running(MemoryStore(), fabric, socket) as ctl:
            ctl.service.apply(intent({"web1": "hv1", "web3": "hv3"}))
            fabric.hvs["hv1"].plug("acme/web1")
            hv3.plug("acme/web3")
            await until(lambda: ctl.status()["converged"] and synced(ctl, fabric), "converged")
            assert hv3.tunnels and len(hv3.our_cookies()) > 2
            session = ctl.switches["hv3"]

            # The VM goes, then the hypervisor leaves the intent.
            hv3.unplug("acme/web3")
            ctl.service.delete_vm("acme", "web3")
            ctl.service.delete_hypervisor("hv3")
            await until(lambda: session.lifecycle is Lifecycle.RETIRED, "hv3 retired")
            await until(lambda: not ctl.switches.retiring, "hv3 forgotten")
            assert hv3.our_cookies() == [] and hv3.tunnels == frozenset()
            assert all(c.stopped for c in hv3.clients)
            assert "hv3" not in ctl.switches and "hv3" not in ctl.status()["controller"][
                "retiring"]
            # Its switch keeps reconnecting, as OVS does: refused now, and never programmed.
            mods = hv3.switch.flow_mods
            attempts = hv3.start_attempts
            await asyncio.sleep(0.3)  # a window in which a forgotten switch must stay untouched
            assert hv3.switch.flow_mods == mods and hv3.start_attempts == attempts
            await until(lambda: synced(ctl, fabric), "the others still converge")

    asyncio.run(body())


def test_a_hypervisor_enlisted_again_while_retiring_serves_again(socket: Path) -> None:
    fabric = Fabric("hv1", "hv2")

    async def body() -> None:
        async with running(MemoryStore(), fabric, socket) as ctl:
            ctl.service.apply(intent({"web1": "hv1"}, hvs=("hv1", "hv2")))
            fabric.hvs["hv1"].plug("acme/web1")
            await until(lambda: ctl.status()["converged"] and synced(ctl, fabric), "converged")
            hv2 = ctl.service.intent.hypervisor("hv2")
            assert hv2 is not None
            ctl.service.delete_hypervisor("hv2")
            ctl.service.upsert_hypervisor(hv2)  # back before its retirement is over
            await until(lambda: "hv2" in ctl.switches and not ctl.switches.retiring,
                        "hv2 enlisted, nothing retiring")
            assert ctl.switches["hv2"].lifecycle is Lifecycle.SERVING
            await until(lambda: ctl.status()["converged"] and synced(ctl, fabric),
                        "converged again, hv2 included")
            assert len(fabric.hvs["hv2"].our_cookies()) >= 2

    asyncio.run(body())


def test_a_deleted_unreachable_hypervisor_is_no_longer_polled(socket: Path) -> None:
    fabric = Fabric("hv1", "hv2")
    fabric.hvs["hv2"].reachable = False

    async def body() -> None:
        async with running(MemoryStore(), fabric, socket, retire_timeout=0.3) as ctl:
            ctl.service.apply(intent({}, hvs=("hv1", "hv2")))
            await until(lambda: fabric.hvs["hv2"].start_attempts >= 2, "hv2 polled")
            await until(lambda: "switches not synced: hv2" in ctl.readiness(),
                        "hv1 synced, hv2 reported not synced")
            ctl.service.delete_hypervisor("hv2")
            await until(lambda: not ctl.switches.retiring and "hv2" not in ctl.switches,
                        "hv2 forgotten")
            attempts = fabric.hvs["hv2"].start_attempts
            await asyncio.sleep(0.3)  # polling ran every 20 ms before: none may follow
            assert fabric.hvs["hv2"].start_attempts == attempts

    asyncio.run(body())


def test_a_failed_apply_is_retried_and_the_controller_is_not_ready_meanwhile(
        socket: Path) -> None:
    fabric = Fabric("hv1")

    async def body() -> None:
        async with running(MemoryStore(), fabric, socket) as ctl:
            ctl.service.apply(intent({}, hvs=("hv1",)))
            await ready(ctl)
            real = ctl.fabric.apply_intent
            failures = []

            def broken(new: Intent) -> None:
                failures.append(time.monotonic())
                raise RuntimeError("injected failure")

            ctl.fabric.apply_intent = broken  # type: ignore[method-assign]
            ctl.service.create_vm("acme", VM(name="web1", network="web", hypervisor="hv1"))
            await until(lambda: len(failures) >= 2, "the apply retried")
            [reason] = [r for r in ctl.readiness() if "not applied" in r]
            assert f"revision {ctl.service.revision}" in reason and "injected failure" in reason
            assert ctl.follower.applied_revision == ctl.service.revision - 1
            assert "acme/web1" not in ctl.fabric.topology.vms

            ctl.fabric.apply_intent = real  # type: ignore[method-assign]
            await until(lambda: ctl.follower.applied_revision == ctl.service.revision, "caught up")
            assert "acme/web1" in ctl.fabric.topology.vms
            await ready(ctl)

    asyncio.run(body())


class FlakyStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def revision(self) -> int:
        if self.down:
            raise StoreUnavailable("injected: the store is down")
        return super().revision()


def test_readiness_names_an_unreachable_store_and_a_late_loop(socket: Path) -> None:
    fabric = Fabric("hv1")
    store = FlakyStore()

    async def body() -> None:
        async with running(store, fabric, socket, store_probe_interval=0.05) as ctl:
            ctl.service.apply(intent({}, hvs=("hv1",)))
            await ready(ctl)
            store.down = True
            await until(lambda: any("store unreachable" in r for r in ctl.readiness()),
                        "store reported unreachable")
            store.down = False
            await ready(ctl)
            time.sleep(0.7)  # block the loop on purpose: the lag meter must notice
            assert any("event loop lag" in r for r in ctl.readiness())
            await ready(ctl)

    asyncio.run(body())


def test_another_writer_is_caught_up_with_through_the_store_revision(socket: Path) -> None:
    """SQLite has no watch: a commit by another process is found by the revision probe."""
    fabric = Fabric("hv1")
    store = MemoryStore()

    async def body() -> None:
        async with running(store, fabric, socket, store_probe_interval=0.05) as ctl:
            ctl.service.apply(intent({}, hvs=("hv1",)))
            from hypetunnel.controller.service import FabricService

            other = FabricService(store)
            other.create_vm("acme", VM(name="web9", network="web", hypervisor="hv1"))
            await until(lambda: "acme/web9" in ctl.fabric.topology.vms, "other write applied")
            assert ctl.follower.applied_revision == store.revision()

    asyncio.run(body())


def test_ha_needs_a_store_with_an_election() -> None:
    from hypetunnel.controller.ha import HaConfig

    with pytest.raises(ValueError, match="needs a store with an election"):
        Controller(MemoryStore(), openflow_listen=[], ha=HaConfig("ctl1", "127.0.0.1:1"))
    assert issubclass(StoreUnavailable, HypeTunnelError)


def test_an_ha_controller_programs_only_while_it_holds_the_term(socket: Path) -> None:
    import socket as sockets

    from hypetunnel.controller.ha import HaConfig, NotActive
    from tests.unit.controller_fakes import HaMemoryStore

    with sockets.socket() as s:
        s.bind(("127.0.0.1", 0))
        peer = f"127.0.0.1:{s.getsockname()[1]}"
    fabric = Fabric("hv1", "hv2")
    store = HaMemoryStore()
    config = HaConfig("ctl1", peer, heartbeat_interval=0.02, term_check_interval=0.05)

    async def body() -> None:
        async with running(store, fabric, socket, ha=config) as ctl:
            await until(lambda: ctl.status()["controller"]["role"] == "active", "active")
            assert ctl.status()["controller"]["term"] == 1
            # What a rolling upgrade waits for on each member: the version it runs.
            assert (ctl.status()["controller"]["version"],
                    ctl.status()["controller"]["store_schema"]) == (__version__, SCHEMA_VERSION)
            await asyncio.to_thread(ctl.service.apply, intent({"web1": "hv1", "web2": "hv2"},
                                                              hvs=("hv1", "hv2")))
            fabric.hvs["hv1"].plug("acme/web1")
            fabric.hvs["hv2"].plug("acme/web2")
            await until(lambda: ctl.status()["converged"] and synced(ctl, fabric), "converged")
            assert all(hv.switch.generation_id == 1 for hv in fabric.hvs.values())
            await ready(ctl)

            # The other controller of the pair wins term 2 and sends heartbeats.
            async def heartbeats(reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
                with contextlib.suppress(OSError):
                    while True:
                        writer.write(b"hb ctl2 2\n")
                        await asyncio.sleep(0.02)

            ctl2 = await asyncio.start_server(heartbeats, "127.0.0.1", 0)
            ctl2_peer = f"127.0.0.1:{ctl2.sockets[0].getsockname()[1]}"
            assert store.claim_term(1, "ctl2", {"api": "http://ctl2", "peer": ctl2_peer})
            await until(lambda: ctl.status()["controller"]["role"] == "standby", "standby")
            await until(lambda: all(hv.switch.role == 3 for hv in fabric.hvs.values()),
                        "every switch told we are SLAVE")  # OFPCR_ROLE_SLAVE
            with pytest.raises(NotActive, match="ctl2"):
                await asyncio.to_thread(ctl.service.delete_vm, "acme", "web2")
            mods = {n: hv.switch.flow_mods for n, hv in fabric.hvs.items()}
            fabric.hvs["hv1"].unplug("acme/web1")  # a change a standby must not program
            await until(lambda: "acme/web1" not in ctl.bindings(), "standby saw the unplug")
            await until(lambda: not ctl.switches.busy(), "idle")
            assert {n: hv.switch.flow_mods for n, hv in fabric.hvs.items()} == mods
            assert ctl.status()["controller"]["term"] == 2
            ctl2.close()

    asyncio.run(body())


def test_a_round_refused_for_a_lapse_too_short_to_see_is_programmed_after_it(
        socket: Path) -> None:
    """The lease lapses for one instant: the round that checks at that instant is skipped, and
    nothing else would ever notice the lapse (the lease reads held before and after). The
    skipped round still goes out, and the switch gets the change without any further one."""
    import socket as sockets

    from hypetunnel.controller.ha import HaConfig
    from tests.unit.controller_fakes import HaMemoryStore

    with sockets.socket() as s:
        s.bind(("127.0.0.1", 0))
        peer = f"127.0.0.1:{s.getsockname()[1]}"
    fabric = Fabric("hv1", "hv2")
    config = HaConfig("ctl1", peer, heartbeat_interval=0.02, term_check_interval=0.05)

    async def body() -> None:
        async with running(HaMemoryStore(), fabric, socket, ha=config) as ctl:
            await until(lambda: ctl.status()["controller"]["role"] == "active", "active")
            hvs = ("hv1", "hv2")
            await asyncio.to_thread(ctl.service.apply, intent({"web1": "hv1"}, hvs=hvs))
            fabric.hvs["hv1"].plug("acme/web1")
            await until(lambda: ctl.status()["converged"] and synced(ctl, fabric), "converged")
            allowed = ctl.switches._may_program
            refusals: list[str] = []

            def once_refused() -> bool:  # what the rounds see; the runtime's own view is held
                if not refusals:
                    refusals.append("refused")
                    return False
                return allowed()

            ctl.switches._may_program = once_refused  # type: ignore[method-assign]
            mods = {n: hv.switch.flow_mods for n, hv in fabric.hvs.items()}
            await asyncio.to_thread(ctl.service.apply,
                                    intent({"web1": "hv1", "web2": "hv2"}, hvs=hvs))
            fabric.hvs["hv2"].plug("acme/web2")
            await until(lambda: ctl.status()["converged"] and synced(ctl, fabric),
                        "the skipped round programmed")
            assert refusals == ["refused"]
            assert {n: hv.switch.flow_mods for n, hv in fabric.hvs.items()} != mods

    asyncio.run(body())


class SlowStore(MemoryStore):
    """A store whose every read and write takes `delay` seconds (etcd with a stuck leader)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = 0.0
        self.slow = delay

    def load(self) -> Any:
        time.sleep(self.delay)
        return super().load()

    def commit(self, *args: Any, **kwargs: Any) -> int:
        time.sleep(self.delay)
        return super().commit(*args, **kwargs)

    def revision(self) -> int:
        time.sleep(self.delay)
        return super().revision()


def test_a_slow_store_never_holds_up_the_event_loop(socket: Path) -> None:
    """Reloads, the store probe, moves and drains all wait for the store in threads: the loop
    (heartbeats, switch channels) stays on time while each store call takes 0.8 s. A store call
    on the loop would stall it by those 0.8 s; the bound leaves room for a loaded machine."""
    fabric = Fabric("hv1", "hv2")
    store = SlowStore(0.8)

    async def body() -> None:
        async with running(store, fabric, socket, store_probe_interval=0.05) as ctl:
            ctl.service.apply(intent({"web1": "hv1"}, hvs=("hv1", "hv2")))
            fabric.hvs["hv1"].plug("acme/web1")
            await until(lambda: ctl.status()["converged"], "converged")
            store.delay = store.slow
            worst = 0.0
            t0 = time.monotonic()
            move = asyncio.ensure_future(ctl.move("acme/web1", "hv2"))
            ctl._refresh_soon()  # what the etcd watch does on a change
            while time.monotonic() - t0 < 2.0:
                before = time.monotonic()
                await asyncio.sleep(0.01)
                worst = max(worst, time.monotonic() - before - 0.01)
            rec = await move
            assert rec["to"] == "hv2"
            assert worst < 0.25, f"the loop stalled {worst * 1000:.0f} ms"
            store.delay = 0.0

    asyncio.run(body())


def test_a_slow_takeover_neither_silences_heartbeats_nor_programs_early(socket: Path) -> None:
    """Taking every switch can take long (many switches): the heartbeats the standby watches
    start at once all the same, and no switch is programmed before it is held as MASTER."""
    import socket as sockets

    from hypetunnel.controller.ha import HaConfig
    from tests.unit.controller_fakes import HaMemoryStore

    with sockets.socket() as s:
        s.bind(("127.0.0.1", 0))
        peer = f"127.0.0.1:{s.getsockname()[1]}"
    fabric = Fabric("hv1")
    config = HaConfig("ctl1", peer, heartbeat_interval=0.02, heartbeat_timeout=0.5)
    release = asyncio.Event()

    async def body() -> None:
        async with running(HaMemoryStore(), fabric, socket, ha=config) as ctl:
            real_take_all = ctl.switches.take_all

            async def slow_take_all(term: int) -> None:
                await release.wait()
                await real_take_all(term)

            ctl.switches.take_all = slow_take_all  # type: ignore[method-assign]
            await until(lambda: ctl.status()["controller"]["role"] == "active", "active")
            await asyncio.to_thread(ctl.service.apply, intent({}, hvs=("hv1",)))
            await until(lambda: ctl.switches["hv1"].openflow_ready and ctl.startup_done,
                        "hv1 connected, startup over")
            reader, writer = await asyncio.open_connection(*peer.split(":"))
            try:
                gaps = []
                last = time.monotonic()
                for _ in range(40):  # ~0.8 s of heartbeats while the takeover is stuck
                    line = await asyncio.wait_for(reader.readline(), 1.0)
                    assert line.startswith(b"hb ctl1 1"), line
                    now = time.monotonic()
                    gaps.append(now - last)
                    last = now
                assert max(gaps[1:]) < config.heartbeat_timeout, max(gaps[1:])
                assert any("taking over the switches" in r for r in ctl.readiness())
                assert fabric.hvs["hv1"].switch.flow_mods == 0
                release.set()
                await until(lambda: fabric.hvs["hv1"].switch.flow_mods > 0,
                            "programmed once taken")
                assert fabric.hvs["hv1"].switch.generation_id == 1
            finally:
                writer.close()

    asyncio.run(body())


def test_a_port_is_marked_installed_only_once_every_host_of_its_network_converged(
        socket: Path) -> None:
    """Compute switches a moving VM over when the mark appears (OVN's ovn-installed): by then
    the port's own switch and every peer of its network hold flows that know the port."""
    fabric = Fabric("hv1", "hv2", "hv3")

    async def body() -> None:
        async with running(MemoryStore(), fabric, socket) as ctl:
            await asyncio.to_thread(ctl.service.apply, intent({"web1": "hv1", "web2": "hv2"}))
            fabric.hvs["hv1"].plug("acme/web1")
            fabric.hvs["hv2"].plug("acme/web2")
            await until(lambda: ctl.status()["converged"], "converged")
            await until(lambda: fabric.hvs["hv2"].installed == {"t-acme/web2"}, "web2 marked")
            # A hot move to hv3: hv2's copy stays marked, hv3's new port waits for its mark
            # until hv3 and its peers hold flows delivering to it.
            await asyncio.to_thread(ctl.service.apply, intent({"web1": "hv1", "web2": "hv3"}))
            at_mark: list[bool] = []
            fabric.hvs["hv3"].on_mark = lambda ports: at_mark.append(
                "t-acme/web2" in ports and synced(ctl, fabric))
            fabric.hvs["hv3"].plug("acme/web2")
            await until(lambda: "t-acme/web2" in fabric.hvs["hv3"].installed, "hv3's port marked")
            # At that moment every switch held exactly its desired flows and tunnels, those
            # compiled with the new port (hv1 sends to both copies while both are live).
            assert at_mark == [True]
            assert "hv3" in {t.remote_hypervisor for t in fabric.hvs["hv1"].tunnels}

    asyncio.run(body())
