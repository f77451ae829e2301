"""Fakes behind the controller's southbound: an in-memory OVSDB per hypervisor, and in-process
OpenFlow switches (southbound.openflow.fakeswitch) that connect to the controller's real
listener over a unix socket. The controller runs unchanged on top of them."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from hypetunnel.aio import cancel_and_wait
from hypetunnel.compiler.tunnels import TunnelPort
from hypetunnel.controller.runtime import Controller
from hypetunnel.controller.switch import datapath_id_for
from hypetunnel.errors import SouthboundError
from hypetunnel.southbound.observation import (
    BfdStatus,
    PortInfo,
    SwitchObservation,
    UnderlayLink,
)
from hypetunnel.southbound.openflow.fakeswitch import FakeSwitch
from hypetunnel.store.base import Store
from hypetunnel.store.memory import MemoryStore

BRIDGE = "br-int"


class FakeOvsdb:
    """One hypervisor's OVSDB as the controller sees it (the OvsdbPort protocol)."""

    def __init__(self, hv: Hypervisor, endpoint: str,
                 on_change: Callable[[SwitchObservation], None],
                 on_connection: Callable[[bool], None],
                 on_health: Callable[[], None] = lambda: None) -> None:
        self.hv = hv
        self.endpoint = endpoint
        self._on_change = on_change
        self._on_connection = on_connection
        self.on_health = on_health  # a test that changes hv.bfd may call it, as OVSDB would
        self.connected = False
        self.stopped = False
        self.bridge_calls: list[dict[str, Any]] = []

    @property
    def observation(self) -> SwitchObservation | None:
        return self.hv.snapshot() if self.connected else None

    @property
    def bfd(self) -> Mapping[str, BfdStatus]:
        return dict(self.hv.bfd) if self.connected else {}

    @property
    def underlay(self) -> UnderlayLink | None:
        return self.hv.underlay if self.connected else None

    async def start(self, timeout: float = 10.0) -> None:
        self.hv.start_attempts += 1
        if not self.hv.reachable:
            await asyncio.sleep(min(timeout, 0.02))
            raise SouthboundError(f"{self.hv.name}: OVSDB {self.endpoint} not reachable")
        self.connected = True
        self._on_connection(True)
        self._on_change(self.hv.snapshot())

    async def stop(self) -> None:
        self.stopped = True
        self.connected = False

    async def ensure_tunnels(self, desired: frozenset[TunnelPort]) -> bool:
        self._check()
        if desired == self.hv.tunnels:
            return False
        self.hv.tunnels = frozenset(desired)
        self.hv.changed()
        return True

    async def mark_installed(self, ports: dict[str, str]) -> bool:
        self._check()
        new = {p for p, vm in ports.items()
               if p == f"t-{vm}" and vm in self.hv.vm_ports} - self.hv.installed
        self.hv.installed |= new
        if new and self.hv.on_mark is not None:
            self.hv.on_mark(new)
        if new:
            self.hv.changed()
        return bool(new)

    async def ensure_bridge(self, *, datapath_type: str, controller_targets: list[str],
                            datapath_id: int | None = None) -> bool:
        self._check()
        self.bridge_calls.append({"datapath_type": datapath_type, "datapath_id": datapath_id})
        return True

    def _check(self) -> None:
        if self.stopped or not self.connected:
            raise SouthboundError(f"{self.hv.name}: OVSDB not connected")

    def report(self) -> None:
        if self.connected and not self.stopped:
            self._on_change(self.hv.snapshot())


