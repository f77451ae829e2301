"""The whole controller against real Open vSwitch: no VMs, no packets.

Three hypervisors are three OVS instances (ovsdb-server + ovs-vswitchd, userspace datapath),
each in its own network namespace and temp directory. The Controller runs in-process on the
test's event loop with a SqliteStore; its OpenFlow listener is one unix socket, reached by every
ovs-vswitchd through a `controller.sock` link in its own run directory (ovs-vswitchd refuses
unix controller sockets elsewhere). VM ports are internal ports carrying
external_ids:iface-id=tenant/vm, as Nova/libvirt plugs them (never brought up). Underlay
addresses (172.31.x) are only written into tunnel ports: nothing is ever sent; the only frames
are injected at a bridge's LOCAL port straight into table 0's drop flow, to give counters a value.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from hypetunnel.compiler.flows import COOKIE_PREFIX, COOKIE_SHIFT
from hypetunnel.compiler.pipeline import base_flows
from hypetunnel.compiler.tunnels import tunnel_port_name
from hypetunnel.controller.runtime import Controller
from hypetunnel.controller.switch import datapath_id_for
from hypetunnel.lab.controller import free_port
from hypetunnel.lab.ovs import OvsInstance
from hypetunnel.lab.proc import LabError, run, wait_until
from hypetunnel.model.intent import VM, Fabric, Hypervisor, Intent, Network, Tenant
from hypetunnel.store.sqlite import SqliteStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ovs-vswitchd"),
                       reason="needs root and Open vSwitch"),
    pytest.mark.timeout(180),
]

BRIDGE = "br-int"
TENANT = "acme"
UNDERLAY = {"hv1": "172.31.0.1", "hv2": "172.31.0.2", "hv3": "172.31.0.3"}
DEADLINE = 30.0  # per awaited condition; convergence normally takes well under a second
SRC = Path(__file__).resolve().parents[2] / "src"
# The datapath type is enlistment data of each hypervisor (older intents had it fabric-wide).
_PER_HV = "datapath_type" in Hypervisor.model_fields
_NETDEV_HV: dict[str, Any] = {"datapath_type": "netdev"} if _PER_HV else {}
_NETDEV_FABRIC: dict[str, Any] = {} if _PER_HV else {"datapath_type": "netdev"}


# -- the rig: OVS instances, a store, the controller socket ----------------------------------
@dataclass
class Hv:
    name: str
    ovs: OvsInstance
    netns: str

    def vsctl(self, *args: str) -> str:
        return self.ovs.vsctl(*args)


@dataclass
class Rig:
    root: Path
    hvs: dict[str, Hv]

    @property
    def of_socket(self) -> Path:
        return self.root / "of.sock"

    @property
    def store_path(self) -> Path:
        return self.root / "state" / "store.db"

    def intent(self, vms: dict[str, str]) -> Intent:
        """Every hypervisor enlisted (userspace datapath); one tenant with networks web and db;
        vms: name -> hv (VMs named db* go on network db, the others on web)."""
        return Intent(
            fabric=Fabric(**_NETDEV_FABRIC),
            hypervisors=[Hypervisor(name=h.name, underlay_ip=UNDERLAY[h.name],  # type: ignore[arg-type]
                                    ovsdb=h.ovs.endpoint, **_NETDEV_HV)
                         for h in self.hvs.values()],
            tenants=[Tenant(
                name=TENANT,
                networks=[Network(name="web", cidr="10.0.1.0/24"),  # type: ignore[arg-type]
                          Network(name="db", cidr="10.0.2.0/24")],  # type: ignore[arg-type]
                vms=[VM(name=v, network="db" if v.startswith("db") else "web", hypervisor=hv)
                     for v, hv in vms.items()])])


def _start_hypervisor(root: Path, name: str, netns: str) -> Hv:
    run(["ip", "netns", "add", netns])
    hv = Hv(name, OvsInstance(root / name, netns=netns), netns)
    hv.ovs.start()
    # What enlistment does: br-int pointed at the controller through a link in the run dir.
    link = hv.ovs.directory / "controller.sock"
    link.symlink_to(root / "of.sock")
    hv.vsctl("add-br", BRIDGE, "--", "set", "bridge", BRIDGE, "datapath_type=netdev",
             "fail_mode=secure", "protocols=OpenFlow13",
             "--", "set-controller", BRIDGE, f"unix:{link}")
    # Reconnect within a second when the controller restarts (the default backoff is 8 s).
    hv.vsctl("set", "controller", BRIDGE, "max_backoff=1000")
    return hv


@pytest.fixture
def rig() -> Iterator[Rig]:
    # Short path: unix socket paths are limited to 108 bytes.
    root = Path(tempfile.mkdtemp(prefix=f"htctl-{os.getpid()}-"))
    tag = f"htc{os.getpid()}{secrets.token_hex(2)}"
    hvs: dict[str, Hv] = {}
    namespaces: list[str] = []
    try:
        for i, name in enumerate(UNDERLAY, 1):
            namespaces.append(f"{tag}h{i}")
            hvs[name] = _start_hypervisor(root, name, namespaces[-1])
        yield Rig(root, hvs)
    finally:
        for name in UNDERLAY:  # also a half-started one: stop() goes by the pid files
            with contextlib.suppress(Exception):
                OvsInstance(root / name).stop()
        for ns in namespaces:
            run(["ip", "netns", "delete", ns], check=False)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.asynccontextmanager
async def controller(rig: Rig, startup_grace: float = 15.0) -> AsyncIterator[Controller]:
    store = SqliteStore(rig.store_path)
    ctl = Controller(store, openflow_listen=[f"unix:{rig.of_socket}"],
                     startup_grace=startup_grace)
    try:
        await ctl.start()
        yield ctl
    finally:
        try:
            await ctl.stop()
        finally:
            store.close()


def run_test(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 150))  # type: ignore[arg-type]


# -- waiting ---------------------------------------------------------------------------------
async def until(cond: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll a condition evaluated on the loop (controller state)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def until_ovs(cond: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll a condition that runs ovs-vsctl/ovs-ofctl: off the loop, so the controller works."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(cond):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def settled(ctl: Controller) -> bool:
    """Every switch has exactly its desired flows and tunnels, and nothing is left to do."""
    topo = ctl.topology
    # Per switch: the fabric-wide "converged" also wants every VM of the intent bound, and
    # these tests leave some VMs unplugged on purpose.
    switches = ctl.status()["switches"]
    return (bool(switches) and all(s["converged"] for s in switches)
            and not topo.dirty and not topo.dirty_switches
            and not any(st.pending or st.lock.locked() for st in ctl.switches.values()))


async def converged(ctl: Controller, rig: Rig, bound: dict[str, str]) -> None:
    """Wait until the controller sees exactly `bound` (vm id -> hv) and every switch holds
    exactly the compiled flows, including those through tunnel ports (compiled only once OVS
    has numbered the ports)."""
    await until(lambda: ctl.bindings() == bound, f"bindings {bound}")
    deadline = time.monotonic() + DEADLINE
    while True:
        # Controller state is read on the loop; only the ovs-ofctl calls go to a thread.
        want = _complete_flows(ctl) if settled(ctl) else None
        if want is not None:
            have = await asyncio.to_thread(
                lambda: {h: set(dump_flows(hv)) for h, hv in rig.hvs.items()})
            if have == want and settled(ctl) and _complete_flows(ctl) == want:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {DEADLINE}s waiting for convergence: "
                                 f"{ctl.status()}")
        await asyncio.sleep(0.05)


def _complete_flows(ctl: Controller) -> dict[str, set[int]] | None:
    """Compiled cookies per switch, or None while a remote VM's flow still waits for its
    tunnel port's number."""
    topo = ctl.topology
    out = {}
    for name in ctl.switches:
        flows = ctl.compiler.flows(name)
        macs = {dict(f.match).get("eth_dst") for f in flows if f.table == 20}
        for vni in topo.networks_on.get(name, ()):
            if any(vm.mac not in macs for vm in topo.bound_members(vni)):
                return None
        out[name] = {f.cookie for f in flows}
    return out


