"""Mobility over a fake controller port: moves are recorded, followed and closed; a lost
hypervisor's VMs are restarted elsewhere; store writes never run on the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from typing import Any

import pytest

from hypetunnel.controller import moves
from hypetunnel.controller.mobility import Mobility
from hypetunnel.controller.service import FabricService
from hypetunnel.errors import IntentInvalid
from hypetunnel.model.intent import VM, Hypervisor, Intent, Network, Tenant
from hypetunnel.store.memory import MemoryStore
from tests.unit.controller_fakes import until

pytestmark = pytest.mark.timeout(30)


class FakePort:
    """The controller as mobility sees it: bindings, switch state, liveness, tasks."""

    def __init__(self) -> None:
        self.is_active = True
        self.startup_done = True
        self.where: dict[str, set[str]] = {}
        self.unsettled: set[str] = set()
        self.up: dict[str, bool] = {"hv1": True, "hv2": True, "hv3": True}
        self.lost: list[str] = []
        self.tasks: set[asyncio.Task[Any]] = set()

    @property
    def may_program(self) -> bool:
        return self.is_active

    def seen(self, vm: str) -> set[str]:
        return set(self.where.get(vm, ()))

    def network_hosts(self, vm: str) -> set[str]:
        return set()

    def settled(self, hypervisor: str | None) -> bool:
        return hypervisor not in self.unsettled

    def reachability(self) -> dict[str, bool]:
        return dict(self.up)

    def lose(self, hypervisor: str) -> None:
        self.lost.append(hypervisor)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        return task

    async def cancel(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class LoopGuardStore(MemoryStore):
    """Fails the test if the store is used from the event loop's thread."""

    loop_thread: int | None = None

    def commit(self, *args: Any, **kwargs: Any) -> int:
        assert threading.get_ident() != self.loop_thread, "store commit on the event loop"
        return super().commit(*args, **kwargs)


def fabric() -> Intent:
    return Intent(
        hypervisors=[Hypervisor.model_validate({"name": h, "underlay_ip": f"172.31.8.{i}"})
                     for i, h in enumerate(("hv1", "hv2", "hv3"), start=1)],
        tenants=[Tenant(name="acme",
                        networks=[Network.model_validate({"name": "web",
                                                          "cidr": "10.0.1.0/24"})],
                        vms=[VM(name="web1", network="web", hypervisor="hv1"),
                             VM(name="web2", network="web", hypervisor="hv1")])])


def host(service: FabricService, vm: str) -> str | None:
    return moves.current_host(service.intent, vm)


def setup() -> tuple[FabricService, LoopGuardStore, FakePort, Mobility]:
    store = LoopGuardStore()
    service = FabricService(store)
    service.apply(fabric())
    port = FakePort()
    store.loop_thread = threading.get_ident()  # asyncio.run runs the loop in this thread
    return service, store, port, Mobility(service, port, failure_grace=0.1, move_timeout=5.0)


def test_a_hot_move_is_recorded_followed_and_closed() -> None:
    async def body() -> None:
        service, _, port, mob = setup()
        port.where["acme/web1"] = {"hv1"}
        try:
            rec = await mob.move("acme/web1", "hv2")
            assert rec["result"] == "running" and rec["from"] == "hv1" and rec["to"] == "hv2"
            assert host(service, "acme/web1") == "hv2"  # the intent moved in the same commit
            # The compute side plugs the destination first, then the source goes.
            port.unsettled = {"hv2"}
            port.where["acme/web1"] = {"hv1", "hv2"}
            port.unsettled = set()
            port.where["acme/web1"] = {"hv2"}
            await until(lambda: moves.all_moves(service)[0]["result"] == "ok", "move closed")
            [stored] = moves.all_moves(service)
            assert stored["seq"] == 1 and stored["end"] >= stored["start"]
            assert stored["interruption_ms"] is not None
        finally:
            await port.cancel()

    asyncio.run(body())


def test_a_move_to_a_drained_hypervisor_is_refused_and_changes_nothing() -> None:
    async def body() -> None:
        service, _, port, mob = setup()
        try:
            await mob.drain("hv3")
            revision = service.revision
            with pytest.raises(IntentInvalid, match="drained"):
                await mob.move("acme/web1", "hv3")
            assert service.revision == revision and host(service, "acme/web1") == "hv1"
            await mob.undrain("hv3")
            hv3 = service.intent.hypervisor("hv3")
            assert hv3 is not None and hv3.schedulable is True
        finally:
            await port.cancel()

    asyncio.run(body())


def test_drain_moves_every_vm_away() -> None:
    async def body() -> None:
        service, _, port, mob = setup()
        try:
            recs = await mob.drain("hv1")
            assert sorted(r["vm"] for r in recs) == ["acme/web1", "acme/web2"]
            assert all(host(service, r["vm"]) in ("hv2", "hv3") for r in recs)
            hv1 = service.intent.hypervisor("hv1")
            assert hv1 is not None and hv1.schedulable is False
        finally:
            await port.cancel()

    asyncio.run(body())


def test_a_lost_hypervisor_has_its_vms_restarted_elsewhere_once() -> None:
    async def body() -> None:
        service, _, port, mob = setup()
        watcher = port.spawn(mob.watch_failures(), "failure-watch")
        try:
            port.up["hv1"] = False
            t0 = time.monotonic()
            await until(lambda: len(moves.all_moves(service)) == 2, "restarts recorded")
            assert time.monotonic() - t0 >= mob.failure_grace
            assert port.lost == ["hv1"]
            assert {r["kind"] for r in moves.all_moves(service)} == {"restart"}
            assert host(service, "acme/web1") != "hv1" and host(service, "acme/web2") != "hv1"
            # Still down on later rounds: nothing is restarted twice.
            await asyncio.sleep(0.6)  # more than one watch round (0.5 s): nothing may follow
            assert port.lost == ["hv1"] and len(moves.all_moves(service)) == 2
        finally:
            watcher.cancel()
            await port.cancel()

    asyncio.run(body())


def test_a_standby_restarts_nothing() -> None:
    async def body() -> None:
        service, _, port, mob = setup()
        port.is_active = False
        watcher = port.spawn(mob.watch_failures(), "failure-watch")
        try:
            port.up["hv1"] = False
            await asyncio.sleep(0.7)  # longer than the grace plus a round: nothing may happen
            assert port.lost == [] and moves.all_moves(service) == []
        finally:
            watcher.cancel()
            await port.cancel()

    asyncio.run(body())
