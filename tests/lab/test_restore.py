"""Backup, lose both controllers and their whole etcd store, restore into new ones: the new
active adopts the running switches without changing one flow, and traffic never notices."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hypetunnel.cli.democmd import bundled_example
from hypetunnel.client import ApiClient
from hypetunnel.lab import datacenter, hapair
from hypetunnel.lab.proc import wait_until
from hypetunnel.lab.topology import Lab
from tests.lab.conftest import flow_tables, keep_failed_lab

pytestmark = pytest.mark.lab

PING_SRC, PING_DST = "acme/db1", "acme/db2"  # hv1 -> hv3: across the underlay
STREAM_SRC, STREAM_DST = "acme/web1", "acme/web2"  # hv1 -> hv2


@dataclass
class Restored:
    """What the module's one scenario measured, for the tests to check one by one."""

    lab: Lab
    tokens: dict[str, str]  # made before the backup: the bootstrap admin's, an operator's
    flows_before: dict[str, list[str]]
    flows_after: dict[str, list[str]]
    ports_before: dict[str, list[str]]
    ports_after: dict[str, list[str]]
    views: dict[str, dict[str, Any]]
    churn_logged: list[str]
    ping: dict[int, float]  # icmp_seq -> when answered
    ping_out: str
    stream: dict[str, Any]
    backup_out: str
    restore_out: str
    lost_at: float  # when the pair was destroyed (time.time())
    active_at: float  # when the new active answered as such
    tmp: Path  # the module's scratch directory (config files, backups)


def port_numbers(lab: Lab) -> dict[str, list[str]]:
    """Every br-int port with its OpenFlow port number (tunnels included): a recreated tunnel
    would get a new number even where the flows read the same."""
    out = {}
    for name, hv in lab.hypervisors.items():
        rows = json.loads(hv.ovs.vsctl("--format=json", "--columns=name,ofport", "list",
                                       "Interface"))["data"]
        out[name] = sorted(f"{n}={p}" for n, p in rows)
    return out


def controller_view(lab: Lab, node: str) -> dict[str, Any]:
    try:
        with datacenter.client(lab, hapair.controllers(lab)[node].api_url, timeout=2.0) as a:
            return dict(a.controller())
    except Exception:
        return {}


def config_file(lab: Lab, node: str, where: Path) -> Path:
    """The controller's config file as a deployed host has it (the Ansible controller role's
    keys): what `hypetunnel backup/restore --config` reads."""
    svc = lab.service(node)
    doc: dict[str, Any] = {
        "state_dir": str(hapair.controllers(lab)[node].directory),
        "etcd": hapair.etcd_cluster(lab).endpoints, "node": node,
        "peer": f"{svc.mgmt_ip}:{hapair.PEER_PORT}", "api": f"{svc.mgmt_ip}:8650",
        "openflow": [f"pssl:0.0.0.0:{hapair.OPENFLOW_PORT}"],
    }
    if lab.tls_dir:
        doc |= {"tls_dir": str(lab.tls_dir), "tls_name": node, "peer_name": list(hapair.NODES)}
    path = where / f"{node}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def cli_wrapper(lab: Lab, node: str, where: Path) -> Path:
    """`hypetunnel` on the controller host `node` (its namespace), as one executable file: what
    the Ansible roles run as their backup_cli/restore_cli."""
    path = where / f"hypetunnel-{node}"
    path.write_text(f"#!/bin/sh\nexec ip netns exec {lab.netns_of(node)} {sys.executable} "
                    f"-m hypetunnel \"$@\"\n")
    path.chmod(0o755)
    return path


def hypetunnel(lab: Lab, node: str, *args: str) -> str:
    """The CLI as an operator runs it on the controller host `node`."""
    cp = lab.exec(node, [sys.executable, "-m", "hypetunnel", *args], check=False, timeout=60)
    assert cp.returncode == 0, f"hypetunnel {' '.join(args)}: {cp.stdout}{cp.stderr}"
    return cp.stdout


@dataclass
class Ping:
    proc: subprocess.Popen[str]
    out: Path


def start_ping(lab: Lab, out: Path, src: str = PING_SRC, dst: str = PING_DST) -> Ping:
    """A 10 ms ping across hypervisors, each answer with its wall-clock time (-D), into a
    file: a pipe nobody reads fills up (64 KiB, some 800 answers) and blocks the ping."""
    with out.open("w") as f:
        return Ping(lab.spawn(src, ["ping", "-D", "-i", "0.01", "-W", "1", lab.vm(dst).ip],
                              stdout=f, stderr=subprocess.STDOUT), out)