# -- reading OVS -----------------------------------------------------------------------------
@dataclass(frozen=True)
class DumpedFlow:
    cookie: int
    duration: float
    table: int
    n_packets: int
    priority: int
    match: str
    actions: str


_FLOW = re.compile(r"cookie=(0x[0-9a-f]+), duration=([0-9.]+)s, table=(\d+), n_packets=(\d+),"
                   r" n_bytes=\d+, (?:[a-z_]+=\S+, )*(?:[a-z_]+ )*priority=(\d+),?(\S*)"
                   r" actions=(\S+)")  # the flags (send_flow_rem reset_counts) before priority


def dump_flows(hv: Hv) -> dict[int, DumpedFlow]:
    out: dict[int, DumpedFlow] = {}
    text = hv.ovs.ofctl("dump-flows", bridge_mgmt=BRIDGE)
    for line in text.splitlines()[1:]:  # first line: the OFPST_FLOW reply header
        m = _FLOW.search(line)
        assert m is not None, f"unparsed flow line: {line!r}"
        f = DumpedFlow(int(m[1], 16), float(m[2]), int(m[3]), int(m[4]), int(m[5]), m[6], m[7])
        assert f.cookie not in out, f"two flows with cookie {f.cookie:#x} on {hv.name}"
        out[f.cookie] = f
    return out


