"""The etcd cluster's health as alarms: a member down after two failed probes in a row,
quorum at risk when exactly a majority answers (lost when fewer do), cleared when back; the
monitor raises and clears them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hypetunnel.fcaps.cluster import CLUSTER, MEMBER_DOWN, QUORUM, ClusterHealth
from hypetunnel.fcaps.monitor import FaultMonitor
from hypetunnel.store.memory import MemoryStore
from tests.unit.test_fcaps import Port, run, tick

pytestmark = pytest.mark.timeout(30)


@dataclass(frozen=True)
class Member:
    name: str
    up: bool = True
    url: str = "https://10.0.0.1:2379"
    problem: str = ""


def members(*down: str, size: int = 3) -> list[Member]:
    return [Member(f"etcd{i}", f"etcd{i}" not in down,
                   problem="ConnectError: refused" if f"etcd{i}" in down else "")
            for i in range(1, size + 1)]


def test_one_failed_probe_is_no_alarm_two_are() -> None:
    health = ClusterHealth()
    assert health.judge(members()) == {}
    assert health.judge(members("etcd3")) == {}
    judged = health.judge(members("etcd3"))
    assert set(judged) == {("etcd/etcd3", MEMBER_DOWN), (CLUSTER, QUORUM)}
    assert "ConnectError: refused; 2 of 3 answer (quorum 2)" in judged[("etcd/etcd3",
                                                                        MEMBER_DOWN)]
    assert "one more loss stops every write (down: etcd3)" in judged[(CLUSTER, QUORUM)]
    assert health.judge(members()) == {}  # back at the first good probe


def test_quorum_lost_and_a_large_cluster_that_still_tolerates_a_failure() -> None:
    health = ClusterHealth(hold=1)
    lost = health.judge(members("etcd2", "etcd3"))
    assert lost[(CLUSTER, QUORUM)].startswith("quorum lost: 1 of 3")
    five = ClusterHealth(hold=1)
    assert set(five.judge(members("etcd5", size=5))) == {("etcd/etcd5", MEMBER_DOWN)}
    assert (CLUSTER, QUORUM) in five.judge(members("etcd4", "etcd5", size=5))


def test_a_single_member_cluster_all_up_is_no_alarm() -> None:
    assert ClusterHealth(hold=1).judge(members(size=1)) == {}


@run
async def test_the_monitor_raises_and_clears_the_cluster_alarms() -> None:
    port = Port()
    mon = FaultMonitor(port, MemoryStore(), hold=0.0)
    await tick(mon, port, 0.0)
    health = ClusterHealth(hold=1)
    mon.judge_cluster(health.judge(members("etcd2")))
    assert {(a.resource, a.kind) for a in mon.recorder.book.open_alarms()} == {
        ("etcd/etcd2", MEMBER_DOWN), (CLUSTER, QUORUM)}
    [risk] = mon.recorder.book.open_alarms(QUORUM)
    assert risk.severity == "critical" and risk.tenant is None
    mon.judge_cluster(health.judge(members()))
    assert mon.recorder.book.open_alarms() == []
    assert await mon.recorder.flush()