def answers(out: str) -> dict[int, float]:
    """icmp_seq -> when its answer came (time.time() clock)."""
    return {int(m.group(2)): float(m.group(1))
            for m in re.finditer(r"^\[(\d+\.\d+)\].*icmp_seq=(\d+) ttl=", out, re.M)}


def lost(got: dict[int, float]) -> list[int]:
    """The echoes never answered among those sent before the last answered one."""
    return sorted(set(range(1, max(got, default=0) + 1)) - set(got))


def stop_ping(p: Ping) -> str:
    """SIGINT (ping prints its summary); the echo in flight at that moment has no answer yet,
    so loss is judged by the sequence numbers answered, not by the summary's counts."""
    p.proc.send_signal(signal.SIGINT)
    p.proc.wait(timeout=30)
    return p.out.read_text()


# One TCP connection, a 64-byte echo every 10 ms until SIGTERM; any stall over 5 s, reset
# or short read ends it with the error.
ECHO_SERVER = """
import socket, sys
srv = socket.create_server((sys.argv[1], 5301))
print("listening", flush=True)
conn, _ = srv.accept()
while data := conn.recv(4096):
    conn.sendall(data)
"""
ECHO_CLIENT = """
import json, signal, socket, sys, time
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
s = socket.create_connection((sys.argv[1], 5301), 5)
s.settimeout(5)
n, error = 0, None
try:
    while not stop:
        s.sendall(b"x" * 64)
        got = b""
        while len(got) < 64:
            chunk = s.recv(64 - len(got))
            if not chunk:
                raise ConnectionError("closed by the server")
            got += chunk
        n += 1
        time.sleep(0.01)
except OSError as e:
    error = repr(e)
print(json.dumps({"exchanges": n, "error": error}), flush=True)
"""