def tunnels(hv: Hv) -> dict[str, dict[str, str]]:
    """Tunnel ports: name -> type, remote_ip, key. One read of the Interface table: port by
    port, a port the controller removed between two ovs-vsctl calls failed the read ("no
    row"), exactly while a test waited for that removal."""
    ports = set(hv.vsctl("list-ports", BRIDGE).split())
    doc = json.loads(hv.vsctl("--format=json", "--columns=name,type,options", "list",
                              "Interface"))
    out = {}
    for name, kind, options in doc["data"]:
        if name in ports and kind in ("vxlan", "gre", "geneve"):
            opts = dict(options[1])  # ["map", [[key, value], ...]]
            out[name] = {"type": kind, "remote_ip": opts.get("remote_ip", ""),
                         "key": opts.get("key", "")}
    return out


def tunnel_to(there: str) -> str:
    """Name of the (vxlan) tunnel port towards hypervisor `there`, on any other hypervisor."""
    return tunnel_port_name("vxlan", UNDERLAY[there])


def ofport(hv: Hv, port: str) -> int:
    return int(hv.vsctl("get", "Interface", port, "ofport"))


def outputs(flow: DumpedFlow) -> list[str]:
    return re.findall(r"output:([\w-]+)", flow.actions)


def flows_to_mac(hv: Hv, mac: str) -> list[DumpedFlow]:
    """Our table-20 unicast flows for one destination MAC."""
    return [f for f in dump_flows(hv).values()
            if f.table == 20 and f"dl_dst={mac}" in f.match.split(",")]


def points_to(hv: Hv, mac: str, port: str) -> bool:
    """Exactly one L2 flow for `mac` on hv, and it outputs to `port` (by number or name)."""
    flows = flows_to_mac(hv, mac)
    if len(flows) != 1:
        return False
    try:
        number = ofport(hv, port)
    except LabError:  # the port is not (or no longer) there
        return False
    return outputs(flows[0]) in ([str(number)], [port])


# -- plugging VM ports (what Nova/libvirt does) ------------------------------------------------
def tap(vm: str) -> str:
    return f"t-{vm}"[:15]


async def plug(hv: Hv, vm: str) -> None:
    await asyncio.to_thread(hv.vsctl, "add-port", BRIDGE, tap(vm), "--", "set", "Interface",
                            tap(vm), "type=internal", f"external_ids:iface-id={TENANT}/{vm}")


async def unplug(hv: Hv, vm: str) -> None:
    await asyncio.to_thread(hv.vsctl, "del-port", BRIDGE, tap(vm))


def mac_of(ctl: Controller, vm: str) -> str:
    tenant = ctl.intent.tenant(TENANT)
    assert tenant is not None
    mac = next(v.mac for v in tenant.vms if v.name == vm)
    assert mac is not None
    return mac


def vid(vm: str) -> str:
    return f"{TENANT}/{vm}"


def expect_tunnel(there: str) -> dict[str, dict[str, str]]:
    """What tunnels() shows for the one tunnel port towards `there`."""
    return {tunnel_to(there): {"type": "vxlan", "remote_ip": UNDERLAY[there], "key": "flow"}}


