"""OpenFlow southbound against a real ovs-vswitchd (userspace datapath, no namespace)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hypetunnel.compiler.flows import Flow, Output, SetField, match
from hypetunnel.controller.reconciler import FlowDiff, FlowReconciler
from hypetunnel.errors import SouthboundError
from hypetunnel.lab.ovs import OvsInstance
from hypetunnel.southbound.openflow import OpenFlowServer, SwitchChannel

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ovs-vswitchd"),
                       reason="needs root and Open vSwitch"),
]

BRIDGE = "br-int"
TIMEOUT = 60.0


@pytest.fixture(scope="module")
def ovs() -> Iterator[OvsInstance]:
    # Short path under /tmp: unix socket paths are limited to 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix=f"htof-{os.getpid()}-"))
    instance = OvsInstance(directory)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def bridge(ovs: OvsInstance) -> Iterator[OvsInstance]:
    ovs.vsctl("--may-exist", "add-br", BRIDGE, "--", "set", "bridge", BRIDGE,
              "datapath_type=netdev", "fail_mode=secure", "protocols=OpenFlow13")
    try:
        yield ovs
    finally:
        ovs.vsctl("--if-exists", "del-br", BRIDGE)


@dataclass
class Rig:
    ovs: OvsInstance
    server: OpenFlowServer
    channels: asyncio.Queue[SwitchChannel]

    async def next_channel(self) -> SwitchChannel:
        return await asyncio.wait_for(self.channels.get(), 20)

    def dump(self) -> str:
        return self.ovs.ofctl("dump-flows", bridge_mgmt=BRIDGE)


@contextlib.asynccontextmanager
async def controller(ovs: OvsInstance, configure: bool = True) -> AsyncIterator[Rig]:
    """Our server on a unix socket, with br-int pointed at it (and unpointed afterwards).

    configure=False leaves the Controller row alone: removing a bridge's last controller makes
    OVS flush its flows, so a "controller restart" must keep the row and only drop the server.
    """
    channels: asyncio.Queue[SwitchChannel] = asyncio.Queue()

    async def on_switch(ch: SwitchChannel) -> None:
        await channels.put(ch)

    server = OpenFlowServer(on_switch)
    address = await server.listen(f"unix:{ovs.directory}/ht-of.sock")
    try:
        if configure:
            await asyncio.to_thread(ovs.vsctl, "set-controller", BRIDGE, address)
            # Reconnect within a second after we drop the connection (default backoff is 8 s).
            await asyncio.to_thread(ovs.vsctl, "set", "controller", BRIDGE, "max_backoff=1000")
        yield Rig(ovs, server, channels)
    finally:
        if configure:
            await asyncio.to_thread(ovs.vsctl, "del-controller", BRIDGE)
        await server.close()


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), TIMEOUT))


def flows_of(n: int, port_offset: int = 0) -> list[Flow]:
    return [Flow(30, 100, match(metadata=i % 7, eth_dst=f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}"),
                 (Output(i % 16 + 1 + port_offset),)) for i in range(n)]


def dumped(text: str) -> dict[int, float]:
    """cookie -> duration (seconds) from `ovs-ofctl dump-flows` output."""
    return {int(c, 16): float(d) for c, d in
            re.findall(r"cookie=(0x[0-9a-f]+), duration=([0-9.]+)s", text)}


def test_handshake_reports_the_bridge_datapath_id(bridge: OvsInstance) -> None:
    async def body() -> None:
        async with controller(bridge) as rig:
            ch = await rig.next_channel()
            dpid = bridge.vsctl("get", "bridge", BRIDGE, "datapath_id").strip('"')
            assert ch.datapath_id == int(dpid, 16)
            await ch.barrier()
    run(body)


def test_install_reconcile_and_remove_foreign(bridge: OvsInstance) -> None:
    async def body() -> None:
        async with controller(bridge) as rig:
            ch = await rig.next_channel()
            await asyncio.to_thread(bridge.ofctl, "add-flow", f"unix:{bridge.directory}/"
                                    f"{BRIDGE}.mgmt", "cookie=0x99,table=5,priority=1,actions=drop")
            rec = FlowReconciler(ch)
            old = flows_of(200)
            assert await rec.apply(old) == FlowDiff(200, 0, 1)
            assert set(dumped(rig.dump())) == {f.cookie for f in old}
            new = old[:150] + flows_of(300, port_offset=50)[200:]
            assert await rec.apply(new) == FlowDiff(100, 50, 0)
            assert set(dumped(rig.dump())) == {f.cookie for f in new}
            sent = ch.sent["flow_mod"]
            assert await rec.apply(new) == FlowDiff(0, 0, 0)
            assert ch.sent["flow_mod"] == sent
    run(body)


def test_changed_flow_replaces_in_place_plain_mode(bridge: OvsInstance) -> None:
    async def body() -> None:
        async with controller(bridge) as rig:
            rec = FlowReconciler(await rig.next_channel(), atomic=False)
            v1 = Flow(10, 5, match(in_port=1), (SetField("tunnel_id", 1), Output(2)))
            v2 = Flow(10, 5, match(in_port=1), (SetField("tunnel_id", 2), Output(2)))
            await rec.apply([v1])
            assert await rec.apply([v2]) == FlowDiff(1, 1, 0)
            text = rig.dump()
            assert set(dumped(text)) == {v2.cookie} and "set_field:0x2->tun_id" in text
    run(body)


def test_reconnect_resync_causes_no_churn(bridge: OvsInstance) -> None:
    async def body() -> None:
        async with controller(bridge) as rig:
            ch = await rig.next_channel()
            flows = flows_of(2000)  # flow stats span many multipart replies
            await FlowReconciler(ch).apply(flows)
            installed_at = time.monotonic()
            await ch.close()
            with pytest.raises(SouthboundError):
                await FlowReconciler(ch).resync()
            ch2 = await rig.next_channel()  # OVS reconnects by itself (max_backoff 1 s)
            rec = FlowReconciler(ch2)
            await rec.resync()
            assert rec.installed == {f.cookie for f in flows}
            assert await rec.apply(flows) == FlowDiff(0, 0, 0)
            assert ch2.sent["flow_mod"] == 0
            # Not re-added: every flow's age covers the whole time since the first install.
            ages = dumped(await asyncio.to_thread(rig.dump))
            elapsed = time.monotonic() - installed_at
            assert set(ages) == {f.cookie for f in flows}
            assert min(ages.values()) >= elapsed - 0.5
    run(body)


def test_restarted_server_resyncs_without_churn(bridge: OvsInstance) -> None:
    async def body() -> None:
        flows = flows_of(100)
        async with controller(bridge) as first:
            await FlowReconciler(await first.next_channel()).apply(flows)
            await first.server.close()  # the controller process dies; the Controller row stays
            async with controller(bridge, configure=False) as second:  # and is restarted
                ch = await second.next_channel()
                rec = FlowReconciler(ch)
                assert await rec.apply(flows) == FlowDiff(0, 0, 0)
                assert ch.sent["flow_mod"] == 0
                assert set(dumped(second.dump())) == {f.cookie for f in flows}
    run(body)


def test_role_requests_are_answered(bridge: OvsInstance) -> None:
    async def body() -> None:
        async with controller(bridge) as rig:
            ch = await rig.next_channel()
            assert await ch.set_role("MASTER", 10) == ("MASTER", 10)
            assert await ch.set_role("SLAVE", 11) == ("SLAVE", 11)
            with pytest.raises(SouthboundError, match="IS_SLAVE"):
                await ch.send_flow_batch(flows_of(1), [], atomic=False)
            with pytest.raises(SouthboundError, match="STALE"):
                await ch.set_role("MASTER", 3)
            assert await ch.set_role("MASTER", 12) == ("MASTER", 12)
            await ch.send_flow_batch(flows_of(1), [])
    run(body)


@pytest.mark.parametrize("atomic", [True, False])
def test_invalid_flows_raise_southbound_error(bridge: OvsInstance, atomic: bool) -> None:
    async def body() -> None:
        async with controller(bridge) as rig:
            ch = await rig.next_channel()
            good = flows_of(3)
            # Refused before sending: OpenFlow forbids going back to an earlier table.
            with pytest.raises(SouthboundError, match="must be after table"):
                await ch.send_flow_batch([*good, Flow(30, 1, match(in_port=1), goto=10)], [])
            assert dumped(rig.dump()) == {}
            # Refused by OVS: an IPv4 match without eth_type=0x0800 lacks its prerequisite.
            no_prereq = Flow(0, 10, match(ipv4_dst="10.0.0.1"), (Output(1),))
            with pytest.raises(SouthboundError, match="BAD_PREREQ"):
                await ch.send_flow_batch([*good, no_prereq], [], atomic=atomic)
            # All or nothing in a bundle; plain flow mods before the bad one stay.
            expected = set() if atomic else {f.cookie for f in good}
            assert set(dumped(rig.dump())) == expected
            assert ch.is_ready()
    run(body)


def test_counters_restart_on_replacement_and_a_deleted_flow_reports_its_final_ones(
        bridge: OvsInstance) -> None:
    """What the accounting relies on (accounting/ledger.py): a flow that replaces another in
    place counts from 0, and a flow the controller deletes tells its last counters."""
    from hypetunnel.accounting.flowstats import flow_counts

    frame = "02000000aa01" + "020000000001" + "0800" + "45" + "00" * 45  # 60 bytes

    async def body() -> None:
        async with controller(bridge) as rig:
            ch = await rig.next_channel()
            removed: list[tuple[int, int, int]] = []
            ch.on_flow_removed = lambda *c: removed.append(c)
            rec = FlowReconciler(ch)
            dst = match(eth_dst="02:00:00:00:aa:01")
            first = Flow(0, 100, dst)  # no actions: counted and dropped
            await rec.apply([first])

            async def send(n: int) -> None:
                for _ in range(n):
                    await asyncio.to_thread(bridge.ofctl, "packet-out", BRIDGE,
                                            f"in_port=controller packet={frame} actions=table")

            async def counts() -> dict[int, tuple[int, int]]:
                return {c.cookie: (c.packets, c.bytes)
                        for b in await ch.dump_flow_stats() for c in flow_counts(b)}

            await send(3)
            assert (await counts())[first.cookie] == (3, 180)
            second = Flow(0, 100, dst, (Output(7),))  # same match: replaces `first` in place
            await rec.apply([second])
            assert (await counts()) == {second.cookie: (0, 0)}
            await send(2)
            await rec.apply([])
            # From a bundle's commit it comes just after the barrier's reply.
            deadline = time.monotonic() + 10
            while not removed and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert removed == [(second.cookie, 2, 120)]
    run(body)
