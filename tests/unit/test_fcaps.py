"""Alarms, the state log and webhooks: the book, the pure watch, the recorder over a real
service and store, failover (a second monitor on the same store), and webhook delivery to a
receiver that was down."""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from hypetunnel.fcaps.book import AlarmBook, AlarmNotFound
from hypetunnel.fcaps.events import ALARM_PREFIX, EVENT_PREFIX, query, tenant_of
from hypetunnel.fcaps.monitor import FaultMonitor
from hypetunnel.fcaps.record import Recorder
from hypetunnel.fcaps.watch import FabricView, Faults, SwitchView, changes
from hypetunnel.fcaps.webhook import WebhookTarget, cursor_key
from hypetunnel.model.policy import VmFaultPolicy
from hypetunnel.store.memory import MemoryStore

pytestmark = pytest.mark.timeout(30)

F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, None]])


def run(fn: F) -> Callable[[], None]:
    """A coroutine test run on its own loop (the suite has no asyncio plugin)."""
    @functools.wraps(fn)
    def test() -> None:
        asyncio.run(fn())

    return test


UP = SwitchView(True, True, frozenset(), frozenset({"hv2"}), True)


def view(**switches: SwitchView) -> FabricView:
    placement = {vm: hv for hv, sw in switches.items() for vm in sw.ports}
    return FabricView(switches, placement, frozenset({"acme/web"}))


def with_ports(sw: SwitchView, *vms: str) -> SwitchView:
    return SwitchView(sw.openflow, sw.ovsdb, frozenset(vms), sw.tunnels, sw.converged)


# -- the book ------
def test_one_open_alarm_per_resource_and_kind() -> None:
    ids = (f"a{i}" for i in itertools.count())
    book = AlarmBook(new_id=lambda: next(ids))
    first = book.raise_alarm("switch/hv1", "switch_disconnected", "lost", 1.0)
    assert first is not None and first.change == "raised"
    assert book.raise_alarm("switch/hv1", "switch_disconnected", "lost", 2.0) is None
    updated = book.raise_alarm("switch/hv1", "switch_disconnected", "lost again", 3.0)
    assert updated is not None and updated.change == "updated"
    assert updated.alarm.id == "a0" and updated.alarm.raised == 1.0
    assert book.raise_alarm("switch/hv1", "ovsdb_unreachable", "x", 3.0) is not None
    assert len(book.open_alarms()) == 2
    cleared = book.clear("switch/hv1", "switch_disconnected", "back", 4.0)
    assert cleared is not None and cleared.alarm.cleared == 4.0
    assert book.clear("switch/hv1", "switch_disconnected", "back", 5.0) is None
    again = book.raise_alarm("switch/hv1", "switch_disconnected", "lost", 6.0)
    assert again is not None and again.alarm.id == "a2"  # a new alarm, the old one stays
    assert [a.id for a in book.all()] == ["a0", "a1", "a2"]
    acked = book.ack("a2", 7.0)
    assert acked is not None and acked.alarm.acknowledged and acked.alarm.open
    assert book.ack("a2", 8.0) is None
    with pytest.raises(AlarmNotFound):
        book.ack("nosuch", 9.0)
    assert book.prune(keep_cleared=0) == ["a0"]


def test_severity_and_tenant() -> None:
    book = AlarmBook()
    c = book.raise_alarm("vm/acme/web1", "vm_crash", "gone", 1.0, tenant="acme")
    assert c is not None
    assert (c.alarm.severity, c.alarm.service_affecting, c.alarm.tenant) == ("major", True,
                                                                            "acme")
    assert tenant_of("vm/acme/web1") == "acme" and tenant_of("switch/hv1") is None