def start_stream(lab: Lab) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
    server = lab.spawn(STREAM_DST, [sys.executable, "-c", ECHO_SERVER, lab.vm(STREAM_DST).ip],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert server.stdout is not None and server.stdout.readline().strip() == "listening"
    client = lab.spawn(STREAM_SRC, [sys.executable, "-c", ECHO_CLIENT, lab.vm(STREAM_DST).ip],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return server, client


def stop_stream(server: subprocess.Popen[str], client: subprocess.Popen[str]) -> dict[str, Any]:
    client.terminate()
    out, _ = client.communicate(timeout=30)
    server.kill()
    server.communicate(timeout=30)
    try:
        return dict(json.loads(out.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {"exchanges": 0, "error": out[-500:]}


def scenario(lab: Lab, tmp: Path) -> Restored:
    ctls = hapair.controllers(lab)
    first = hapair.NODES[0]
    cfg = config_file(lab, first, tmp)
    admin = datacenter.token_for(lab)
    assert admin
    # A store with some history: a VM made and deleted, so what it had allocated (address,
    # MAC, port) is not what a fresh allocation in the same order would give.
    with datacenter.api_for(lab) as a:
        for vm in ("rsold1", "rsold2"):
            a.create_vm("acme", {"name": vm, "network": "back", "hypervisor": "hv2"})
        datacenter.sync_vms(lab, a)
        datacenter.wait_converged(a, 30)
        a.delete_vm("acme", "rsold1")
        datacenter.sync_vms(lab, a)
        tokens = {"admin": admin, "operator": a.create_token("rsops", "operator")["token"]}
    backup_file = tmp / "pair.tar.gz"
    backup_out = hypetunnel(lab, first, "backup", str(backup_file), "--config", str(cfg))
    with datacenter.api_for(lab) as a:
        datacenter.wait_converged(a, 30)
    pinger = start_ping(lab, tmp / "ping.out")
    server, client = start_stream(lab)
    try:
        time.sleep(1.0)  # both streams established before the loss (a measurement window)
        flows_before, ports_before = flow_tables(lab), port_numbers(lab)
        lost_at = time.time()
        for node in hapair.NODES:
            ctls[node].destroy()
        hapair.etcd_cluster(lab).recreate()
        logged = {n: (ctls[n].directory / "controller.log").stat().st_size
                  for n in hapair.NODES}  # the new processes' lines come after these
        restore_out = hypetunnel(lab, first, "restore", str(backup_file), "--config", str(cfg))
        for node in hapair.NODES:  # new processes, the first one first: it becomes active
            ctls[node].start()
            if node == first:
                wait_until(lambda: controller_view(lab, first).get("role") == "active", 30,
                           f"the new {first} to become active")
                active_at = time.time()
        wait_until(lambda: controller_view(lab, hapair.NODES[1]).get("role") == "standby", 30,
                   "the new standby")
        with datacenter.api_for(lab) as a:
            datacenter.wait_converged(a, 60)
        time.sleep(1.0)  # traffic keeps flowing after the takeover (a measurement window)
        flows_after, ports_after = flow_tables(lab), port_numbers(lab)
    finally:
        ping_out = stop_ping(pinger)
        stream = stop_stream(server, client)
    views = {n: controller_view(lab, n) for n in hapair.NODES}
    churn = [ln for n in hapair.NODES
             for ln in (ctls[n].directory / "controller.log").read_bytes()[logged[n]:]
             .decode(errors="replace").splitlines() if re.search(r"\+\d+ -\d+ flows", ln)]
    return Restored(lab, tokens, flows_before, flows_after, ports_before, ports_after, views,
                    churn, answers(ping_out), ping_out, stream, backup_out, restore_out,
                    lost_at, active_at, tmp)


@pytest.fixture(scope="module")
def restored(request: pytest.FixtureRequest) -> Iterator[Restored]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    name = f"rs{os.getpid() % 10000}"
    datacenter.down(name)
    tmp = Path(tempfile.mkdtemp(prefix="ht-restore-"))
    try:
        lab = datacenter.up(bundled_example(), name, timeout=90, ha=True)
        yield scenario(lab, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not keep_failed_lab(request):
            datacenter.down(name)


def test_backup_and_restore_go_through_the_cli(restored: Restored) -> None:
    assert "etcd store" in restored.backup_out and "the admin token" in restored.backup_out
    assert "restored" in restored.restore_out, restored.restore_out
    r = restored
    times = sorted(r.ping.values())
    silence = max((b - a for a, b in itertools.pairwise(times)), default=0.0)
    print(f"\n[restore] pair and store lost to new active: {r.active_at - r.lost_at:.1f} s; "
          f"ping {len(r.ping)} answered of {max(r.ping, default=0)}, longest silence "
          f"{silence * 1000:.0f} ms; tcp {r.stream.get('exchanges')} echoes; flows "
          f"{ {hv: len(f) for hv, f in r.flows_after.items()} }; flow_mods_sent "
          f"{ {n: v.get('flow_mods_sent') for n, v in r.views.items()} }\n"
          f"{r.backup_out}{r.restore_out}")


def test_the_new_pair_adopts_the_switches_without_one_flow_change(restored: Restored) -> None:
    assert all(len(flows) > 10 for flows in restored.flows_before.values())
    assert restored.flows_after == restored.flows_before
    assert restored.ports_after == restored.ports_before
    active = [v for v in restored.views.values() if v.get("role") == "active"]
    assert len(active) == 1, restored.views
    assert all(v.get("flow_mods_sent") == 0 for v in restored.views.values()), restored.views
    assert restored.churn_logged == []


def test_traffic_never_noticed(restored: Restored) -> None:
    got = restored.ping
    assert got, restored.ping_out[-300:]
    missing = lost(got)
    # Every echo sent before the last answered one was answered, over the whole outage.
    assert missing == [], f"lost icmp_seq {missing[:20]} of {max(got)}"
    assert min(got.values()) < restored.lost_at and max(got.values()) > restored.active_at, \
        f"the ping did not span the outage: {restored.ping_out[-1500:]}"
    # The one TCP connection lived through it all: no reset, no stall of 5 s.
    assert restored.stream["error"] is None, restored.stream
    assert restored.stream["exchanges"] > 100, restored.stream


def test_tokens_from_before_work_and_new_writes_too(restored: Restored) -> None:
    lab = restored.lab
    active = next(n for n, v in restored.views.items() if v.get("role") == "active")
    url = hapair.controllers(lab)[active].api_url
    for who, token in restored.tokens.items():
        with ApiClient(url, token=token, ca=hapair.lab_ca(lab)) as old:
            assert old.list_tenants(), who
    with datacenter.api_for(lab) as a:
        a.create_vm("acme", {"name": "rsnew1", "network": "back", "hypervisor": "hv2"})
        datacenter.sync_vms(lab, a)
        datacenter.wait_converged(a, 30)
    assert lab.exec(PING_SRC, ["ping", "-c", "3", "-i", "0.2", "-W", "1",
                               lab.vm("acme/rsnew1").ip], check=False).returncode == 0


# --- the same through the collection's backup and restore roles ------------------------------

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "ansible/ansible_collections/hypetunnel/fabric/playbooks"


def ansible_playbook(tmp: Path, playbook: str, extra: dict[str, Any]) -> str:
    """A playbook of the collection against the lab's controller hosts (connection local:
    the lab's controllers are reached through the CLI wrappers and the lab hook)."""
    inventory = tmp / "inventory.yml"
    local = {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"}
    inventory.write_text(yaml.safe_dump({"all": {"children": {"controllers": {
        "hosts": {n: dict(local) for n in hapair.NODES}}}}}))
    (tmp / "extra.json").write_text(json.dumps(extra))
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(REPO / "ansible"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_HOME": str(tmp / "ansible-home"),
           "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
           "ANSIBLE_REMOTE_TEMP": str(tmp / "ansible-tmp")}
    cp = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i",
                         str(inventory), "-e", f"@{tmp / 'extra.json'}",
                         str(PLAYBOOKS / playbook)], env=env, capture_output=True, text=True,
                        timeout=300, check=False)
    assert cp.returncode == 0, f"{playbook}:\n{cp.stdout[-3000:]}{cp.stderr[-2000:]}"
    return cp.stdout


def test_the_ansible_roles_back_up_and_restore_the_pair(restored: Restored) -> None:
    from hypetunnel import backup as bk

    lab, tmp = restored.lab, restored.tmp / "roles"
    tmp.mkdir()
    first = hapair.NODES[0]
    cfg, cli = config_file(lab, first, tmp), cli_wrapper(lab, first, tmp)
    ansible_playbook(tmp, "backup.yml", {
        "backup_cli": str(cli), "backup_config": str(cfg), "backup_name": "roles.tar.gz",
        "backup_remote_dir": str(tmp / "remote"), "backup_local_dir": str(tmp / "fetched")})
    fetched = tmp / "fetched" / "roles.tar.gz"
    assert fetched.stat().st_mode & 0o777 == 0o600
    assert not (tmp / "remote" / "roles.tar.gz").exists(), "the host's copy was left behind"
    made = bk.read(fetched)
    assert made.token is not None and made.pki and made.items

    with datacenter.api_for(lab) as a:
        datacenter.wait_converged(a, 30)
    ctls = hapair.controllers(lab)
    sent = {n: controller_view(lab, n).get("flow_mods_sent") for n in hapair.NODES}
    before = flow_tables(lab)
    pinger = start_ping(lab, tmp / "ping.out")
    try:
        time.sleep(1.0)  # the stream is established before the loss (a measurement window)
        lost_at = time.time()
        for node in hapair.NODES:  # lost with their store, before the role runs
            ctls[node].destroy()
        hapair.etcd_cluster(lab).recreate()
        out = ansible_playbook(tmp, "restore.yml", {
            "restore_file": str(fetched), "restore_cli": str(cli), "restore_config": str(cfg),
            "restore_remote_dir": str(tmp / "remote"), "restore_api_port": 0,
            "hypetunnel_service_manager": "lab",
            "restore_service_tasks": str(Path(__file__).parent / "restore_lab_service.yml"),
            "lab_python": sys.executable, "lab_name": lab.name})
        with datacenter.api_for(lab) as a:
            datacenter.wait_converged(a, 60)
        restored_at = time.time()
        time.sleep(1.0)  # traffic keeps flowing after the restore (a measurement window)
        after = flow_tables(lab)
    finally:
        ping_out = stop_ping(pinger)
    views = {n: controller_view(lab, n) for n in hapair.NODES}
    got = answers(ping_out)
    print(f"\n[restore] through the roles: ping {len(got)} answered of "
          f"{max(got, default=0)}; flow_mods_sent before {sent}, after "
          f"{ {n: v.get('flow_mods_sent') for n, v in views.items()} }")
    assert "restored" in out
    assert [views[n].get("role") for n in hapair.NODES] == ["active", "standby"], views
    assert after == before
    assert all(v.get("flow_mods_sent") == 0 for v in views.values()), views
    assert got and lost(got) == [], ping_out[-300:]
    assert min(got.values()) < lost_at and max(got.values()) > restored_at, ping_out[-300:]
    assert not (tmp / "remote" / "roles.tar.gz").exists()