class Hypervisor:
    """A fake hypervisor: its br-int ports and tunnel ports, its OVSDB clients, its switch."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.reachable = True
        self.start_attempts = 0
        self.vm_ports: dict[str, int] = {}  # vm id -> ofport
        self.installed: set[str] = set()  # ports the controller marked installed
        self.on_mark: Callable[[set[str]], None] | None = None  # sees each mark as it lands
        self.tunnels: frozenset[TunnelPort] = frozenset()
        self.bfd: dict[str, BfdStatus] = {}  # tunnel port name -> its BFD session
        self.underlay: UnderlayLink | None = None  # the underlay bridge's narrowest link
        self.clients: list[FakeOvsdb] = []
        self.switch = FakeSwitch(datapath_id_for(name))
        self.ssl_context: ssl.SSLContext | None = None  # connect over TLS with this identity
        self._switch_task: asyncio.Task[None] | None = None

    def snapshot(self) -> SwitchObservation:
        ports = {f"t-{vid}": PortInfo(f"t-{vid}", ofport, iface_id=vid,
                                      installed=f"t-{vid}" in self.installed)
                 for vid, ofport in self.vm_ports.items()}
        for i, t in enumerate(sorted(self.tunnels), start=100):
            ports[t.name] = PortInfo(t.name, i)
        return SwitchObservation(self.name, BRIDGE, datapath_id_for(self.name), ports,
                                 self.tunnels)

    def changed(self) -> None:
        for c in self.clients:
            c.report()

    def plug(self, vm: str) -> None:
        self.vm_ports[vm] = 10 + len(self.vm_ports)
        self.changed()

    def unplug(self, vm: str) -> None:
        self.vm_ports.pop(vm, None)
        self.installed.discard(f"t-{vm}")
        self.changed()

    def connect(self, socket: Path) -> None:
        self._switch_task = asyncio.get_running_loop().create_task(
            self._serve(socket), name=f"fake-switch-{self.name}")

    async def _serve(self, socket: Path) -> None:
        # Like ovs-vswitchd: reconnect whenever the connection ends.
        while True:
            with contextlib.suppress(OSError):
                await self.switch.connect(f"unix:{socket}", self.ssl_context)
            await asyncio.sleep(0.05)

    async def disconnect(self) -> None:
        if self._switch_task is not None:
            await cancel_and_wait(self._switch_task)

    def our_cookies(self) -> list[int]:
        return [c for c in self.switch.cookies if c >> 48 == 0x4854]


class Fabric:
    """Fake hypervisors by name, and the factory the controller makes OVSDB clients with."""

    def __init__(self, *names: str) -> None:
        self.hvs = {n: Hypervisor(n) for n in names}

    def ovsdb(self, hypervisor: str, endpoint: str, bridge: str,
              on_change: Callable[[SwitchObservation], None],
              on_connection: Callable[[bool], None],
              on_health: Callable[[], None]) -> FakeOvsdb:
        client = FakeOvsdb(self.hvs[hypervisor], endpoint, on_change, on_connection,
                           on_health)
        self.hvs[hypervisor].clients.append(client)
        return client


@contextlib.asynccontextmanager
async def running(store: Store, fabric: Fabric, socket: Path,
                  **options: Any) -> AsyncIterator[Controller]:
    ctl = Controller(store, openflow_listen=[f"unix:{socket}"], ovsdb_factory=fabric.ovsdb,
                     **{"startup_grace": 2.0, **options})
    await ctl.start()
    for hv in fabric.hvs.values():
        hv.connect(socket)
    try:
        yield ctl
    finally:
        for hv in fabric.hvs.values():
            await hv.disconnect()
        await ctl.stop()


async def until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


class HaMemoryStore(MemoryStore):
    """The etcd store's HA extension in memory: term, claims, fenced views, a change watch."""

    def __init__(self) -> None:
        super().__init__()
        self._term = 0
        self._leader: dict[str, Any] | None = None
        self._watchers: list[Callable[[], None]] = []

    def term(self) -> int:
        return self._term

    def leader(self) -> dict[str, Any] | None:
        return self._leader

    def claim_term(self, expected: int, node: str, info: dict[str, Any]) -> bool:
        with self._lock:
            if self._term != expected:
                return False
            self._term = expected + 1
            self._leader = {**info, "node": node, "term": self._term}
        return True

    def fenced(self, term: int) -> Store:
        return _Fenced(self, term)

    def watch(self, on_change: Callable[[], None]) -> Callable[[], None]:
        self._watchers.append(on_change)
        return lambda: self._watchers.remove(on_change)

    def commit(self, puts: Any, deletes: Any, *, expect_revision: int | None = None) -> int:
        revision = super().commit(puts, deletes, expect_revision=expect_revision)
        for w in list(self._watchers):
            w()
        return revision


class _Fenced:
    def __init__(self, store: HaMemoryStore, term: int) -> None:
        self._store, self._term = store, term

    def load(self) -> Any:
        return self._store.load()

    def revision(self) -> int:
        return self._store.revision()

    def commit(self, puts: Any, deletes: Any, *, expect_revision: int | None = None) -> int:
        if self._store.term() != self._term:
            from hypetunnel.errors import Conflict

            raise Conflict(f"fenced: the term is {self._store.term()}, we hold {self._term}")
        return self._store.commit(puts, deletes, expect_revision=expect_revision)

    def close(self) -> None:
        pass
