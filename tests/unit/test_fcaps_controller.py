"""The real controller over fake switches raises and clears alarms from what its sessions
see: an OpenFlow channel lost and back, a VM port gone without a move, flows deleted behind
its back (repaired, and alarmed)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hypetunnel.controller.runtime import Controller
from hypetunnel.store.memory import MemoryStore
from tests.unit.controller_fakes import Fabric, running, until
from tests.unit.test_controller import intent, synced

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def socket() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="htf-"))
    try:
        yield root / "of.sock"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def open_alarms(ctl: Controller) -> set[tuple[str, str]]:
    return {(a.resource, a.kind) for a in ctl.faults.recorder.book.open_alarms()}


def every_alarm(ctl: Controller) -> list[dict[str, Any]]:
    return [a.to_doc() for a in ctl.faults.recorder.book.all()]


def test_faults_raise_and_clear_their_alarms(socket: Path) -> None:
    fabric = Fabric("hv1", "hv2")

    async def body() -> None:
        async with running(MemoryStore(), fabric, socket, flow_audit_interval=0.2) as ctl:
            await asyncio.to_thread(ctl.service.apply,
                                    intent({"web1": "hv1", "web2": "hv2"}, ("hv1", "hv2")))
            fabric.hvs["hv1"].plug("acme/web1")
            fabric.hvs["hv2"].plug("acme/web2")
            await until(lambda: ctl.status()["converged"] and ctl.faults.active,
                        "converged, monitor active", 10)
            assert open_alarms(ctl) == set()

            # The OpenFlow channel of hv2 is lost, then back.
            await fabric.hvs["hv2"].disconnect()
            await until(lambda: ("switch/hv2", "switch_disconnected") in open_alarms(ctl),
                        "switch_disconnected raised", 10)
            fabric.hvs["hv2"].connect(socket)
            await until(lambda: not open_alarms(ctl), "switch_disconnected cleared", 10)

            # Flows deleted behind the controller's back: repaired, alarmed, cleared.
            hv1 = fabric.hvs["hv1"]
            for key in list(hv1.switch.flows)[:3]:
                del hv1.switch.flows[key]
            await until(lambda: any(a["kind"] == "flow_drift" for a in every_alarm(ctl)),
                        "flow_drift raised", 10)
            await until(lambda: synced(ctl, fabric) and not open_alarms(ctl),
                        "drift repaired and the alarm cleared", 10)
            drift = next(a for a in every_alarm(ctl) if a["kind"] == "flow_drift")
            assert "3 flows missing" in drift["text"]

            # A VM's port gone without a move: crash; back: cleared.
            hv1.unplug("acme/web1")
            await until(lambda: ("vm/acme/web1", "vm_crash") in open_alarms(ctl),
                        "vm_crash raised", 10)
            crash = next(a for a in every_alarm(ctl) if a["kind"] == "vm_crash")
            assert crash["tenant"] == "acme"
            hv1.plug("acme/web1")
            await until(lambda: not open_alarms(ctl), "vm_crash cleared", 10)

            # Everything is in the state log and the store (the active's writes).
            events = await ctl.events("switch/hv2")
            assert ("switch/hv2", "openflow disconnected") in {
                (e["resource"], e["state"]) for e in events}
            await until(lambda: not ctl.faults.recorder.dirty, "written")
            stored = ctl.store.side_load("fcaps/alarm/")  # type: ignore[attr-defined]
            assert {a["id"] for a in every_alarm(ctl)} == {d["id"] for d in stored.values()}
            assert ctl.store.revision() == ctl.service.revision  # the intent's only

            # A move is no crash.
            await asyncio.to_thread(ctl.service.apply,
                                    intent({"web1": "hv2", "web2": "hv2"}, ("hv1", "hv2")))
            hv1.unplug("acme/web1")
            fabric.hvs["hv2"].plug("acme/web1")
            await until(lambda: ctl.status()["converged"], "moved", 10)
            await asyncio.sleep(1.5)  # beyond the hold time: a crash would be raised by now
            assert not open_alarms(ctl)

    asyncio.run(body())


def test_ovsdb_unreachable_then_hypervisor_lost_then_back(socket: Path) -> None:
    fabric = Fabric("hv1", "hv2")

    async def body() -> None:
        async with running(MemoryStore(), fabric, socket) as ctl:
            await asyncio.to_thread(ctl.service.apply, intent({"web1": "hv1"}, ("hv1", "hv2")))
            fabric.hvs["hv1"].plug("acme/web1")
            await until(lambda: ctl.status()["converged"] and ctl.faults.active,
                        "converged, monitor active", 10)
            hv2 = fabric.hvs["hv2"]
            [client] = [c for c in hv2.clients if not c.stopped]

            def ovsdb(up: bool) -> None:
                client.connected = up
                client._on_connection(up)

            ovsdb(False)  # OVSDB lost, OpenFlow still up
            await until(lambda: open_alarms(ctl) == {("switch/hv2", "ovsdb_unreachable")},
                        "ovsdb_unreachable raised", 10)
            first = ctl.faults.recorder.book.open_alarm("switch/hv2", "ovsdb_unreachable")
            await hv2.disconnect()  # and OpenFlow: the hypervisor is lost
            await until(lambda: open_alarms(ctl) == {("hypervisor/hv2", "hypervisor_lost"),
                                                     ("switch/hv2", "ovsdb_unreachable"),
                                                     ("switch/hv2", "switch_disconnected")},
                        "hypervisor_lost raised beside the sessions' alarms", 10)
            # The OVSDB alarm is the same one all along: its fault never ended.
            assert first is not None and first.id == ctl.faults.recorder.book.open_alarm(
                "switch/hv2", "ovsdb_unreachable").id  # type: ignore[union-attr]
            [lost] = [a for a in every_alarm(ctl) if a["kind"] == "hypervisor_lost"]
            assert (lost["severity"], lost["service_affecting"]) == ("critical", True)
            ovsdb(True)
            hv2.connect(socket)
            await until(lambda: not open_alarms(ctl), "every alarm cleared", 10)
            states = [e["state"] for e in await ctl.events("hypervisor/hv2")]
            assert "lost" in states and states[-1].startswith("alarm hypervisor_lost cleared")

    asyncio.run(body())


def test_a_crashed_vm_is_restarted_in_place_by_its_policy(socket: Path) -> None:
    """The tenant's policy restarts at once (grace 0), web2's own policy only alarms: one
    restart record, for web1, on its own hypervisor, followed to its end when it is back."""
    from hypetunnel.model.intent import FaultPolicy

    fabric = Fabric("hv1", "hv2")
    base = intent({"web1": "hv1", "web2": "hv1"}, ("hv1", "hv2"))
    [acme] = base.tenants
    vms = [v.model_copy(update={"fault_policy": FaultPolicy(vm_crash="alarm")})
           if v.name == "web2" else v for v in acme.vms]
    acme = acme.model_copy(update={"vms": vms,
                                   "fault_policy": FaultPolicy(restart_grace=0)})
    wanted = base.model_copy(update={"tenants": [acme]})

    async def body() -> None:
        async with running(MemoryStore(), fabric, socket) as ctl:
            await asyncio.to_thread(ctl.service.apply, wanted)
            hv1 = fabric.hvs["hv1"]
            hv1.plug("acme/web1")
            hv1.plug("acme/web2")
            await until(lambda: ctl.status()["converged"] and ctl.faults.active,
                        "converged, monitor active", 10)
            before = ctl.service.intent
            hv1.unplug("acme/web1")
            hv1.unplug("acme/web2")
            await until(lambda: any(m["vm"] == "acme/web1" for m in ctl.moves()),
                        "a restart record", 10)
            [rec] = ctl.moves()
            assert (rec["kind"], rec["from"], rec["to"], rec["result"]) == (
                "restart", "hv1", "hv1", "running")
            assert ctl.service.intent == before  # a restart in place changes no intent
            assert ("vm/acme/web2", "vm_crash") in open_alarms(ctl)
            hv1.plug("acme/web1")  # the compute side started it again
            await until(lambda: ctl.moves()[0]["result"] == "ok", "the restart followed", 10)
            await until(lambda: open_alarms(ctl) == {("vm/acme/web2", "vm_crash")},
                        "web1's crash alarm cleared, web2's open", 10)
            assert [m["vm"] for m in ctl.moves()] == ["acme/web1"]
            events = await ctl.events("vm/acme/web1")
            assert "restarting" in [e["state"] for e in events]

    asyncio.run(body())


def test_a_round_asked_for_while_a_flow_audit_holds_the_switch_still_runs(
        socket: Path) -> None:
    """run_pending skips a switch whose lock is held; the audit holds it while it reads the
    flow table. A mark made then (a takeover's, say) must still get its round once the audit
    is done (it was lost: the switch stayed unconverged until its next change)."""
    fabric = Fabric("hv1")

    async def body() -> None:
        async with running(MemoryStore(), fabric, socket, flow_audit_interval=3600) as ctl:
            await asyncio.to_thread(ctl.service.apply, intent({"web1": "hv1"}, ("hv1",)))
            fabric.hvs["hv1"].plug("acme/web1")
            await until(lambda: ctl.status()["converged"], "converged", 10)
            st = ctl.switches["hv1"]
            assert st.reconciler is not None
            reading, release = asyncio.Event(), asyncio.Event()
            real = st.reconciler.drift

            async def slow_drift() -> tuple[int, int]:
                reading.set()
                await release.wait()
                return await real()

            st.reconciler.drift = slow_drift  # type: ignore[method-assign]
            audit = asyncio.ensure_future(st.audit_flows())
            await asyncio.wait_for(reading.wait(), 5)
            ctl.switches.mark()  # every switch pending, as a takeover does
            ctl.kick()
            await until(lambda: not ctl._kick.is_set(), "the worker passed", 5)
            assert st.pending and st.lock.locked()  # skipped: the audit holds the lock
            release.set()
            assert await audit == (0, 0)
            await until(lambda: not st.pending and not st.lock.locked(), "the round ran", 5)

    asyncio.run(body())
