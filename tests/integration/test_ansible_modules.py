"""The hypetunnel.fabric modules, run by a real ansible-playbook against a real controller daemon
(HTTPS with its own CA, the bootstrap admin token), on the system python3 as on a host.

What each module reports is checked against the store, read back through the API: a first run
changes, a second changes nothing, check mode reports the plan and writes nothing, diff shows
before and after, bad input fails naming the field. The daemon has no switches, so a move never
ends here (the controller follows it until its own timeout): the move and drain tests check the
requests and the modules' handling of that; the real moves run in the roles' lab test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hypetunnel.client import ApiClient, ApiUnreachable
from hypetunnel.client.config import find_token
from hypetunnel.lab.controller import free_port
from hypetunnel.lab.proc import wait_until
from hypetunnel.pki import init_ca, issue

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
PREFIX = "ht-modules"  # this branch's prefix for everything the test makes
COLLECTION = "hypetunnel.fabric"


@dataclass
class Daemon:
    url: str
    ca: Path
    foreign_ca: Path
    token_file: Path
    work: Path

    def api(self) -> ApiClient:
        return ApiClient(self.url, ca=self.ca, token=self.token_file.read_text().strip())

    def connection(self, **override: Any) -> dict[str, Any]:
        conn: dict[str, Any] = {"api_url": [self.url], "token_file": str(self.token_file),
                                "ca_path": str(self.ca), "timeout": 10}
        conn.update(override)
        return {k: v for k, v in conn.items() if v is not None}  # None: leave the option out


def _up(url: str, ca: Path) -> bool:
    try:
        with ApiClient(url, ca=ca, timeout=1.0) as api:
            return api.healthz() is not None
    except ApiUnreachable:
        return False


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    work = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{os.getpid()}-"))
    proc = None
    try:
        init_ca(work / "pki")
        issue(work / "pki", "ctl1", ips=["127.0.0.1"])
        init_ca(work / "foreign")
        state = work / "state"
        port = free_port()
        url = f"https://127.0.0.1:{port}"
        with open(work / "daemon.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hypetunnel", "controller", "run", "--state-dir",
                 str(state), "--api", f"127.0.0.1:{port}", "--openflow", "pssl:127.0.0.1:0",
                 "--tls-dir", str(work / "pki"), "--tls-name", "ctl1"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        ca = work / "pki" / "ca.crt"
        wait_until(lambda: proc.poll() is not None or _up(url, ca), 30, f"the API on {url}")
        assert proc.poll() is None, (work / "daemon.log").read_text()[-2000:]
        wait_until(lambda: find_token([state]) is not None, 30, "the bootstrap token")
        yield Daemon(url, ca, work / "foreign" / "ca.crt", state / "admin.token", work)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Run:
    results: list[dict[str, Any]]  # one per task run, the module's result
    rc: int
    output: str  # what ansible-playbook printed, for the failure messages

    @property
    def changed(self) -> int:
        """As the recap counts it: tasks that reported a change."""
        return sum(1 for r in self.results if r.get("changed"))

    @property
    def only(self) -> dict[str, Any]:
        assert len(self.results) == 1, self.output
        return self.results[0]


def play(d: Daemon, tasks: list[dict[str, Any]], *args: str) -> Run:
    """ansible-playbook on localhost (connection local, the system python3) with these tasks;
    the results come from a test callback (ansible_callbacks/record.py)."""
    d.work.joinpath("ansible-tmp").mkdir(exist_ok=True)
    book, record = d.work / "play.yml", d.work / "results.jsonl"
    record.unlink(missing_ok=True)
    book.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False,
                                 "tasks": tasks}]))  # JSON is YAML
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(REPO / "ansible"),
           "ANSIBLE_CALLBACK_PLUGINS": str(Path(__file__).parent / "ansible_callbacks"),
           "ANSIBLE_CALLBACKS_ENABLED": "record", "HT_RECORD_FILE": str(record),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": str(d.work / "ansible-tmp"),
           "ANSIBLE_REMOTE_TEMP": str(d.work / "ansible-tmp"),
           "ANSIBLE_HOME": str(d.work / "ansible-home")}
    proc = subprocess.run(
        [str(PLAYBOOK), "-i", "localhost,", "-c", "local",
         "-e", "ansible_python_interpreter=/usr/bin/python3", str(book), *args],
        env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    output = f"{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    lines = record.read_text().splitlines() if record.exists() else []
    results = []
    for line in lines:
        rec = json.loads(line)
        results.append({**rec["result"], "failed": rec["status"] != "ok"})
    assert results, f"ansible-playbook ran no task:\n{output}"
    return Run(results, proc.returncode, output)


def task(d: Daemon, module: str, **options: Any) -> dict[str, Any]:
    conn = options.pop("connection", None) or d.connection()
    return {f"{COLLECTION}.{module}": {**conn, **options}}


def hypervisor(d: Daemon, name: str) -> dict[str, Any] | None:
    with d.api() as api:
        return next((h for h in api.get_intent()["hypervisors"] if h["name"] == name), None)


def tenant(d: Daemon, name: str) -> dict[str, Any] | None:
    with d.api() as api:
        return next((t for t in api.get_intent()["tenants"] if t["name"] == name), None)


def revision(d: Daemon) -> int:
    with d.api() as api:
        return int(api.status()["revision"])


def plan_keys(result: dict[str, Any], kind: str) -> list[str]:
    return [i["key"] for i in result["plan"][kind]]


# -- hypervisor ---------------------------------------------------------------------------------
def test_hypervisor_enlists_once_then_changes_nothing(daemon: Daemon) -> None:
    t = task(daemon, "hypetunnel_hypervisor", name="hv-a", underlay_ip="10.9.0.1",
             datapath_type="netdev", capacity={"vcpus": 8, "memory_mb": 8192})
    first = play(daemon, [t])
    assert first.rc == 0 and first.changed == 1, first.output
    assert plan_keys(first.only, "added") == ["hv-a"] and first.only["plan"]["applied"]
    stored = hypervisor(daemon, "hv-a")
    assert stored is not None and stored["underlay_ip"] == "10.9.0.1"
    assert stored["capacity"] == {"vcpus": 8, "memory_mb": 8192}
    assert first.only["hypervisor"] == stored

    second = play(daemon, [t])
    assert second.rc == 0 and second.changed == 0, second.output
    assert second.only["plan"]["added"] == second.only["plan"]["changed"] == []


def test_hypervisor_check_mode_plans_and_writes_nothing(daemon: Daemon) -> None:
    play(daemon, [task(daemon, "hypetunnel_hypervisor", name="hv-b", underlay_ip="10.9.0.2")])
    before, rev = hypervisor(daemon, "hv-b"), revision(daemon)
    run = play(daemon, [task(daemon, "hypetunnel_hypervisor", name="hv-b",
                             underlay_ip="10.9.0.22")], "--check", "--diff")
    assert run.rc == 0 and run.changed == 1, run.output
    result = run.only
    assert plan_keys(result, "changed") == ["hv-b"]
    assert "10.9.0.2 -> 10.9.0.22" in result["plan"]["changed"][0]["detail"]
    assert result["plan"]["applied"] is False
    assert result["diff"]["before"]["underlay_ip"] == "10.9.0.2"
    assert result["diff"]["after"]["underlay_ip"] == "10.9.0.22"
    assert "~ hypervisor hv-b" in result["diff"]["prepared"]
    assert hypervisor(daemon, "hv-b") == before and revision(daemon) == rev


def test_hypervisor_bad_input_names_the_field(daemon: Daemon) -> None:
    rev = revision(daemon)
    run = play(daemon, [task(daemon, "hypetunnel_hypervisor", name="hv-c",
                             underlay_ip="10.9.0.300")])
    assert run.rc != 0
    result = run.only
    assert result["failed"] and result["status"] == 422
    assert any(e["path"].endswith("underlay_ip") for e in result["errors"]), result
    assert "underlay_ip: " in result["msg"]
    assert hypervisor(daemon, "hv-c") is None and revision(daemon) == rev


# -- intent ---------------------------------------------------------------------------------------
def test_intent_applies_once_and_check_mode_shows_the_plan(daemon: Daemon) -> None:
    with daemon.api() as api:
        current = api.get_intent()
    # The whole fabric: what the other tests made stays (resolved objects re-applied as they are).
    intent = {"fabric": current["fabric"],
              "hypervisors": [*current["hypervisors"],
                              {"name": "hv-i1", "underlay_ip": "10.9.1.1"}],
              "tenants": [*current["tenants"], {
                  "name": "intent-t", "networks": [{"name": "net", "cidr": "10.20.0.0/24"}],
                  "vms": [{"name": "vm1", "network": "net", "hypervisor": "hv-i1"}]}]}
    t = task(daemon, "hypetunnel_intent", intent=intent)
    first = play(daemon, [t])
    assert first.rc == 0 and first.changed == 1, first.output
    assert sorted(plan_keys(first.only, "added")) == ["hv-i1", "intent-t", "intent-t/net",
                                                      "intent-t/vm1"]
    assert first.only["plan"]["removed"] == []
    stored = tenant(daemon, "intent-t")
    assert stored is not None and stored["networks"][0]["vni"] is not None
    assert first.only["intent"]["tenants"][-1] == stored

    assert play(daemon, [t]).changed == 0

    intent["tenants"][-1]["vms"].append({"name": "vm2", "network": "net"})
    rev = revision(daemon)
    check = play(daemon, [task(daemon, "hypetunnel_intent", intent=intent)], "--check", "--diff")
    assert check.rc == 0 and check.changed == 1, check.output
    assert plan_keys(check.only, "added") == ["intent-t/vm2"]
    assert "+ vm intent-t/vm2" in check.only["diff"]["prepared"]
    after = check.only["diff"]["after"]["tenants"][-1]
    assert [v["name"] for v in after["vms"]] == ["vm1", "vm2"]
    # Allocations already made show in the "after", as the controller keeps them.
    assert after["vms"][0]["ip"] == stored["vms"][0]["ip"]
    assert tenant(daemon, "intent-t") == stored and revision(daemon) == rev


def test_intent_bad_input_lists_every_field_error(daemon: Daemon) -> None:
    rev = revision(daemon)
    bad = {"hypervisors": [{"name": "Bad_Name"}],
           "tenants": [{"name": "x", "networks": [{"name": "n", "cidr": "10.0.0.0/30"}]}]}
    run = play(daemon, [task(daemon, "hypetunnel_intent", intent=bad)])
    assert run.rc != 0
    paths = {e["path"] for e in run.only["errors"]}
    assert {"hypervisors[0].name", "tenants[0].networks[0].cidr"} <= paths, run.only
    assert "hypervisors[0].name: " in run.only["msg"]
    assert revision(daemon) == rev


# -- tenant, network, VM --------------------------------------------------------------------------
def test_tenant_network_vm_lifecycle(daemon: Daemon) -> None:
    play(daemon, [task(daemon, "hypetunnel_hypervisor", name="hv-t", underlay_ip="10.9.2.1")])
    create = [
        task(daemon, "hypetunnel_tenant", name="acme", encapsulation="geneve"),
        task(daemon, "hypetunnel_network", tenant="acme", name="front", cidr="10.30.0.0/24"),
        task(daemon, "hypetunnel_vm", tenant="acme", name="web1", network="front",
             hypervisor="hv-t", memory_mb=1024),
    ]
    first = play(daemon, create)
    assert first.rc == 0 and first.changed == 3, first.output
    tenant_r, network_r, vm_r = first.results
    assert tenant_r["tenant"]["encapsulation"] == "geneve"
    assert network_r["network"]["vni"] is not None
    stored = tenant(daemon, "acme")
    assert stored is not None and stored["vms"][0] == vm_r["vm"]
    assert vm_r["vm"]["ip"].startswith("10.30.0.") and vm_r["vm"]["memory_mb"] == 1024

    second = play(daemon, create)
    assert second.rc == 0 and second.changed == 0, second.output

    # Check mode with diff: the VM's change is planned, shown, and not written.
    rev = revision(daemon)
    check = play(daemon, [task(daemon, "hypetunnel_vm", tenant="acme", name="web1",
                               memory_mb=2048)], "--check", "--diff")
    assert check.rc == 0 and check.changed == 1
    assert plan_keys(check.only, "changed") == ["acme/web1"]
    assert check.only["diff"]["before"]["memory_mb"] == 1024
    assert check.only["diff"]["after"]["memory_mb"] == 2048
    assert tenant(daemon, "acme") == stored and revision(daemon) == rev

    # A network with VMs is not removed; removing the VM first, then the network, is.
    refused = play(daemon, [task(daemon, "hypetunnel_network", tenant="acme", name="front",
                                 state="absent")])
    assert refused.rc != 0 and "still has VMs: web1" in refused.only["msg"]
    gone = play(daemon, [
        task(daemon, "hypetunnel_vm", tenant="acme", name="web1", state="absent"),
        task(daemon, "hypetunnel_network", tenant="acme", name="front", state="absent"),
        task(daemon, "hypetunnel_tenant", name="acme", state="absent"),
    ])
    assert gone.rc == 0 and gone.changed == 3, gone.output
    assert tenant(daemon, "acme") is None
    assert play(daemon, [task(daemon, "hypetunnel_tenant", name="acme",
                              state="absent")]).changed == 0


def test_tenant_networks_and_vms_given_whole(daemon: Daemon) -> None:
    t = task(daemon, "hypetunnel_tenant", name="blue",
             networks=[{"name": "n1", "cidr": "10.40.0.0/24"}],
             vms=[{"name": "v1", "network": "n1"}, {"name": "v2", "network": "n1"}])
    first = play(daemon, [t])
    assert first.rc == 0 and first.changed == 1, first.output
    assert sorted(plan_keys(first.only, "added")) == ["blue", "blue/n1", "blue/v1", "blue/v2"]
    assert play(daemon, [t]).changed == 0
    fewer = task(daemon, "hypetunnel_tenant", name="blue",
                 vms=[{"name": "v1", "network": "n1"}])
    check = play(daemon, [fewer], "--check")
    assert check.changed == 1 and plan_keys(check.only, "removed") == ["blue/v2"]
    assert len(tenant(daemon, "blue")["vms"]) == 2  # type: ignore[index]


def test_vm_and_network_bad_input_name_the_field(daemon: Daemon) -> None:
    play(daemon, [task(daemon, "hypetunnel_tenant", name="red")])
    rev = revision(daemon)
    run = play(daemon, [task(daemon, "hypetunnel_network", tenant="red", name="tiny",
                             cidr="10.50.0.0/30")])
    assert run.rc != 0 and "cidr" in run.only["msg"] and "/29" in run.only["msg"], run.only
    run = play(daemon, [task(daemon, "hypetunnel_vm", tenant="red", name="v", network="nope")])
    assert run.rc != 0 and "network" in run.only["msg"] and "nope" in run.only["msg"], run.only
    run = play(daemon, [task(daemon, "hypetunnel_vm", tenant="red", name="v")])
    assert run.rc != 0 and run.only["msg"].startswith("network: required"), run.only
    run = play(daemon, [task(daemon, "hypetunnel_vm", tenant="no-such", name="v",
                             network="n")])
    assert run.rc != 0 and run.only["msg"].startswith("tenant: no tenant 'no-such'"), run.only
    assert revision(daemon) == rev


# -- connection -----------------------------------------------------------------------------------
def test_a_wrong_token_fails_clearly(daemon: Daemon) -> None:
    run = play(daemon, [task(daemon, "hypetunnel_info", connection=daemon.connection(
        token_file=None, token="ht.nobody.secretsecretsecret"))])
    assert run.rc != 0
    assert run.only.get("status") == 401 and "authorization" in run.only["msg"], run.only
    assert "secretsecretsecret" not in json.dumps(run.results)


def test_a_wrong_ca_fails_clearly(daemon: Daemon) -> None:
    run = play(daemon, [task(daemon, "hypetunnel_info", connection=daemon.connection(
        ca_path=str(daemon.foreign_ca)))])
    assert run.rc != 0
    assert "TLS" in run.only["msg"] and "ca_path" in run.only["msg"], run.only


def test_plain_http_is_refused_before_any_request(daemon: Daemon) -> None:
    run = play(daemon, [task(daemon, "hypetunnel_info", connection=daemon.connection(
        api_url=[daemon.url.replace("https://", "http://")]))])
    assert run.rc != 0 and "not an https:// URL" in run.only["msg"], run.only


def test_the_active_member_is_found_past_a_dead_one(daemon: Daemon) -> None:
    dead = f"https://127.0.0.1:{free_port()}"
    run = play(daemon, [task(daemon, "hypetunnel_info", gather=["controllers", "status"],
                             connection=daemon.connection(api_url=[dead, daemon.url]))])
    assert run.rc == 0, run.output
    members = run.only["controllers"]
    assert [m["url"] for m in members] == [dead, daemon.url]
    assert "error" in members[0] and members[1]["role"] == "active"
    assert run.only["status"]["controller"]["role"] == "active"


# -- move and drain (no switches here: a move is started and followed, never ends) -------------
def test_move_check_mode_plans_and_a_real_move_is_followed(daemon: Daemon) -> None:
    play(daemon, [
        task(daemon, "hypetunnel_hypervisor", name="hv-m1", underlay_ip="10.9.3.1"),
        task(daemon, "hypetunnel_hypervisor", name="hv-m2", underlay_ip="10.9.3.2"),
        task(daemon, "hypetunnel_tenant", name="mover",
             networks=[{"name": "n", "cidr": "10.60.0.0/24"}],
             vms=[{"name": "vm", "network": "n", "hypervisor": "hv-m1"}]),
    ])
    move = task(daemon, "hypetunnel_move", tenant="mover", name="vm", to="hv-m2",
                wait_timeout=1)
    rev = revision(daemon)
    check = play(daemon, [move], "--check", "--diff")
    assert check.rc == 0 and check.changed == 1, check.output
    assert plan_keys(check.only, "changed") == ["mover/vm"]
    assert check.only["diff"]["after"]["hypervisor"] == "hv-m2"
    assert tenant(daemon, "mover")["vms"][0]["hypervisor"] == "hv-m1"  # type: ignore[index]
    assert revision(daemon) == rev

    unknown = play(daemon, [task(daemon, "hypetunnel_move", tenant="mover", name="vm",
                                 to="hv-none")])
    assert unknown.rc != 0 and "hv-none" in unknown.only["msg"], unknown.only

    # The move starts; without switches the VM's port never shows up at hv-m2, so the module
    # reports that the move has not ended in time, with the controller's record.
    run = play(daemon, [move])
    assert run.rc != 0
    rec = run.only["move"]
    assert rec["vm"] == "mover/vm" and rec["from"] == "hv-m1" and rec["to"] == "hv-m2"
    assert rec["result"] == "running" and rec["end"] is None
    assert "did not end within 1 s" in run.only["msg"]
    assert tenant(daemon, "mover")["vms"][0]["hypervisor"] == "hv-m2"  # type: ignore[index]

    # Not waiting: the VM is on hv-m2 in the intent already, so nothing more is asked.
    again = play(daemon, [task(daemon, "hypetunnel_move", tenant="mover", name="vm",
                               to="hv-m2", wait=False)])
    assert again.rc == 0 and again.changed == 0 and again.only["move"]["seq"] == rec["seq"]


def test_drain_and_undrain_an_empty_hypervisor(daemon: Daemon) -> None:
    play(daemon, [task(daemon, "hypetunnel_hypervisor", name="hv-d", underlay_ip="10.9.4.1")])
    drain = task(daemon, "hypetunnel_drain", name="hv-d")
    check = play(daemon, [drain], "--check", "--diff")
    assert check.rc == 0 and check.changed == 1 and check.only["would_move"] == []
    assert "schedulable None -> False" in check.only["diff"]["prepared"]
    assert hypervisor(daemon, "hv-d")["schedulable"] is None  # type: ignore[index]

    first = play(daemon, [drain])
    assert first.rc == 0 and first.changed == 1 and first.only["moves"] == [], first.output
    assert hypervisor(daemon, "hv-d")["schedulable"] is False  # type: ignore[index]
    assert play(daemon, [drain]).changed == 0

    undrain = task(daemon, "hypetunnel_drain", name="hv-d", state="undrained")
    assert play(daemon, [undrain], "--check").changed == 1
    assert hypervisor(daemon, "hv-d")["schedulable"] is False  # type: ignore[index]
    assert play(daemon, [undrain]).changed == 1
    assert hypervisor(daemon, "hv-d")["schedulable"] is True  # type: ignore[index]
    assert play(daemon, [undrain]).changed == 0

    unknown = play(daemon, [task(daemon, "hypetunnel_drain", name="hv-none")])
    assert unknown.rc != 0 and unknown.only["msg"].startswith("name: no hypervisor hv-none")


def test_info_reads_everything_and_changes_nothing(daemon: Daemon) -> None:
    rev = revision(daemon)
    run = play(daemon, [task(daemon, "hypetunnel_info",
                             gather=["intent", "status", "overlay", "moves", "controllers"])])
    assert run.rc == 0 and run.changed == 0, run.output
    result = run.only
    assert result["status"]["revision"] == rev and "hypervisors" in result["overlay"]
    assert isinstance(result["moves"], list) and "fabric" in result["intent"]
    assert revision(daemon) == rev


# -- hypetunnel_failover ------------------------------------------------------------------------
def test_failover_to_an_unknown_controller_fails_and_changes_nothing(daemon: Daemon) -> None:
    """This daemon runs without a pair: it names no node, so no hand-over can make `ctl9`
    active; the real hand-over runs in tests/lab/test_ansible_upgrade.py."""
    before = daemon.api().controller()
    run = play(daemon, [task(daemon, "hypetunnel_failover", active="ctl9")])
    assert run.rc != 0, run.output
    assert run.only["msg"] == "active: no member of api_url is the controller ctl9", run.only
    assert run.only["controllers"][0]["role"] == "active" and not run.only["changed"]
    after = daemon.api().controller()
    assert (after["role"], after["term"]) == (before["role"], before["term"])
