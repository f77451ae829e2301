"""OvsdbClient against a real ovsdb-server + ovs-vswitchd (userspace datapath).

Each test gets its own OVS instance in a fresh temp directory, running in its own network
namespace so the netdev datapath's tap devices (br-int, internal ports) never meet those of a
concurrent run. Timings are printed (run with -s to see them).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from hypetunnel.compiler.tunnels import tunnel_port
from hypetunnel.errors import SouthboundError
from hypetunnel.lab.ovs import OvsInstance
from hypetunnel.lab.proc import run, wait_until
from hypetunnel.southbound.observation import SwitchObservation
from hypetunnel.southbound.ovsdb import OvsdbClient

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.timeout(120)]

CONTROLLER = "tcp:127.0.0.1:6653"
VX = tunnel_port("vxlan", "10.0.0.2", "hv2")
GR = tunnel_port("gre", "10.0.0.3", "hv3")
GN = tunnel_port("geneve", "10.0.0.4", "hv4")


@pytest.fixture
def ovs_unstarted() -> Iterator[OvsInstance]:
    """An OVS instance in its own netns and temp dir, not started; always torn down."""
    netns = f"htosb{os.getpid()}{secrets.token_hex(2)}"
    directory = Path(tempfile.mkdtemp(prefix=f"ht-ovsdb-{os.getpid()}-"))
    run(["ip", "netns", "add", netns])
    ovs = OvsInstance(directory, netns=netns)
    try:
        yield ovs
    finally:
        try:
            ovs.stop()
        finally:
            run(["ip", "netns", "delete", netns], check=False)
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def ovs(ovs_unstarted: OvsInstance) -> OvsInstance:
    ovs_unstarted.start()
    return ovs_unstarted


class Recorder:
    """Collects what the client delivers on the loop."""

    def __init__(self) -> None:
        self.changes: list[SwitchObservation] = []
        self.connection: list[bool] = []


def client_for(ovs: OvsInstance, rec: Recorder) -> OvsdbClient:
    return OvsdbClient("hv1", ovs.endpoint, on_change=rec.changes.append,
                       on_connection=rec.connection.append)


def run_async(coro_fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro_fn())


async def until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def obs(c: OvsdbClient) -> SwitchObservation:
    assert c.observation is not None
    return c.observation


def vsctl_get(ovs: OvsInstance, table: str, record: str, column: str) -> str:
    return ovs.vsctl("get", table, record, column)


def test_start_syncs_quickly_and_ensure_bridge_configures_br_int(ovs: OvsInstance) -> None:
    async def body() -> None:
        rec = Recorder()
        c = client_for(ovs, rec)
        try:
            t0 = time.monotonic()
            await c.start(timeout=10)
            print(f"\nstart() + initial sync: {(time.monotonic() - t0) * 1000:.1f} ms")
            assert c.connected and rec.connection == [True]
            assert obs(c).ports == {} and obs(c).datapath_id is None  # no br-int yet

            t0 = time.monotonic()
            assert await c.ensure_bridge(datapath_type="netdev", controller_targets=[CONTROLLER],
                                         datapath_id=0x42)
            print(f"ensure_bridge (create): {(time.monotonic() - t0) * 1000:.1f} ms")
            assert vsctl_get(ovs, "Bridge", "br-int", "datapath_type") == "netdev"
            assert vsctl_get(ovs, "Bridge", "br-int", "fail_mode") == "secure"
            assert vsctl_get(ovs, "Bridge", "br-int", "protocols") == "[OpenFlow13]"
            other = vsctl_get(ovs, "Bridge", "br-int", "other_config")
            assert 'datapath-id="0000000000000042"' in other and 'disable-in-band="true"' in other
            assert ovs.vsctl("get-controller", "br-int") == CONTROLLER
            assert ovs.vsctl("--bare", "--columns=max_backoff,inactivity_probe", "list",
                             "Controller").split() == ["1000", "5000"]
            assert ovs.vsctl("list-ports", "br-int") == ""  # only the bridge's own port
            # ovs-vswitchd picks the datapath id up and reports it back.
            await until(lambda: obs(c).datapath_id == 0x42, "datapath_id 0x42")
            await until(lambda: obs(c).ofport("br-int") == 65534, "br-int LOCAL port")

            # Idempotent; a foreign port survives; a controller change replaces the row.
            assert not await c.ensure_bridge(datapath_type="netdev",
                                             controller_targets=[CONTROLLER], datapath_id=0x42)
            ovs.vsctl("add-port", "br-int", "other0", "--", "set", "Interface", "other0",
                      "type=internal")
            assert await c.ensure_bridge(datapath_type="netdev",
                                         controller_targets=["tcp:127.0.0.1:6654"])
            assert ovs.vsctl("get-controller", "br-int") == "tcp:127.0.0.1:6654"
            assert ovs.vsctl("--bare", "--columns=target", "list", "Controller") == \
                "tcp:127.0.0.1:6654"
            assert ovs.vsctl("list-ports", "br-int") == "other0"
        finally:
            await c.stop()

    run_async(body)


def test_ensure_tunnels_creates_fixes_and_removes_only_ours(ovs: OvsInstance) -> None:
    async def body() -> None:
        rec = Recorder()
        c = client_for(ovs, rec)
        try:
            await c.start()
            await c.ensure_bridge(datapath_type="netdev", controller_targets=[CONTROLLER])
            desired = frozenset({VX, GR, GN})
            t0 = time.monotonic()
            assert await c.ensure_tunnels(desired)
            print(f"\nensure_tunnels (3 ports, commit): {(time.monotonic() - t0) * 1000:.1f} ms")
            # The commit is visible in the observation as soon as the call returns.
            assert obs(c).tunnels == desired
            await until(lambda: all(obs(c).ofport(t.name) for t in desired), "tunnel ofports")
            print(f"... until all 3 have ofports: {(time.monotonic() - t0) * 1000:.1f} ms")
            assert all(obs(c).ports[t.name].ofport > 0 for t in desired)
            assert vsctl_get(ovs, "Interface", VX.name, "type") == "vxlan"
            assert vsctl_get(ovs, "Interface", GR.name, "options") == \
                '{key=flow, remote_ip="10.0.0.3"}'
            assert vsctl_get(ovs, "Interface", GN.name, "external_ids") == \
                '{hypetunnel-remote=hv4, hypetunnel-tunnel="true"}'
            assert vsctl_get(ovs, "Interface", VX.name, "bfd") == \
                '{enable="true", min_rx="100", min_tx="100", mult="3"}'

            # Same desire again: nothing is committed (and no snapshot change is caused).
            seen = len(rec.changes)
            t0 = time.monotonic()
            assert not await c.ensure_tunnels(desired)
            print(f"ensure_tunnels (no-op): {(time.monotonic() - t0) * 1000:.2f} ms")
            assert len(rec.changes) == seen

            # Someone edits our port: the next call puts it back.
            ovs.vsctl("set", "Interface", VX.name, "options:remote_ip=10.9.9.9")
            await until(lambda: VX not in obs(c).tunnels, "the edit to be observed")
            assert await c.ensure_tunnels(desired)
            assert obs(c).tunnels == desired
            assert vsctl_get(ovs, "Interface", VX.name, "options:remote_ip") == '"10.0.0.2"'

            # A foreign tunnel port (no marker) is never removed.
            ovs.vsctl("add-port", "br-int", "foreign0", "--", "set", "Interface", "foreign0",
                      "type=vxlan", "options:remote_ip=10.1.1.1")
            assert await c.ensure_tunnels(frozenset({VX}))
            assert sorted(ovs.vsctl("list-ports", "br-int").split()) == ["foreign0", VX.name]
            assert obs(c).tunnels == frozenset({VX})
            assert await c.ensure_tunnels(frozenset())
            assert ovs.vsctl("list-ports", "br-int") == "foreign0"
            assert obs(c).tunnels == frozenset() and "foreign0" in obs(c).ports

            # A desired name held by a foreign port is refused, and nothing is changed.
            squat = tunnel_port("vxlan", "10.1.1.1", "hv9")
            ovs.vsctl("add-port", "br-int", squat.name)
            await until(lambda: squat.name in obs(c).ports, "squatter observed")
            with pytest.raises(SouthboundError, match="does not own"):
                await c.ensure_tunnels(frozenset({squat, VX}))
            assert sorted(ovs.vsctl("list-ports", "br-int").split()) == ["foreign0", squat.name]
        finally:
            await c.stop()

    run_async(body)


def test_ensure_tunnels_without_bridge_is_a_southbound_error(ovs: OvsInstance) -> None:
    async def body() -> None:
        c = OvsdbClient("hv1", ovs.endpoint)
        try:
            await c.start()
            with pytest.raises(SouthboundError, match="does not exist"):
                await c.ensure_tunnels(frozenset({VX}))
        finally:
            await c.stop()

    run_async(body)


def test_bindings_follow_iface_id_ports(ovs: OvsInstance) -> None:
    async def body() -> None:
        rec = Recorder()
        c = client_for(ovs, rec)
        try:
            await c.start()
            await c.ensure_bridge(datapath_type="netdev", controller_targets=[CONTROLLER])
            await until(lambda: obs(c).ofport("br-int") is not None, "br-int ofport")
            seen = len(rec.changes)
            ovs.vsctl("add-port", "br-int", "web1tap", "--", "set", "Interface", "web1tap",
                      "type=internal", "external_ids:iface-id=acme/web1")
            await until(lambda: "acme/web1" in obs(c).bindings(), "binding of acme/web1")
            port = obs(c).bindings()["acme/web1"]
            assert port.name == "web1tap" and port.ofport > 0
            assert port.ofport == int(vsctl_get(ovs, "Interface", "web1tap", "ofport"))
            assert any("acme/web1" in o.bindings() for o in rec.changes[seen:])
            assert rec.changes[-1] is c.observation  # on_change got the current snapshot

            ovs.vsctl("del-port", "br-int", "web1tap")
            await until(lambda: "web1tap" not in obs(c).ports, "web1tap removal")
            assert "acme/web1" not in rec.changes[-1].bindings()
            # on_change fires only for real differences: consecutive snapshots all differ.
            assert all(a != b for a, b in zip(rec.changes, rec.changes[1:], strict=False))
        finally:
            await c.stop()

    run_async(body)


def _restart_ovsdb_server(ovs: OvsInstance) -> None:
    """Kill only ovsdb-server and start it again with its exact command line."""
    pid = int((ovs.directory / "ovsdb-server.pid").read_text().strip())
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), 10, "ovsdb-server to exit")
    run([a.decode() for a in argv], netns=ovs.netns)


def test_reconnects_and_resyncs_after_ovsdb_server_restart(ovs: OvsInstance) -> None:
    async def body() -> None:
        rec = Recorder()
        c = client_for(ovs, rec)
        try:
            await c.start()
            await c.ensure_bridge(datapath_type="netdev", controller_targets=[CONTROLLER])
            await c.ensure_tunnels(frozenset({VX}))

            await asyncio.to_thread(_restart_ovsdb_server, ovs)
            t0 = time.monotonic()
            await until(lambda: rec.connection[-2:] == [False, True], "disconnect + reconnect")
            print(f"\nresynchronised {(time.monotonic() - t0) * 1000:.0f} ms after the restarted "
                  "ovsdb-server was up")
            assert c.connected
            assert obs(c).tunnels == frozenset({VX})

            # The replica is live again: outside changes show up and writes work.
            ovs.vsctl("add-port", "br-int", "db2tap", "--", "set", "Interface", "db2tap",
                      "type=internal", "external_ids:iface-id=acme/db2")
            await until(lambda: "acme/db2" in obs(c).bindings(), "binding after reconnect")
            assert await c.ensure_tunnels(frozenset({VX, GR}))
            assert obs(c).tunnels == frozenset({VX, GR})
        finally:
            await c.stop()

    run_async(body)


def test_start_times_out_but_keeps_trying_until_the_server_is_up(
        ovs_unstarted: OvsInstance) -> None:
    async def body() -> None:
        rec = Recorder()
        c = client_for(ovs_unstarted, rec)
        try:
            with pytest.raises(SouthboundError, match="not synchronised"):
                await c.start(timeout=0.3)
            assert not c.connected and c.observation is None
            with pytest.raises(SouthboundError, match="timed out"):
                await c.ensure_tunnels(frozenset({VX}), timeout=0.2)
            await asyncio.to_thread(ovs_unstarted.start)
            await c.wait_ready(timeout=15)
            assert c.connected and rec.connection == [True]
            assert await c.ensure_bridge(datapath_type="netdev", controller_targets=[])
        finally:
            await c.stop()

    run_async(body)


def test_stop_ends_the_thread_and_fails_later_writes(ovs: OvsInstance) -> None:
    async def body() -> None:
        c = OvsdbClient("hv1", ovs.endpoint)
        await c.start()
        await c.stop()
        assert not c.connected
        assert not any(t.name == "ovsdb-hv1" for t in threading.enumerate())
        with pytest.raises(SouthboundError, match="not started"):
            await c.ensure_tunnels(frozenset())

    run_async(body)
