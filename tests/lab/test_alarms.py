"""Alarms and the state log on the HA lab, from real faults: a killed ovs-vswitchd, flows
deleted with ovs-ofctl, a VM killed without a move (and a crashed one restarted by its fault
policy), and a failover that keeps the book."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hypetunnel.cli.democmd import bundled_example
from hypetunnel.client import ApiClient
from hypetunnel.client.errors import ApiUnreachable
from hypetunnel.lab import datacenter, hapair
from hypetunnel.lab.proc import wait_until
from hypetunnel.lab.topology import Lab
from tests.lab.conftest import flow_tables, keep_failed_lab

pytestmark = pytest.mark.lab

# hv3 hosts only the etcd witness: its faults cost no controller its management network.
VICTIM = "hv3"


RECEIVER = Path(__file__).parent / "webhook_receiver.py"
HOOK_PORT = 8099


class Hook:
    """A webhook receiver in a service namespace on the management overlay; stop() takes it
    down (connections refused), start() brings it back on the same address."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.ip = lab.add_service("hook", "hv1").mgmt_ip
        self.url = f"http://{self.ip}:{HOOK_PORT}/alarms"
        self.file = lab.directory / "webhook.jsonl"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = self.lab.spawn("hook", ["python3", str(RECEIVER), self.ip, str(HOOK_PORT),
                                            str(self.file)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        wait_until(lambda: self.lab.exec("hook", ["ss", "-Hltn", f"sport = :{HOOK_PORT}"]
                                         ).stdout.strip() != "", 10, "the receiver to listen")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def bodies(self) -> list[dict[str, Any]]:
        if not self.file.exists():
            return []
        return [json.loads(line) for line in self.file.read_text().splitlines() if line]


def with_webhook(lab: Lab, url: str) -> None:
    """Both controllers restarted with `--webhook url` (and a 2 s flow audit): the standby
    first, then the active, whose stop hands over to the standby."""
    ctls = hapair.controllers(lab)
    first = active_node(lab)
    assert first is not None
    for node in (other(first), first):
        ctl = ctls[node]
        ctl.stop()
        if node == first:
            wait_until(lambda: active_node(lab) == other(first), 30, "the standby to take over")
        dataclasses.replace(ctl, extra_args=(*ctl.extra_args, "--webhook", url,
                                             "--flow-audit-interval", "2")).start()
    wait_until(lambda: hapair.role(ctls[first].api_url, ctls[first].ca,
                                   datacenter.token_for(lab)) == "standby", 30,
               f"{first} to be the standby")
    with active(lab) as api:
        datacenter.wait_converged(api, 60)
    # The hand-over itself may have raised switch alarms (a switch without a master for more
    # than the hold): the tests start from a fabric with none open, so that what they see
    # is what they caused.
    wait_until(lambda: not {k for _, k in open_kinds(lab)} & CHANNEL_KINDS, 30,
               "the hand-over's channel alarms to clear")


CHANNEL_KINDS = {"switch_disconnected", "ovsdb_unreachable", "hypervisor_lost"}


@pytest.fixture(scope="module")
def fixture_lab(request: pytest.FixtureRequest) -> Iterator[tuple[Lab, Hook]]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    name = f"fc{os.getpid() % 10000}"
    datacenter.down(name)
    hook: Hook | None = None
    try:
        lab = datacenter.up(bundled_example(), name, timeout=90, ha=True)
        hook = Hook(lab)
        hook.start()
        with_webhook(lab, hook.url)
        yield lab, hook
    finally:
        if hook is not None:
            hook.stop()
        if not keep_failed_lab(request):
            datacenter.down(name)


@pytest.fixture
def lab(fixture_lab: tuple[Lab, Hook]) -> Lab:
    return fixture_lab[0]


@pytest.fixture
def hook(fixture_lab: tuple[Lab, Hook]) -> Hook:
    return fixture_lab[1]


def other(node: str) -> str:
    return hapair.NODES[1 - hapair.NODES.index(node)]


def active(lab: Lab) -> ApiClient:
    return hapair.active_api(lab)


def active_node(lab: Lab) -> str | None:
    """The active controller's name; None in a hand-over, when both are standby for a
    moment (the new one not elected yet): a wait polls through it."""
    try:
        with active(lab) as api:
            node = api.controller().get("node")
    except ApiUnreachable:
        return None
    return str(node) if node else None


def alarms(lab: Lab, include_cleared: bool = False) -> list[dict[str, Any]]:
    with active(lab) as api:
        return list(api.alarms(include_cleared))


def open_kinds(lab: Lab) -> set[tuple[str, str]]:
    return {(a["resource"], a["kind"]) for a in alarms(lab)}


def cli(lab: Lab, *args: str) -> Any:
    out = subprocess.run([sys.executable, "-m", "hypetunnel", "--lab", lab.name, *args,
                          "-o", "json"], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    return json.loads(out)


def pings(lab: Lab, src: str, dst: str) -> bool:
    return lab.exec(src, ["ping", "-c", "1", "-W", "1", lab.vm(dst).ip],
                    check=False).returncode == 0


def test_a_cut_openflow_channel_raises_switch_disconnected_and_clears_when_back(
        lab: Lab) -> None:
    """The switch's controllers removed (`ovs-vsctl del-controller br-int`): its OpenFlow
    channel is gone while OVSDB still answers. (Killing ovs-vswitchd would not do here: in the
    lab the management overlay runs through that very daemon, so the whole hypervisor drops
    off, and after 3 s the controller restarts its VMs elsewhere: a hypervisor loss.)"""
    before = flow_tables(lab)
    assert (f"switch/{VICTIM}", "switch_disconnected") not in open_kinds(lab)
    lab.hypervisor(VICTIM).ovs.vsctl("del-controller", "br-int")
    cut, cut_at = time.monotonic(), time.time()
    try:
        wait_until(lambda: (f"switch/{VICTIM}", "switch_disconnected") in open_kinds(lab), 15,
                   "the switch_disconnected alarm")
        detected = time.monotonic() - cut
        # OVSDB still answers: the hypervisor is not lost, only its switch's channel.
        assert (f"hypervisor/{VICTIM}", "hypervisor_lost") not in open_kinds(lab)
    finally:
        lab.set_controllers(VICTIM, hapair.switch_targets(lab))
    back = time.monotonic()
    wait_until(lambda: (f"switch/{VICTIM}", "switch_disconnected") not in open_kinds(lab), 20,
               "the alarm to clear")
    cleared = time.monotonic() - back
    wait_until(lambda: flow_tables(lab)[VICTIM] == before[VICTIM], 20, "its flows")
    wait_until(lambda: pings(lab, "acme/web1", "acme/web3"), 10, "web3 to answer")
    print(f"\n[alarms] switch_disconnected raised {detected * 1000:.0f} ms after the cut, "
          f"cleared {cleared * 1000:.0f} ms after the controllers were back")
    [alarm] = [a for a in cli(lab, "alarms", "--all")
               if a["kind"] == "switch_disconnected" and a["resource"] == f"switch/{VICTIM}"
               and a["raised"] >= cut_at - 1]
    assert alarm["cleared"] is not None and alarm["severity"] == "major"
    states = [e["state"] for e in cli(lab, "events", "--resource", f"switch/{VICTIM}",
                                      "--since", "10m")]
    assert "openflow disconnected" in states and "openflow connected" in states
    assert states.index("openflow disconnected") < len(states) - 1 - states[::-1].index(
        "openflow connected")


def test_deleted_flows_are_repaired_and_alarmed(lab: Lab) -> None:
    before = flow_tables(lab)
    assert before[VICTIM]
    lab.hypervisor(VICTIM).ovs.ofctl("del-flows", bridge_mgmt="br-int")
    deleted = time.monotonic()
    assert not flow_tables(lab)[VICTIM]

    def drift() -> list[dict[str, Any]]:
        return [a for a in alarms(lab, include_cleared=True)
                if a["kind"] == "flow_drift" and a["resource"] == f"switch/{VICTIM}"]

    wait_until(lambda: bool(drift()), 20, "the flow_drift alarm")
    wait_until(lambda: flow_tables(lab)[VICTIM] == before[VICTIM], 20, "the flows repaired")
    repaired = time.monotonic() - deleted
    wait_until(lambda: all(a["cleared"] is not None for a in drift()), 10,
               "the drift alarm to clear once repaired")
    [alarm] = drift()[-1:]
    assert f"{len(before[VICTIM])} flows missing" in alarm["text"], alarm
    assert pings(lab, "acme/web1", "acme/web3")
    print(f"\n[alarms] {len(before[VICTIM])} deleted flows repaired and alarmed within "
          f"{repaired * 1000:.0f} ms")


def tenant_client(lab: Lab, api: ApiClient, name: str, tenant: str) -> ApiClient:
    token = api.create_token(name, "tenant-reader", tenant)["token"]
    return ApiClient(api.base_url, token=token, ca=hapair.lab_ca(lab))


def test_a_vm_killed_without_a_move_raises_vm_crash_for_its_tenant_only(lab: Lab) -> None:
    vm = "acme/web3"
    lab.remove_vm(vm)  # its namespace and port gone; the intent still places it on hv3
    killed = time.monotonic()
    try:
        wait_until(lambda: (f"vm/{vm}", "vm_crash") in open_kinds(lab), 15,
                   "the vm_crash alarm")
        detected = time.monotonic() - killed
        [crash] = [a for a in alarms(lab) if a["kind"] == "vm_crash"]
        assert crash["tenant"] == "acme" and crash["service_affecting"] is True
        suffix = os.getpid() % 10000
        with active(lab) as api, \
                tenant_client(lab, api, f"fc-acme-{suffix}", "acme") as acme, \
                tenant_client(lab, api, f"fc-globex-{suffix}", "globex") as globex:
            mine = acme.alarms(True)
            assert [a["id"] for a in mine if a["kind"] == "vm_crash" and a["cleared"] is None
                    ] == [crash["id"]]
            assert all(a["tenant"] == "acme" for a in mine)
            assert not any(h in json.dumps(mine) for h in ("hv1", "hv2", "hv3"))
            assert globex.alarms(True) == []
            events = acme.events(f"vm/{vm}")
            assert any(e["state"].startswith("unbound") for e in events), events
            seen = acme.events()
            assert seen and all(e["tenant"] == "acme" and e["resource"].startswith(
                ("vm/acme/", "network/acme/")) for e in seen), seen
            assert not any(h in json.dumps(seen) for h in ("hv1", "hv2", "hv3"))
            assert globex.events(f"vm/{vm}") == []
            acked = api.ack_alarm(crash["id"])
            assert acked["acknowledged"] is True and acked["cleared"] is None
        print(f"\n[alarms] vm_crash raised {detected * 1000:.0f} ms after the VM was killed")
    finally:
        with active(lab) as api:
            datacenter.sync_vms(lab, api)  # the compute side starts it again
    wait_until(lambda: (f"vm/{vm}", "vm_crash") not in open_kinds(lab), 15,
               "the vm_crash alarm to clear")
    wait_until(lambda: pings(lab, "acme/web1", vm), 10, f"{vm} to answer again")


def set_fault_policies(lab: Lab, tenants: dict[str, dict[str, Any] | None],
                       vms: dict[str, dict[str, Any] | None]) -> None:
    """Tenants' and VMs' fault policies written through the API (the whole intent applied)."""
    with active(lab) as api:
        doc = api.get_intent()
        for t in doc["tenants"]:
            if t["name"] in tenants:
                t["fault_policy"] = tenants[t["name"]]
            for v in t["vms"]:
                if f"{t['name']}/{v['name']}" in vms:
                    v["fault_policy"] = vms[f"{t['name']}/{v['name']}"]
        api.apply(doc)


def new_moves(lab: Lab, vm: str, before: set[int]) -> list[dict[str, Any]]:
    with active(lab) as api:
        return [m for m in api.moves(vm) if int(m["seq"]) not in before]


def test_a_crashed_vm_is_restarted_by_its_policy_and_one_set_to_alarm_only_is_not(
        lab: Lab) -> None:
    """Both VMs' namespaces killed (their processes, their interface: a crashed guest; the
    lab still lists them). acme restarts after 2 s; db2's own policy says alarm only. The
    lab's compute side (sync_vms) starts a VM again only when the controller asks."""
    restart, stay = "acme/web3", "acme/db2"
    with active(lab) as api:
        before = {vm: {int(m["seq"]) for m in api.moves(vm)} for vm in (restart, stay)}
    set_fault_policies(lab, {"acme": {"restart_grace": 2}}, {stay: {"vm_crash": "alarm"}})
    try:
        lab.crash_vm(restart)
        lab.crash_vm(stay)
        crashed = time.monotonic()
        wait_until(lambda: {(f"vm/{restart}", "vm_crash"), (f"vm/{stay}", "vm_crash")}
                   <= open_kinds(lab), 15, "both crash alarms")
        raised = time.monotonic() - crashed

        def restarted() -> bool:
            with active(lab) as api:
                datacenter.sync_vms(lab, api)  # carries out only what the controller asked
            return lab.vm_alive(restart)

        wait_until(restarted, 30, f"{restart} restarted")
        started = time.monotonic() - crashed
        wait_until(lambda: pings(lab, "acme/web1", restart), 15, f"{restart} to answer")
        reachable = time.monotonic() - crashed
        wait_until(lambda: (f"vm/{restart}", "vm_crash") not in open_kinds(lab), 15,
                   "its alarm to clear")
        assert started >= 2.0, "restarted within its grace"
        [rec] = new_moves(lab, restart, before[restart])
        assert (rec["kind"], rec["from"], rec["to"]) == ("restart", VICTIM, VICTIM), rec
        wait_until(lambda: new_moves(lab, restart, before[restart])[0]["result"] == "ok", 15,
                   "the restart record to finish")
        with active(lab) as api:
            assert "restarting" in [e["state"] for e in api.events(f"vm/{restart}")]
        # The VM whose policy says alarm only: still dead, still alarmed, nothing asked.
        assert new_moves(lab, stay, before[stay]) == []
        assert not lab.vm_alive(stay) and (f"vm/{stay}", "vm_crash") in open_kinds(lab)
        print(f"\n[alarms] crash: alarm {raised * 1000:.0f} ms, restarted by policy (grace "
              f"2 s) {started * 1000:.0f} ms, reachable {reachable * 1000:.0f} ms after the "
              "VM was killed")
    finally:
        set_fault_policies(lab, {"acme": None}, {stay: None})
        for vm in (restart, stay):
            if not lab.vm_alive(vm):
                lab.remove_vm(vm)
        with active(lab) as api:
            datacenter.sync_vms(lab, api)
    wait_until(lambda: not {k for k in open_kinds(lab) if k[1] == "vm_crash"}, 15,
               "every crash alarm to clear")
    wait_until(lambda: pings(lab, "acme/db1", stay), 10, f"{stay} to answer again")


def alarm_changes(lab: Lab) -> list[int]:
    with active(lab) as api:
        return [int(e["seq"]) for e in api.events() if "alarm" in e]


def test_a_webhook_receiver_that_was_down_gets_the_missed_changes(lab: Lab, hook: Hook) -> None:
    wait_until(lambda: {b["seq"] for b in hook.bodies()} == set(alarm_changes(lab)), 30,
               "every alarm change so far to be delivered")
    hook.stop()
    delivered = len(hook.bodies())
    vm = "acme/db2"
    lab.remove_vm(vm)  # a crash while the receiver is down
    try:
        wait_until(lambda: (f"vm/{vm}", "vm_crash") in open_kinds(lab), 15, "the crash")
    finally:
        with active(lab) as api:
            datacenter.sync_vms(lab, api)
    wait_until(lambda: (f"vm/{vm}", "vm_crash") not in open_kinds(lab), 15, "the clear")
    missed = [s for s in alarm_changes(lab) if s > max(b["seq"] for b in hook.bodies())]
    assert len(missed) >= 2 and len(hook.bodies()) == delivered  # nothing got through
    hook.start()
    back = time.monotonic()
    wait_until(lambda: {b["seq"] for b in hook.bodies()} >= set(missed), 45,
               "the missed changes after the receiver came back")
    caught_up = time.monotonic() - back
    late = [b for b in hook.bodies()[delivered:] if b["seq"] in missed]
    assert [b["seq"] for b in late] == missed, "out of order"
    crash = [(b["change"], b["alarm"]["kind"]) for b in late
             if b["alarm"]["resource"] == f"vm/{vm}"]
    assert crash == [("raised", "vm_crash"), ("cleared", "vm_crash")], crash
    print(f"\n[alarms] webhook: {len(missed)} changes missed while the receiver was down, "
          f"delivered {caught_up * 1000:.0f} ms after it came back")


def big_ping(lab: Lab, src: str, dst: str, size: int) -> bool:
    """One ping of `size` bytes of IP, not to be fragmented (DF): it fits the tunnel or not."""
    return lab.exec(src, ["ping", "-c", "1", "-W", "1", "-M", "do", "-s", str(size - 28),
                          lab.vm(dst).ip], check=False).returncode == 0


def test_an_underlay_mtu_smaller_than_the_fabric_needs_is_alarmed_and_drops_big_packets(
        lab: Lab) -> None:
    """hv3's uplink NIC set to MTU 1480 (mtu_request, as an operator would misconfigure it):
    the fabric's underlay_mtu is 1500, so a VM packet at its MTU (1450, VXLAN) no longer fits
    its tunnel. Kept short: the management overlay's full-size frames through that NIC do not
    fit either."""
    hv = lab.hypervisor(VICTIM)
    need = lab.underlay_mtu
    vm_mtu = need - 50
    assert big_ping(lab, "acme/web3", "acme/web1", vm_mtu)
    hv.ovs.vsctl("set", "Interface", "eth0", f"mtu_request={need - 20}")
    narrowed = time.monotonic()
    try:
        wait_until(lambda: (f"hypervisor/{VICTIM}", "underlay_mtu") in open_kinds(lab), 15,
                   "the underlay_mtu alarm")
        detected = time.monotonic() - narrowed
        [alarm] = [a for a in alarms(lab) if a["kind"] == "underlay_mtu"]
        assert f"eth0 has MTU {need - 20}, the fabric needs {need}" in alarm["text"], alarm
        assert alarm["service_affecting"] is True and alarm["tenant"] is None
        dropped = not big_ping(lab, "acme/web3", "acme/web1", vm_mtu)
        small = big_ping(lab, "acme/web3", "acme/web1", vm_mtu - 100)
    finally:
        hv.ovs.vsctl("set", "Interface", "eth0", f"mtu_request={need}")
    assert dropped, "a packet at the VM's MTU went through an underlay 20 bytes too narrow"
    assert small, "a packet that fits was lost"
    wait_until(lambda: (f"hypervisor/{VICTIM}", "underlay_mtu") not in open_kinds(lab), 15,
               "the alarm to clear")
    wait_until(lambda: big_ping(lab, "acme/web3", "acme/web1", vm_mtu), 15,
               "full-size packets to go through again")
    with active(lab) as api:
        datacenter.wait_converged(api, 60)
    print(f"\n[alarms] underlay MTU {need - 20} < {need}: underlay_mtu raised "
          f"{detected * 1000:.0f} ms after, a {vm_mtu}-byte packet dropped and a "
          f"{vm_mtu - 100}-byte one delivered meanwhile")


def test_an_etcd_member_down_is_alarmed_with_the_quorum_at_risk_and_cleared_when_back(
        lab: Lab) -> None:
    """kill -9 of one etcd member (not the raft leader: its election is test_ha's): 2 of 3
    answer, exactly the quorum."""
    cluster = hapair.etcd_cluster(lab)
    wait_until(lambda: cluster.leader() is not None, 10, "an etcd leader")
    victim = next(m for m in cluster.members if m is not cluster.leader())
    resource = f"etcd/{victim.name}"
    victim.kill()
    killed = time.monotonic()
    try:
        wait_until(lambda: {(resource, "etcd_member_down"), ("etcd/cluster", "quorum_at_risk")}
                   <= open_kinds(lab), 20, "the member and quorum alarms")
        detected = time.monotonic() - killed
        by_kind = {a["kind"]: a for a in alarms(lab) if a["resource"].startswith("etcd/")}
        assert "2 of 3 answer (quorum 2)" in by_kind["etcd_member_down"]["text"]
        assert by_kind["quorum_at_risk"]["severity"] == "critical"
    finally:
        cluster.restart(victim.name)
    back = time.monotonic()
    wait_until(lambda: not {k for k in open_kinds(lab) if k[0].startswith("etcd/")}, 20,
               "both alarms to clear")
    print(f"\n[alarms] etcd member {victim.name} killed: etcd_member_down and quorum_at_risk "
          f"raised {detected * 1000:.0f} ms after, cleared "
          f"{(time.monotonic() - back) * 1000:.0f} ms after it was back")


def test_a_failover_keeps_the_book_and_is_itself_alarmed(lab: Lab) -> None:
    before = {a["id"]: a for a in alarms(lab, include_cleared=True)}
    assert before, "the earlier tests raised alarms"
    with active(lab) as api:
        old = api.controller()
        api.failover()
    wait_until(lambda: active_node(lab) not in (None, old["node"]), 30,
               "the other controller to take over")
    wait_until(lambda: any(a["kind"] == "controller_failover" and a["id"] not in before
                           for a in alarms(lab, include_cleared=True)), 15,
               "the failover alarm")
    after = {a["id"]: a for a in alarms(lab, include_cleared=True)}
    for alarm_id, a in before.items():  # the same alarms, acknowledgements kept
        assert after[alarm_id]["acknowledged"] == a["acknowledged"], a
    failovers = sorted((a for a in after.values() if a["kind"] == "controller_failover"),
                       key=lambda a: a["raised"])
    assert failovers[-1]["id"] not in before and failovers[-1]["cleared"] is not None
    with active(lab) as api:
        node = api.controller()["node"]
        assert any(e["state"] == "active" for e in api.events(f"controller/{node}"))
    with active(lab) as api:
        datacenter.wait_converged(api, 30)
    assert pings(lab, "acme/web1", "acme/web3")