# -- tests -----------------------------------------------------------------------------------
def test_tunnels_exist_only_between_hypervisors_sharing_a_network(rig: Rig) -> None:
    hv1, hv2, hv3 = rig.hvs["hv1"], rig.hvs["hv2"], rig.hvs["hv3"]

    async def body() -> None:
        async with controller(rig) as ctl:
            ctl.service.apply(rig.intent({"web1": "hv1", "web2": "hv2", "db1": "hv3"}))
            # The controller configures the bridge's datapath id itself (ensure_bridge).
            for hv in rig.hvs.values():
                await until_ovs(lambda hv=hv: hv.vsctl(  # type: ignore[misc]
                    "--if-exists", "get", "Bridge", BRIDGE, "other_config:datapath-id"
                ).strip('"') == f"{datapath_id_for(hv.name):016x}", f"datapath-id on {hv.name}")
                # ... and keeps the userspace datapath the enlistment asked for.
                assert hv.vsctl("get", "Bridge", BRIDGE, "datapath_type") == "netdev"
            await until(lambda: all(st.openflow_ready for st in ctl.switches.values()),
                        "every switch connected over OpenFlow")

            # One VM per network per hypervisor, nobody shares: no tunnels at all.
            await plug(hv1, "web1")
            await plug(hv3, "db1")
            await converged(ctl, rig, {vid("web1"): "hv1", vid("db1"): "hv3"})
            assert [tunnels(h) for h in rig.hvs.values()] == [{}, {}, {}]

            # web2 on hv2: hv1 and hv2 now share "web"; hv3 (only "db") gets nothing.
            await plug(hv2, "web2")
            await converged(ctl, rig, {vid("web1"): "hv1", vid("db1"): "hv3",
                                       vid("web2"): "hv2"})
            assert tunnels(hv1) == expect_tunnel("hv2")
            assert tunnels(hv2) == expect_tunnel("hv1")
            assert tunnels(hv3) == {}

            # The last VM of "web" on hv2 unplugged: both tunnels go.
            await unplug(hv2, "web2")
            await until_ovs(lambda: not tunnels(hv1) and not tunnels(hv2),
                            "tunnels removed after unplug")
            await converged(ctl, rig, {vid("web1"): "hv1", vid("db1"): "hv3"})

            # Plugged again they come back; deleting the VM from the intent (its port still
            # plugged, iface-id and all) removes them again.
            await plug(hv2, "web2")
            await until_ovs(lambda: tunnels(hv1) == expect_tunnel("hv2")
                            and tunnels(hv2) == expect_tunnel("hv1"),
                            "tunnels back after re-plug")
            ctl.service.delete_vm(TENANT, "web2")
            await until_ovs(lambda: not tunnels(hv1) and not tunnels(hv2),
                            "tunnels removed after delete_vm")
            await until(lambda: settled(ctl), "settled after delete_vm")
            assert tunnels(hv3) == {}

    run_test(body)


def test_bindings_and_flows_follow_iface_ids(rig: Rig) -> None:
    hv1, hv2, hv3 = rig.hvs["hv1"], rig.hvs["hv2"], rig.hvs["hv3"]

    async def body() -> None:
        async with controller(rig) as ctl:
            ctl.service.apply(rig.intent({"web1": "hv1", "web2": "hv2"}))
            await plug(hv1, "web1")
            await plug(hv2, "web2")
            await converged(ctl, rig, {vid("web1"): "hv1", vid("web2"): "hv2"})
            web1, web2 = mac_of(ctl, "web1"), mac_of(ctl, "web2")

            for hv in rig.hvs.values():
                flows = dump_flows(hv)
                # Every flow on br-int is ours (cookie prefix "HT") and exactly the compiled set.
                assert flows and all(c >> COOKIE_SHIFT == COOKIE_PREFIX for c in flows)
                assert all(f"{c:#x}".startswith("0x4854") for c in flows)
                assert set(flows) == {f.cookie for f in ctl.compiler.flows(hv.name)}
            # Local delivery on the VM's own switch, tunnel towards it on the peer.
            assert points_to(hv1, web1, tap("web1"))
            assert points_to(hv2, web2, tap("web2"))
            assert points_to(hv2, web1, tunnel_to("hv1"))
            assert points_to(hv1, web2, tunnel_to("hv2"))
            (to_web1,) = flows_to_mac(hv2, web1)
            assert "set_field:" in to_web1.actions and "->tun_id" in to_web1.actions
            # hv3 hosts no VM: only the base flows (drop in 0, goto in 10, the latency
            # probes' two), no VM MACs.
            assert not flows_to_mac(hv3, web1) and not flows_to_mac(hv3, web2)
            assert len(dump_flows(hv3)) == len(base_flows())

            st = ctl.status()
            assert st["vms"] == {"total": 2, "bound": 2}
            by_hv = {s["hypervisor"]: s for s in st["switches"]}
            assert by_hv["hv1"]["vms_bound"] == 1 and by_hv["hv3"]["vms_bound"] == 0
            assert by_hv["hv1"]["tunnels"] == 1 and by_hv["hv3"]["tunnels"] == 0

            # A port whose iface-id names no VM of the intent is bound but programs nothing.
            await asyncio.to_thread(hv3.vsctl, "add-port", BRIDGE, "t-stray", "--", "set",
                                    "Interface", "t-stray", "type=internal",
                                    "external_ids:iface-id=acme/nobody")
            await until(lambda: ctl.bindings().get("acme/nobody") == "hv3", "stray binding")
            await until(lambda: settled(ctl), "settled with a stray port")
            assert len(dump_flows(hv3)) == len(base_flows()) and not tunnels(hv3)

            # Unplugging web2 forgets its binding and its flows everywhere.
            await unplug(hv2, "web2")
            await until(lambda: vid("web2") not in ctl.bindings(), "web2 unbound")
            await until_ovs(lambda: not flows_to_mac(hv1, web2) and not flows_to_mac(hv2, web2),
                            "web2 flows removed")
            assert points_to(hv1, web1, tap("web1"))

    run_test(body)


