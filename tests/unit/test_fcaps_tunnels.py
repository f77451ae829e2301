"""tunnel_down from BFD: the pure judgement (which tunnel is down, a session never up given its
grace, a lost hypervisor left to its own alarm), the state log, and the monitor's dampening
(one alarm a minute at most for a flapping tunnel, kept open and updated)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from hypetunnel.fcaps.monitor import FaultMonitor
from hypetunnel.fcaps.tunnels import TunnelHealth, partitioned, reported, tunnel_resource
from hypetunnel.fcaps.view import fabric_view
from hypetunnel.fcaps.watch import FabricView, SwitchView, TunnelEnd, changes
from hypetunnel.model.intent import Intent
from hypetunnel.model.policy import VmFaultPolicy
from hypetunnel.southbound.observation import BfdStatus
from hypetunnel.store.memory import MemoryStore
from tests.unit.test_fcaps import Port, run, tick

pytestmark = pytest.mark.timeout(30)

PLACEMENT = {"acme/web1": "hv1", "acme/web2": "hv2", "globex/a": "hv1", "globex/b": "hv3",
             "initech/x": "hv2"}


def end(remote: str, forwarding: bool = True, established: bool = True,
        encap: str = "vxlan") -> TunnelEnd:
    return TunnelEnd(remote, encap, forwarding, established or forwarding,
                     "up" if forwarding else "down",
                     "" if forwarding else "Control Detection Time Expired")


def sw(*ends: TunnelEnd, openflow: bool = True, ovsdb: bool = True) -> SwitchView:
    return SwitchView(openflow, ovsdb, frozenset(), frozenset(e.remote for e in ends), True,
                      frozenset(ends))


def fabric(**switches: SwitchView) -> FabricView:
    return FabricView(switches, PLACEMENT)


HEALTHY = fabric(hv1=sw(end("hv2"), end("hv2", encap="gre"), end("hv3")),
                 hv2=sw(end("hv1"), end("hv1", encap="gre")), hv3=sw(end("hv1")))


def test_resource_names_the_pair_sorted() -> None:
    assert tunnel_resource("hv2", "hv1") == tunnel_resource("hv1", "hv2") == "tunnel/hv1-hv2"


def test_a_session_that_stops_forwarding_downs_its_tunnel_only() -> None:
    health = TunnelHealth()
    assert health.judge(HEALTHY, 0.0) == {}
    cut = fabric(hv1=sw(end("hv2"), end("hv2", False, encap="gre"), end("hv3")),
                 hv2=sw(end("hv1"), end("hv1", False, encap="gre")), hv3=sw(end("hv1")))
    judged = health.judge(cut, 1.0)
    assert set(judged) == {"tunnel/hv1-hv2"}
    text = judged["tunnel/hv1-hv2"]
    assert "hv1->hv2 gre (Control Detection Time Expired)" in text
    assert "hv2->hv1 gre" in text and "vxlan" not in text
    assert text.endswith("tenants with VMs at both ends: acme")
    assert reported(cut, "tunnel/hv1-hv3")


def test_a_session_never_up_has_a_grace_to_come_up() -> None:
    health = TunnelHealth(grace=10.0)
    fresh = fabric(hv1=sw(end("hv2", False, established=False)), hv2=sw(end("hv1")))
    assert health.judge(fresh, 0.0) == {}
    assert health.judge(fresh, 9.0) == {}
    assert set(health.judge(fresh, 10.0)) == {"tunnel/hv1-hv2"}  # it never came up
    # Once up, its grace is forgotten: a later down is judged at once.
    assert health.judge(HEALTHY, 11.0) == {}
    was_up = fabric(hv1=sw(end("hv2", False)), hv2=sw(end("hv1")))
    assert set(health.judge(was_up, 11.1)) == {"tunnel/hv1-hv2"}


def test_a_lost_hypervisor_or_a_stale_ovsdb_report_judges_nothing() -> None:
    health = TunnelHealth()
    lost = fabric(hv1=sw(end("hv3", False)), hv3=sw(openflow=False, ovsdb=False))
    assert health.judge(lost, 0.0) == {}  # hypervisor_lost is the alarm, not its tunnels
    assert not reported(lost, "tunnel/hv1-hv3")
    stale = fabric(hv1=sw(end("hv3", False), ovsdb=False), hv3=sw(end("hv1")))
    assert health.judge(stale, 0.0) == {}
    assert not reported(stale, "tunnel/hv1-hv3")


def test_the_state_log_records_bfd_up_and_down_per_end() -> None:
    fresh = fabric(hv1=sw(end("hv2", False, established=False)), hv2=sw())
    up = fabric(hv1=sw(end("hv2")), hv2=sw())
    down = fabric(hv1=sw(end("hv2", False)), hv2=sw())
    assert [(c.resource, c.state) for c in changes(fresh, up)] == [("tunnel/hv1/hv2",
                                                                    "bfd up")]
    [c] = changes(up, down)
    assert (c.resource, c.state, c.cause) == ("tunnel/hv1/hv2", "bfd down",
                                              "vxlan: Control Detection Time Expired")
    assert changes(down, down) == []


class Obs:
    def __init__(self, tunnels: Any) -> None:
        self.tunnels = tunnels


class Session:
    def __init__(self, obs: Obs, bfd: dict[str, BfdStatus]) -> None:
        self.bound: set[str] = set()
        self.openflow_ready = self.ovsdb_connected = True
        self.observation = obs
        self.bfd = bfd
        self.underlay = None


def test_the_view_joins_each_tunnel_port_with_its_bfd_session() -> None:
    from hypetunnel.compiler.tunnels import tunnel_port

    vx, gr = tunnel_port("vxlan", "10.0.0.2", "hv2"), tunnel_port("gre", "10.0.0.2", "hv2")
    st = Session(Obs(frozenset({vx, gr})),
                 {vx.name: BfdStatus("down", False, "Control Detection Time Expired", "up", 3)})
    v = fabric_view([("hv1", st)], Intent(), lambda _: True)
    assert v.switches["hv1"].bfd == {TunnelEnd("hv2", "vxlan", False, True, "down",
                                               "Control Detection Time Expired")}


def open_tunnel_alarms(mon: FaultMonitor) -> list[Any]:
    return mon.recorder.book.open_alarms("tunnel_down")


@run
async def test_a_flapping_tunnel_keeps_one_alarm_open_for_the_dampening_time() -> None:
    clock = [1000.0]
    port = Port()
    port.view = HEALTHY
    mon = FaultMonitor(port, MemoryStore(), hold=0.0, dampen=60.0, clock=lambda: clock[0])
    cut = fabric(hv1=sw(end("hv2"), end("hv2", encap="gre"), end("hv3", False)),
                 hv2=sw(end("hv1"), end("hv1", encap="gre")), hv3=sw(end("hv1", False)))

    async def at(t: float, v: FabricView) -> None:
        clock[0] = 1000.0 + t
        port.view = v
        await tick(mon, port, t)

    await at(0.0, HEALTHY)
    assert open_tunnel_alarms(mon) == []
    await at(1.0, cut)
    [alarm] = open_tunnel_alarms(mon)
    assert alarm.resource == "tunnel/hv1-hv3" and alarm.severity == "major"
    assert alarm.service_affecting and alarm.tenant is None
    assert "globex" in alarm.text
    await at(2.0, HEALTHY)  # back, but within the dampening time: held open
    [held] = open_tunnel_alarms(mon)
    assert held.id == alarm.id and "held open" in held.text
    await at(3.0, cut)  # down again: the same alarm, updated
    [again] = open_tunnel_alarms(mon)
    assert again.id == alarm.id and "down 2 times" in again.text
    await at(4.0, HEALTHY)
    await at(30.0, cut)
    await at(31.0, HEALTHY)
    assert [a.id for a in open_tunnel_alarms(mon)] == [alarm.id]
    assert "down 3 times" in open_tunnel_alarms(mon)[0].text
    await at(61.0, HEALTHY)  # a minute after it was raised, forwarding: cleared
    assert open_tunnel_alarms(mon) == []
    [done] = [a for a in mon.recorder.book.all() if a.kind == "tunnel_down"]
    assert done.cleared == 1061.0 and "forwarding" in done.text
    raised = [e for e in mon.recorder.events if e.get("change") == "raised"
              and e["alarm"]["kind"] == "tunnel_down"]
    assert len(raised) == 1
    states = [(e["resource"], e["state"]) for e in mon.recorder.events if "alarm" not in e]
    assert states.count(("tunnel/hv1/hv3", "bfd down")) == 3
    assert states.count(("tunnel/hv3/hv1", "bfd up")) == 3


@run
async def test_a_tunnel_down_for_longer_than_the_dampening_time_clears_once_back() -> None:
    clock = [0.0]
    port = Port()
    port.view = HEALTHY
    mon = FaultMonitor(port, MemoryStore(), hold=0.0, dampen=60.0, clock=lambda: clock[0])
    cut = fabric(hv1=sw(end("hv2", False)), hv2=sw(end("hv1")))
    await tick(mon, port, 0.0)
    port.view = cut
    await tick(mon, port, 1.0)
    clock[0] = 100.0
    await tick(mon, port, 100.0)
    assert len(open_tunnel_alarms(mon)) == 1
    port.view = HEALTHY
    await tick(mon, port, 101.0)
    assert open_tunnel_alarms(mon) == []


# -- partition: cut off from every peer while the controller reaches it ------
CUT_HV3 = fabric(hv1=sw(end("hv2"), end("hv3", False)), hv2=sw(end("hv1"), end("hv3", False)),
                 hv3=sw(end("hv1", False), end("hv2", False)))
MESH = fabric(hv1=sw(end("hv2"), end("hv3")), hv2=sw(end("hv1"), end("hv3")),
              hv3=sw(end("hv1"), end("hv2")))


def test_a_hypervisor_whose_every_tunnel_is_down_is_partitioned() -> None:
    judged = TunnelHealth().judge(CUT_HV3, 0.0)
    assert set(judged) == {"tunnel/hv1-hv3", "tunnel/hv2-hv3"}
    cut = partitioned(CUT_HV3, judged)
    assert list(cut) == ["hv3"] and "(to hv1, hv2)" in cut["hv3"]


def test_one_broken_path_partitions_nobody_nor_does_a_single_peer() -> None:
    one = fabric(hv1=sw(end("hv2"), end("hv3", False)), hv2=sw(end("hv1"), end("hv3")),
                 hv3=sw(end("hv1", False), end("hv2")))
    assert partitioned(one, TunnelHealth().judge(one, 0.0)) == {}
    pair = fabric(hv1=sw(end("hv2", False)), hv2=sw(end("hv1", False)))
    assert partitioned(pair, TunnelHealth().judge(pair, 0.0)) == {}  # which end? unknown


def test_a_lost_peer_is_no_partition_of_the_others() -> None:
    lost = fabric(hv1=sw(end("hv2"), end("hv3", False)), hv2=sw(end("hv1"), end("hv3", False)),
                  hv3=sw(end("hv1", False), end("hv2", False), openflow=False, ovsdb=False))
    assert partitioned(lost, TunnelHealth().judge(lost, 0.0)) == {}


@run
async def test_a_partition_is_alarmed_its_drain_asked_once_then_cleared() -> None:
    port = Port()
    port.view = MESH
    port.policies = {"globex/b": VmFaultPolicy(partition="drain")}
    mon = FaultMonitor(port, MemoryStore(), hold=0.0)
    await tick(mon, port, 0.0)
    for t in (1.0, 2.0):
        port.view = CUT_HV3
        await tick(mon, port, t)
    [alarm] = mon.recorder.book.open_alarms("hypervisor_partitioned")
    assert alarm.resource == "hypervisor/hv3" and alarm.service_affecting
    # Only the VM whose policy says drain moves; no destination that is cut off itself.
    assert port.drains == [("hv3", ["globex/b"], {"hv3"})]
    port.view = MESH
    await tick(mon, port, 3.0)
    assert mon.recorder.book.open_alarms("hypervisor_partitioned") == []
    assert port.drains == [("hv3", ["globex/b"], {"hv3"})]


@run
async def test_a_health_report_is_judged_at_once_not_at_the_next_tick() -> None:
    """A switch's BFD report wakes the monitor (look_now): a tunnel down is recorded within
    the look gap, not one tick (60 s here) later."""
    port = Port()
    port.view = MESH
    mon = FaultMonitor(port, MemoryStore(), hold=0.0, tick=60.0)
    mon.look_now()  # the first snapshot (activation) without waiting for the tick
    task = asyncio.get_running_loop().create_task(mon._watch())
    try:
        async with asyncio.timeout(5):
            while not mon.active:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.1)  # the first snapshot is taken, the monitor waits again
            port.view = CUT_HV3
            mon.look_now()
            started = time.monotonic()
            while not [e for e in mon.recorder.events if e.get("state") == "bfd down"]:
                await asyncio.sleep(0.005)
        assert time.monotonic() - started < 1.0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
