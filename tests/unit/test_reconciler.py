"""Flow reconciler: the pure diff, and end to end through server + channel + a fake switch."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from hypetunnel.compiler.flows import Flow, Output, SetField, match
from hypetunnel.controller.reconciler import FlowDiff, FlowReconciler, plan_flows
from hypetunnel.errors import SouthboundError
from hypetunnel.southbound.openflow import ChannelState, OpenFlowServer, SwitchChannel
from hypetunnel.southbound.openflow.fakeswitch import FakeSwitch

TIMEOUT = 10.0


def l2_flows(n: int, port_offset: int = 0) -> list[Flow]:
    return [Flow(30, 100, match(metadata=i % 5, eth_dst=f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}"),
                 (Output(i % 8 + 1 + port_offset),)) for i in range(n)]


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), TIMEOUT))


# -- pure diff -----------------------------------------------------------------------------------

def test_plan_adds_missing_and_deletes_stale_and_foreign() -> None:
    a, b, c = l2_flows(3)
    plan = plan_flows([a, b], installed={b.cookie, c.cookie}, foreign={0x1, 0x2})
    assert plan.adds == [a]
    assert plan.stale == [c.cookie]
    assert plan.foreign == [0x1, 0x2]
    assert plan.deletes == [c.cookie, 0x1, 0x2]
    assert plan.diff == FlowDiff(added=1, removed=1, foreign_removed=2)


def test_plan_of_installed_set_is_empty_and_duplicates_collapse() -> None:
    flows = l2_flows(10)
    assert plan_flows(flows + flows, {f.cookie for f in flows}, set()).diff.empty
    assert len(plan_flows(flows + flows, set(), set()).adds) == 10


def test_plan_refuses_two_contents_for_one_flow_identity() -> None:
    a = Flow(0, 10, match(in_port=1), (Output(2),))
    b = Flow(0, 10, match(in_port=1), (Output(3),))
    with pytest.raises(SouthboundError, match="share table=0 priority=10"):
        plan_flows([a, b], set(), set())


# -- end to end with a fake switch ---------------------------------------------------------------

class Rig:
    """A server on a unix socket, one fake switch connected to it, the channel it produced."""

    def __init__(self, sock: Path, switch: FakeSwitch) -> None:
        self.sock = sock
        self.switch = switch
        self.channels: asyncio.Queue[SwitchChannel] = asyncio.Queue()
        self.server = OpenFlowServer(self._on_switch, echo_interval=0.05, echo_timeout=0.5)
        self.tasks: list[asyncio.Task[None]] = []
        self.address = ""

    async def _on_switch(self, channel: SwitchChannel) -> None:
        await self.channels.put(channel)

    async def connect(self) -> SwitchChannel:
        self.tasks.append(asyncio.create_task(self.switch.connect(self.address)))
        return await self.channels.get()


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, switch: FakeSwitch | None = None) -> AsyncIterator[Rig]:
    r = Rig(tmp_path / "of.sock", switch or FakeSwitch(0x42))
    r.address = await r.server.listen(f"unix:{r.sock}")
    try:
        yield r
    finally:
        await r.server.close()
        for t in r.tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
    assert not r.sock.exists()


def test_handshake_gives_datapath_id_and_printable_address(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path) as r:
            assert r.address == f"unix:{r.sock}"
            ch = await r.connect()
            assert ch.state is ChannelState.READY
            assert ch.datapath_id == 0x42
            assert str(r.sock) in ch.peer
    run(body)


def test_apply_installs_then_second_apply_sends_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path) as r:
            rec = FlowReconciler(await r.connect())
            flows = l2_flows(50)
            assert await rec.apply(flows) == FlowDiff(50, 0, 0)
            assert r.switch.cookies == sorted(f.cookie for f in flows)
            before = r.switch.received.copy()
            assert await rec.apply(flows) == FlowDiff(0, 0, 0)
            await rec.channel.barrier()  # flush: anything sent by apply would precede this
            after = r.switch.received
            assert after["flow_mod"] == before["flow_mod"]
            assert after["barrier"] == before["barrier"] + 1  # only our own flush barrier
    run(body)


@pytest.mark.parametrize("atomic", [True, False])
def test_change_adds_new_removes_stale_and_foreign(tmp_path: Path, atomic: bool) -> None:
    async def body() -> None:
        switch = FakeSwitch(7)
        foreign = Flow(0, 1, match(in_port=9), (Output(1),))
        async with rig(tmp_path, switch) as r:
            ch = await r.connect()
            # A flow somebody else installed (cookie not ours).
            await ch.send_flow_batch([foreign], [], atomic=False)
            foreign_cookie = 0x1234
            next(iter(switch.flows.values())).cookie = foreign_cookie
            rec = FlowReconciler(ch, atomic=atomic)
            old, new = l2_flows(20), l2_flows(20, port_offset=100)
            assert await rec.apply(old[:10]) == FlowDiff(10, 0, 1)
            diff = await rec.apply(old[5:10] + new[10:])
            assert diff == FlowDiff(10, 5, 0)
            assert switch.cookies == sorted(f.cookie for f in old[5:10] + new[10:])
            assert rec.installed == set(switch.cookies)
    run(body)


def test_same_key_new_content_replaces_in_place(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path) as r:
            rec = FlowReconciler(await r.connect())
            v1 = Flow(10, 5, match(in_port=1), (SetField("tunnel_id", 1), Output(2)))
            v2 = Flow(10, 5, match(in_port=1), (SetField("tunnel_id", 2), Output(2)))
            await rec.apply([v1])
            assert await rec.apply([v2]) == FlowDiff(1, 1, 0)
            assert r.switch.cookies == [v2.cookie]
    run(body)


def test_reconnect_resync_sends_no_flow_mods(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path) as r:
            ch = await r.connect()
            flows = l2_flows(3000)  # > 64 KiB of flow stats: multipart with the MORE flag
            await FlowReconciler(ch).apply(flows)
            seqs = {k: e.seq for k, e in r.switch.flows.items()}
            mods = r.switch.flow_mods
            await ch.close()
            with pytest.raises(SouthboundError, match="closed"):
                await FlowReconciler(ch).apply(flows)
            ch2 = await r.connect()
            rec = FlowReconciler(ch2)
            await rec.resync()
            assert rec.installed == {f.cookie for f in flows}
            assert await rec.apply(flows) == FlowDiff(0, 0, 0)
            assert ch2.sent["flow_mod"] == 0 and r.switch.flow_mods == mods
            assert {k: e.seq for k, e in r.switch.flows.items()} == seqs  # not re-added
    run(body)


@pytest.mark.parametrize("atomic", [True, False])
def test_rejected_flow_raises_and_atomic_applies_nothing(tmp_path: Path, atomic: bool) -> None:
    async def body() -> None:
        async with rig(tmp_path, FakeSwitch(9, reject_tables={50})) as r:
            rec = FlowReconciler(await r.connect(), atomic=atomic)
            good = l2_flows(5)
            bad = Flow(50, 1, match(in_port=1), (Output(1),))
            with pytest.raises(SouthboundError, match="OFPET_FLOW_MOD_FAILED"):
                await rec.apply([*good, bad])
            assert len(r.switch.flows) == (0 if atomic else 5)
            assert not rec.synced  # next apply re-reads the switch first
            assert await rec.apply(good) == FlowDiff(0 if not atomic else 5, 0, 0)
    run(body)


def test_malformed_flow_sends_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path) as r:
            ch = await r.connect()
            with pytest.raises(SouthboundError, match="after table"):
                await ch.send_flow_batch([*l2_flows(3), Flow(5, 1, match(), goto=2)], [])
            await ch.barrier()
            assert r.switch.flow_mods == 0
    run(body)


def test_role_request_and_stale_generation(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path) as r:
            ch = await r.connect()
            assert await ch.set_role("MASTER", 5) == ("MASTER", 5)
            assert await ch.set_role("NOCHANGE", 0) == ("MASTER", 5)
            with pytest.raises(SouthboundError, match="OFPRRFC_STALE"):
                await ch.set_role("SLAVE", 4)
            assert await ch.set_role("SLAVE", 6) == ("SLAVE", 6)
            with pytest.raises(SouthboundError, match="IS_SLAVE"):
                await ch.send_flow_batch(l2_flows(1), [], atomic=False)
    run(body)


def test_silent_switch_is_closed_by_echo_timeout(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path, FakeSwitch(3, answer_echo=False)) as r:
            ch = await r.connect()
            await asyncio.wait_for(ch.wait_closed(), 3)
            assert ch.state is ChannelState.CLOSED
            assert "echo" in ch.close_reason
            with pytest.raises(SouthboundError):
                await ch.dump_flow_cookies()
    run(body)


def test_switch_disconnect_closes_channel_and_fails_waiters(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path) as r:
            ch = await r.connect()
            r.tasks[-1].cancel()  # the fake switch goes away
            await asyncio.wait_for(ch.wait_closed(), 3)
            assert ch.state is ChannelState.CLOSED
            with pytest.raises(SouthboundError, match="closed"):
                await FlowReconciler(ch).resync()
    run(body)


def test_handler_exception_is_logged_and_closes_channel(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        seen: asyncio.Queue[SwitchChannel] = asyncio.Queue()

        async def bad_handler(ch: SwitchChannel) -> None:
            await seen.put(ch)
            raise RuntimeError("handler exploded")

        server = OpenFlowServer(bad_handler)
        address = await server.listen("tcp:127.0.0.1:0")
        assert address.startswith("tcp:127.0.0.1:") and not address.endswith(":0")
        task = asyncio.create_task(FakeSwitch(5).connect(address))
        try:
            ch = await seen.get()
            await asyncio.wait_for(ch.wait_closed(), 3)
        finally:
            await server.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    run(body)
    assert "handler exploded" in caplog.text