def test_controller_restart_resyncs_without_flow_churn(rig: Rig) -> None:
    hv1, hv2, hv3 = rig.hvs["hv1"], rig.hvs["hv2"], rig.hvs["hv3"]
    ours = ("hv1", "hv2", "hv3")

    async def body() -> None:
        async with controller(rig) as ctl:
            ctl.service.apply(rig.intent({"web1": "hv1", "web2": "hv2", "web3": "hv3",
                                          "db1": "hv1", "db2": "hv3"}))
            for hv, vm in ((hv1, "web1"), (hv2, "web2"), (hv3, "web3"), (hv1, "db1"),
                           (hv3, "db2")):
                await plug(hv, vm)
            bound = {vid("web1"): "hv1", vid("web2"): "hv2", vid("web3"): "hv3",
                     vid("db1"): "hv1", vid("db2"): "hv3"}
            await converged(ctl, rig, bound)
            first_generation = {h: ctl.switches[h].programmed_generation for h in ours}
            assert all(first_generation.values())

        # Give the flows counters worth keeping: frames injected at the bridge's LOCAL port hit
        # table 0's explicit drop (they never reach a VM port or a tunnel).
        for hv in rig.hvs.values():
            await asyncio.to_thread(inject_dropped_frames, hv, 3)
        await until_ovs(lambda: all(_drop_flow(rig.hvs[h]).n_packets == 3 for h in ours),
                        "injected frames counted by the drop flows")
        ports_before = await asyncio.to_thread(_tunnel_identity, rig)
        before = {h: await asyncio.to_thread(dump_flows, rig.hvs[h]) for h in ours}
        t_before = time.monotonic()

        # Same store, same socket path: a new process would look exactly like this.
        async with controller(rig) as ctl:
            await until(lambda: all(st.openflow_ready for st in ctl.switches.values()),
                        "every switch reconnected", timeout=DEADLINE)
            await converged(ctl, rig, bound)
            t_after = time.monotonic()
            after = {h: await asyncio.to_thread(dump_flows, rig.hvs[h]) for h in ours}

            for h in ours:
                st = ctl.switches[h]
                assert st.channel is not None and st.reconciler is not None
                # Resync found everything in place: not a single flow mod or batch was sent.
                assert st.channel.sent["flow_mod"] == 0, (h, st.channel.sent)
                assert st.channel.sent["batch"] == 0, (h, st.channel.sent)
                assert st.programmed_generation == 0
                assert st.reconciler.installed == set(before[h])
                # Same flows (cookies), never re-added: durations kept growing through the
                # restart and no counter was reset.
                assert set(after[h]) == set(before[h])
                gap = t_after - t_before
                for cookie, old in before[h].items():
                    new = after[h][cookie]
                    assert new.duration - old.duration >= gap - 0.01, (h, old, new, gap)
                    assert new.n_packets == old.n_packets
            # The tunnel ports were not recreated either (same rows, same port numbers).
            assert await asyncio.to_thread(_tunnel_identity, rig) == ports_before

    run_test(body)


# Broadcast, locally administered source, IEEE "local experimental" ethertype, zero padding.
_PROBE_FRAME = "ff" * 6 + "020000000099" + "88b5" + "00" * 46