# -- the pure watch ------
def test_changes_name_their_cause() -> None:
    old = view(hv1=with_ports(UP, "acme/web1"), hv2=UP)
    down = SwitchView(False, True, frozenset({"acme/web1"}), frozenset({"hv2"}), False)
    new = view(hv1=down, hv2=UP)
    got = [(c.resource, c.state) for c in changes(old, new)]
    assert got == [("switch/hv1", "openflow disconnected")]
    lost = SwitchView(False, False, frozenset(), frozenset(), False)
    got = {(c.resource, c.state, c.cause) for c in changes(new, FabricView(
        {"hv1": lost, "hv2": UP}, {"acme/web1": "hv1"}, frozenset({"acme/web"})))}
    assert ("hypervisor/hv1", "lost", "neither OVSDB nor OpenFlow answers") in got
    assert ("vm/acme/web1", "unbound from hv1", "port gone without a move") in got
    assert ("tunnel/hv1/hv2", "removed", "tunnel port removed") in got
    moved = FabricView({"hv1": UP, "hv2": with_ports(UP, "acme/web1")},
                       {"acme/web1": "hv2"}, frozenset({"acme/web"}))
    assert [(c.resource, c.state, c.cause) for c in changes(old, moved)
            if c.resource.startswith("vm/")] == [("vm/acme/web1", "bound on hv2",
                                                  "moved from hv1")]


def test_faults_hold_and_a_move_is_no_crash() -> None:
    faults = Faults(hold=1.0)
    placed = {"acme/web1": "hv1"}
    assert faults.update(FabricView({"hv1": with_ports(UP, "acme/web1")}, placed), 0.0) == []
    gone = FabricView({"hv1": UP}, placed)
    assert faults.update(gone, 0.5) == []  # not held yet
    assert [f.kind for f in faults.update(gone, 1.6)] == ["vm_crash"]
    assert [f.tenant for f in faults.update(gone, 1.7)] == ["acme"]
    # The intent moved it: its port leaving hv1 is the move, not a crash.
    moving = FabricView({"hv1": UP, "hv2": UP}, {"acme/web1": "hv2"})
    assert faults.update(moving, 3.0) == [] and not faults.present
    # A lost hypervisor: its own alarm beside its sessions', none per VM.
    faults = Faults(hold=0.0)
    faults.update(FabricView({"hv1": with_ports(UP, "acme/web1")}, placed), 0.0)
    lost = SwitchView(False, False)
    assert sorted(f.kind for f in faults.update(FabricView({"hv1": lost}, placed), 1.0)) == [
        "hypervisor_lost", "ovsdb_unreachable", "switch_disconnected"]


# -- the monitor over a real service and store ------
class Port:
    """What the monitor reads of a runtime: a settable snapshot and identity."""

    def __init__(self) -> None:
        self.view = view(hv1=with_ports(UP, "acme/web1"), hv2=UP)
        self.may_program = True
        self.node, self.term, self.ha = "ctl1", 0, False
        self.sessions: list[tuple[str, Any]] = []
        self.policies: dict[str, VmFaultPolicy] = {}
        self.restarts: list[str] = []  # what the monitor asked for, in order
        self.drains: list[tuple[str, list[str], set[str]]] = []

    def fault_policy(self, vm: str) -> VmFaultPolicy:
        return self.policies.get(vm, VmFaultPolicy())

    def restart_vm(self, vm: str) -> None:
        self.restarts.append(vm)

    def drain_vms(self, hypervisor: str, vms: list[str], avoid: set[str]) -> None:
        self.drains.append((hypervisor, vms, avoid))

    def fcaps_view(self) -> FabricView:
        return self.view

    def fcaps_sessions(self) -> list[tuple[str, Any]]:
        return self.sessions

    def fcaps_identity(self) -> tuple[str, int, bool]:
        return self.node, self.term, self.ha


def stored(store: MemoryStore, prefix: str) -> list[dict[str, Any]]:
    return [d for _, d in sorted(store.side_load(prefix).items())]


async def tick(mon: FaultMonitor, port: Port, now: float) -> None:
    if not mon.active:
        await mon._activate()
    mon.observe(port.fcaps_view(), now)
    assert await mon.recorder.flush()


@run
async def test_alarms_and_events_are_stored_and_survive_a_failover() -> None:
    store = MemoryStore()
    port = Port()
    mon = FaultMonitor(port, store, hold=0.0)
    await tick(mon, port, 0.0)
    port.view = view(hv1=SwitchView(False, True, frozenset({"acme/web1"})), hv2=UP)
    await tick(mon, port, 1.0)
    [alarm] = stored(store, ALARM_PREFIX)
    assert (alarm["resource"], alarm["kind"], alarm["cleared"]) == (
        "switch/hv1", "switch_disconnected", None)
    states = [(e["resource"], e["state"]) for e in stored(store, EVENT_PREFIX)]
    assert ("switch/hv1", "openflow disconnected") in states
    assert ("switch/hv1", "alarm switch_disconnected raised") in states
    # Outside the intent: the revision (an If-Match of a client) does not move.
    assert store.revision() == 0

    # Failover: another controller's monitor takes the book from the store and clears it.
    port2 = Port()
    port2.node, port2.term, port2.ha = "ctl2", 2, True
    port2.view = view(hv1=with_ports(UP, "acme/web1"), hv2=UP)
    mon2 = FaultMonitor(port2, store, hold=0.0)
    await tick(mon2, port2, 2.0)
    alarms = {a["kind"]: a for a in await mon2.alarms(include_cleared=True)}
    assert alarms["switch_disconnected"]["id"] == alarm["id"]
    assert alarms["switch_disconnected"]["cleared"] is not None
    assert alarms["controller_failover"]["cleared"] is not None  # raised and cleared at once
    assert await mon2.alarms() == []
    seqs = [e["seq"] for e in stored(store, EVENT_PREFIX)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # one sequence across both
    acme = await mon2.events("vm/acme", None)
    assert all(e["resource"].startswith("vm/acme/") for e in acme)


@run
async def test_ack_is_stored_and_the_alarm_stays_open() -> None:
    store = MemoryStore()
    port = Port()
    mon = FaultMonitor(port, store, hold=0.0)
    await tick(mon, port, 0.0)
    port.view = view(hv1=UP, hv2=UP)
    port.view = FabricView(port.view.switches, {"acme/web1": "hv1"})
    await tick(mon, port, 1.0)
    [crash] = await mon.alarms()
    assert crash["kind"] == "vm_crash" and crash["tenant"] == "acme"
    acked = await mon.ack(crash["id"])
    assert acked["acknowledged"] and acked["cleared"] is None
    assert stored(store, ALARM_PREFIX)[0]["acknowledged"] is True


@run
async def test_the_state_log_is_bounded() -> None:
    store = MemoryStore()
    rec = Recorder(store.side_commit, lambda: 1.0, max_events=5)
    for i in range(12):
        rec.state(f"switch/hv{i}", "up", "test")
        if i % 4 == 0:
            assert await rec.flush()
    assert await rec.flush()
    assert [e["seq"] for e in stored(store, EVENT_PREFIX)] == [8, 9, 10, 11, 12]
    assert [e["seq"] for e in query(rec.events, "switch/hv11")] == [12]


# -- drift: the reconciler against a switch whose flows were deleted behind its back ------
@run
async def test_drift_is_found_and_repaired_by_the_next_apply() -> None:
    from hypetunnel.compiler.flows import Flow, Output, match
    from hypetunnel.controller.reconciler import FlowReconciler
    from hypetunnel.southbound.openflow.fakeswitch import MemoryFlowChannel

    channel = MemoryFlowChannel()
    rec = FlowReconciler(channel)
    flows = [Flow(0, 10 + i, match(in_port=i), (Output(9),)) for i in range(3)]
    await rec.apply(flows)
    assert await rec.drift() == (0, 0)
    channel.cookies.discard(flows[0].cookie)  # ovs-ofctl del-flows, in part
    channel.cookies.add(0x1234)  # and somebody else's flow
    assert await rec.drift() == (1, 1)
    diff = await rec.apply(flows)
    assert (diff.added, diff.foreign_removed) == (1, 1)
    assert channel.cookies == {f.cookie for f in flows}


# -- webhooks ------
class Receiver:
    def __init__(self) -> None:
        self.up = False
        self.got: list[dict[str, Any]] = []
        self.refused = 0

    def post(self, url: str, body: dict[str, Any]) -> None:
        if not self.up:
            self.refused += 1
            raise ConnectionRefusedError("down")
        self.got.append(body)


@run
async def test_a_receiver_that_was_down_gets_the_missed_changes_in_order() -> None:
    store = MemoryStore()
    port = Port()
    receiver = Receiver()
    mon = FaultMonitor(port, store, webhooks=["http://hook.example/x"],
                       post=receiver.post, hold=0.0, tick=0.01, flow_audit_interval=60)
    for w in mon.webhooks:
        w.backoff_first, w.backoff_max = 0.01, 0.05
    task = asyncio.create_task(mon.run())
    try:
        await until(lambda: mon.active, "the monitor to start")
        port.view = view(hv1=SwitchView(False, True, frozenset({"acme/web1"})), hv2=UP)
        await until(lambda: len(mon.recorder.book.open_alarms()) == 1, "the alarm")
        port.view = view(hv1=with_ports(UP, "acme/web1"), hv2=UP)
        await until(lambda: not mon.recorder.book.open_alarms(), "the clear")
        await until(lambda: receiver.refused >= 3, "retries while the receiver is down")
        assert receiver.got == []
        receiver.up = True
        await until(lambda: len(receiver.got) == 2, "the missed changes")
        assert [b["change"] for b in receiver.got] == ["raised", "cleared"]
        assert receiver.got[0]["alarm"]["kind"] == "switch_disconnected"
        assert receiver.got[0]["seq"] < receiver.got[1]["seq"]
        # The cursor is written after the delivery (at the recorder's next flush): wait for
        # the one past the last change, not just any (a cut before it resends that change).
        last = receiver.got[-1]["seq"]
        await until(lambda: int(store.side_load("").get(cursor_key("http://hook.example/x"),
                                                        {}).get("seq", 0)) >= last,
                    "the cursor past the last change stored")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # Another controller (a failover) resumes after the cursor: nothing is sent twice.
    again = WebhookTarget("http://hook.example/x", receiver.post)
    again.load(store.side_load("")[again.key])
    mon2 = FaultMonitor(Port(), store)
    await mon2._activate()
    assert again.pending(mon2.recorder.events) == []


async def until(cond: Any, what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


# -- the API: a tenant sees its own resources' alarms and events, names hidden ------------------
def test_a_tenant_sees_only_its_own_alarms_and_events() -> None:
    from tests.unit.policy_world import World

    world = World()
    book = AlarmBook()
    book.raise_alarm("vm/acme/web1", "vm_crash", "acme/web1: gone from hv1", 1.0, "acme")
    book.raise_alarm("vm/globex/web1", "vm_crash", "globex/web1: gone", 1.0, "globex")
    book.raise_alarm("switch/hv1", "switch_disconnected", "hv1: lost", 1.0)
    docs = [a.to_doc() for a in book.all()]
    events = [{"seq": 1, "time": 1.0, "resource": "vm/acme/web1", "state": "bound on hv1",
               "cause": "port plugged", "tenant": "acme"},
              {"seq": 2, "time": 1.0, "resource": "switch/hv1", "state": "ovsdb unreachable",
               "cause": "x", "tenant": None}]
    acked: list[str] = []

    async def alarms(include_cleared: bool) -> list[dict[str, Any]]:
        return docs

    async def all_events(resource: str | None, since: float | None,
                         limit: int) -> list[dict[str, Any]]:
        return query(events, resource, since, limit)

    async def ack_alarm(alarm_id: str) -> dict[str, Any]:
        acked.append(alarm_id)
        return docs[0]

    world.runtime.alarms = alarms  # type: ignore[attr-defined]
    world.runtime.events = all_events  # type: ignore[attr-defined]
    world.runtime.ack_alarm = ack_alarm  # type: ignore[attr-defined]
    assert len(world.request("operator", "GET", "/api/v1/alarms").json()) == 3
    mine = world.request("tenant-reader", "GET", "/api/v1/alarms").json()
    assert [a["resource"] for a in mine] == ["vm/acme/web1"]
    assert mine[0]["text"] == "acme/web1: gone from (provider)"
    seen = world.request("tenant-admin", "GET", "/api/v1/events").json()
    assert [(e["resource"], e["state"]) for e in seen] == [("vm/acme/web1",
                                                            "bound on (provider)")]
    assert world.request("operator", "GET", "/api/v1/events",
                         params={"resource": "switch"}).json()[0]["seq"] == 2
    alarm_id = docs[0]["id"]
    assert world.request("tenant-admin", "POST", f"/api/v1/alarms/{alarm_id}/ack"
                         ).status_code == 403
    assert world.request("operator", "POST", f"/api/v1/alarms/{alarm_id}/ack"
                         ).status_code == 200
    assert acked == [alarm_id]



@run
async def test_a_crashed_vm_is_restarted_once_after_its_grace_as_its_policy_says() -> None:
    clock = [1000.0]
    port = Port()
    port.policies["acme/db"] = VmFaultPolicy(vm_crash="alarm")
    port.view = view(hv1=with_ports(UP, "acme/web1", "acme/db"), hv2=UP)
    mon = FaultMonitor(port, MemoryStore(), hold=0.0, clock=lambda: clock[0])
    await tick(mon, port, 0.0)
    gone = FabricView(view(hv1=UP, hv2=UP).switches, {"acme/web1": "hv1", "acme/db": "hv1"})
    for t in (1.0, 5.0, 10.9):  # both crashed; the default grace is 10 s after the alarm
        clock[0] = 1000.0 + t
        port.view = gone
        await tick(mon, port, t)
    assert {a["resource"] for a in await mon.alarms()} == {"vm/acme/web1", "vm/acme/db"}
    assert port.restarts == []
    for t in (11.0, 11.5, 30.0):
        clock[0] = 1000.0 + t
        await tick(mon, port, t)
    assert port.restarts == ["acme/web1"]  # once, and not the VM whose policy says alarm
    [restarting] = [e for e in mon.recorder.events if e.get("state") == "restarting"]
    assert restarting["resource"] == "vm/acme/web1" and restarting["tenant"] == "acme"
    assert "vm_crash: restart after 10 s" in restarting["cause"]
    port.view = view(hv1=with_ports(UP, "acme/web1"), hv2=UP)  # back (db stays dead)
    port.view = FabricView(port.view.switches, {"acme/web1": "hv1", "acme/db": "hv1"})
    await tick(mon, port, 31.0)
    assert {a["resource"] for a in await mon.alarms()} == {"vm/acme/db"}
    await tick(mon, port, 32.0)
    gone_again = FabricView(gone.switches, gone.placement)
    port.view = gone_again
    clock[0] = 1050.0
    await tick(mon, port, 50.0)
    clock[0] = 1061.0
    await tick(mon, port, 61.0)
    assert port.restarts == ["acme/web1", "acme/web1"]  # a new crash, a new restart


def test_an_underlay_narrower_than_the_fabric_needs_is_a_fault_of_its_hypervisor() -> None:
    narrow = SwitchView(True, True, underlay=("eth0", 1400))
    fabric = FabricView({"hv1": narrow, "hv2": SwitchView(True, True, underlay=("eth0", 1500))},
                        {}, underlay_mtu=1500)
    [fault] = Faults(hold=0.0).update(fabric, 0.0)
    assert (fault.resource, fault.kind) == ("hypervisor/hv1", "underlay_mtu")
    assert "eth0 has MTU 1400, the fabric needs 1500" in fault.text
    assert "within 100 bytes of its MTU" in fault.text
    unknown = FabricView({"hv1": SwitchView(True, True)}, {}, underlay_mtu=1500)
    assert Faults(hold=0.0).update(unknown, 0.0) == []  # no underlay bridge: nothing known
    jumbo = FabricView({"hv1": SwitchView(True, True, underlay=("eth0", 9000))}, {},
                       underlay_mtu=1500)
    assert Faults(hold=0.0).update(jumbo, 0.0) == []


def test_the_underlay_link_is_the_narrowest_interface_of_br_phy() -> None:
    from types import SimpleNamespace as Row

    from hypetunnel.southbound.observation import UnderlayLink
    from hypetunnel.southbound.ovsdb.snapshot import build_underlay

    def bridge(name: str, *ifaces: tuple[str, list[int]]) -> Row:
        return Row(name=name, ports=[Row(interfaces=[Row(name=n, mtu=m)]) for n, m in ifaces])

    bridges = [bridge("br-int", ("tap1", [1000])),
               bridge("br-phy", ("eth0", [1400]), ("br-phy", [1500]), ("new", []))]
    assert build_underlay(bridges) == UnderlayLink("eth0", 1400)
    assert build_underlay([bridge("br-int", ("tap1", [1000]))]) is None