def inject_dropped_frames(hv: Hv, count: int) -> None:
    for _ in range(count):
        hv.ovs.ofctl("packet-out", f"in_port=LOCAL,packet={_PROBE_FRAME},actions=resubmit(,0)",
                     bridge_mgmt=BRIDGE)


def _drop_flow(hv: Hv) -> DumpedFlow:
    (drop,) = [f for f in dump_flows(hv).values()
               if f.table == 0 and f.priority == 0 and f.actions == "drop"]
    return drop


def _tunnel_identity(rig: Rig) -> dict[str, dict[str, tuple[str, int]]]:
    return {h.name: {p: (h.vsctl("get", "Interface", p, "_uuid"), ofport(h, p))
                     for p in tunnels(h)} for h in rig.hvs.values()}


def test_vm_move_repoints_peer_flows(rig: Rig) -> None:
    hv1, hv2, hv3 = rig.hvs["hv1"], rig.hvs["hv2"], rig.hvs["hv3"]

    async def body() -> None:
        async with controller(rig) as ctl:
            ctl.service.apply(rig.intent({"web1": "hv1", "web2": "hv2", "web3": "hv3"}))
            for hv, vm in ((hv1, "web1"), (hv2, "web2"), (hv3, "web3")):
                await plug(hv, vm)
            await converged(ctl, rig, {vid("web1"): "hv1", vid("web2"): "hv2",
                                       vid("web3"): "hv3"})
            web1 = mac_of(ctl, "web1")
            assert points_to(hv3, web1, tunnel_to("hv1"))
            assert points_to(hv2, web1, tunnel_to("hv1"))

            # Live migration as the hypervisors show it: gone from hv1, then up on hv2.
            await unplug(hv1, "web1")
            await until(lambda: vid("web1") not in ctl.bindings(), "web1 unbound")
            await plug(hv2, "web1")
            await until(lambda: ctl.bindings().get(vid("web1")) == "hv2", "web1 bound on hv2")
            await until_ovs(lambda: points_to(hv3, web1, tunnel_to("hv2")),
                            "hv3 sends web1's MAC to hv2")
            await until_ovs(lambda: points_to(hv2, web1, tap("web1")),
                            "hv2 delivers web1 locally")
            # hv1 hosts nothing any more: no flows for web1 there, and no tunnels to or from it.
            await until_ovs(lambda: not tunnels(hv1) and not flows_to_mac(hv1, web1),
                            "hv1 emptied")
            await converged(ctl, rig, {vid("web1"): "hv2", vid("web2"): "hv2",
                                       vid("web3"): "hv3"})
            assert tunnels(hv2) == expect_tunnel("hv3")
            assert tunnels(hv3) == expect_tunnel("hv2")

    run_test(body)


def test_console_script_serves_healthz_and_exits_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    sock = Path(tempfile.mkdtemp(prefix=f"htd-{os.getpid()}-")) / "of.sock"
    state = tmp_path / "state"
    log = tmp_path / "controller.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc: subprocess.Popen[bytes] | None = None
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hypetunnel", "controller", "run", "--state-dir",
                 str(state), "--api", f"127.0.0.1:{port}", "--openflow", f"unix:{sock}"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True)
        url = f"http://127.0.0.1:{port}/api/v1"

        def healthy() -> bool:
            assert proc is not None
            assert proc.poll() is None, f"controller exited: {log.read_text()[-2000:]}"
            try:
                return httpx.get(f"{url}/healthz", timeout=0.5).json() == {"ok": True}
            except httpx.HTTPError:
                return False

        wait_until(healthy, 30, "the controller API", interval=0.05)
        assert sock.is_socket()
        assert (state / "store.db").exists()
        # The first start wrote the bootstrap admin token: owner-only, and it opens the API.
        token_file = state / "admin.token"
        wait_until(token_file.exists, 10, "the bootstrap admin token", interval=0.05)
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        auth = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
        assert httpx.get(f"{url}/status", timeout=5).status_code == 401
        status = httpx.get(f"{url}/status", timeout=5, headers=auth).json()
        assert status["switches"] == [] and status["controller"]["role"] == "active"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()[-2000:]
        assert not sock.exists()  # the OpenFlow listener removed its socket
        assert "Traceback" not in log.read_text()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(sock.parent, ignore_errors=True)

