"""The hypetunnel.fabric day-2 playbooks (tenant, vm_move, drain, undrain, retire_hypervisor),
run by a real ansible-playbook against the standard HA lab's controller pair, with real packets.

The playbooks run on localhost (connection local, the system python3) and reach the controllers
the way the lab's own clients do: their APIs are served on unix sockets in the controllers'
directories, HTTPS verified against the lab's CA (the modules' `unix:/path` URLs). The lab's
compute agent carries out what the controllers decide (plugs, unplugs, moves).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hypetunnel.cli.democmd import bundled_example
from hypetunnel.lab import datacenter, hapair
from hypetunnel.lab.proc import wait_until
from hypetunnel.lab.topology import Lab
from tests.lab.conftest import keep_failed_lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
ECHO = Path(__file__).parent / "tcp_echo.py"
PING_LOSS_MAX = 2  # probes a hot move may lose (as tests/lab/test_mobility.py bounds it)


@dataclass
class Day2:
    lab: Lab
    work: Path
    api_vars: dict[str, Any]


@pytest.fixture(scope="module")
def day2(request: pytest.FixtureRequest) -> Iterator[Day2]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    name = f"d2{os.getpid() % 10000}"
    work = Path(tempfile.mkdtemp(prefix="ht-day2-"))
    datacenter.down(name)
    try:
        lab = datacenter.up(bundled_example(), name, timeout=90, ha=True, agent=True)
        token = work / "admin.token"
        token.write_text(str(hapair.api_token(lab)) + "\n")
        token.chmod(0o600)
        urls = [ctl.api_url for ctl in hapair.controllers(lab).values()]
        assert all(u.startswith("unix:") for u in urls), urls
        yield Day2(lab, work, {"hypetunnel_api_urls": urls,
                               "hypetunnel_api_token_file": str(token),
                               "hypetunnel_api_ca": str(hapair.lab_ca(lab)),
                               "hypetunnel_api_timeout": 20,
                               "ansible_python_interpreter": "/usr/bin/python3"})
    finally:
        if not keep_failed_lab(request):
            datacenter.down(name)
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Run:
    rc: int
    changed: int
    output: str


def play(d: Day2, book: str, check: bool = False, **extra: Any) -> Run:
    """`ansible-playbook hypetunnel.fabric.BOOK -e @vars.json` on localhost."""
    tmp = d.work / "ansible-tmp"
    tmp.mkdir(exist_ok=True)
    varfile = d.work / "vars.json"
    varfile.write_text(json.dumps({**d.api_vars, **extra}))
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(REPO / "ansible"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_PIPELINING": "1", "ANSIBLE_LOCAL_TEMP": str(tmp),
           "ANSIBLE_REMOTE_TEMP": str(tmp), "ANSIBLE_HOME": str(d.work / "ansible-home")}
    argv = [str(PLAYBOOK), "-i", "localhost,", "-c", "local", "-e", f"@{varfile}",
            f"hypetunnel.fabric.{book}"]
    proc = subprocess.run([*argv, "--check", "--diff"] if check else argv, env=env,
                          capture_output=True, text=True, timeout=200, stdin=subprocess.DEVNULL)
    output = f"{proc.stdout[-5000:]}\n{proc.stderr[-2000:]}"
    m = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=(\d+)",
                  proc.stdout)
    assert m, output
    assert proc.returncode == 0 and m.group(2) == "0", output
    return Run(proc.returncode, int(m.group(1)), output)


def intent(d: Day2) -> dict[str, Any]:
    with datacenter.api_for(d.lab) as api:
        return dict(api.get_intent())


def placed(d: Day2, hypervisor: str) -> list[str]:
    return sorted(f"{t['name']}/{v['name']}" for t in intent(d)["tenants"] for v in t["vms"]
                  if v.get("hypervisor") == hypervisor)


def hypervisor(d: Day2, name: str) -> dict[str, Any] | None:
    return next((h for h in intent(d)["hypervisors"] if h["name"] == name), None)


def now(d: Day2) -> Lab:
    """The lab as it is now (its VMs plugged, moved and unplugged since the fixture's copy)."""
    return Lab.load(d.lab.name)


def vm_ip(d: Day2, vid: str) -> str:
    return now(d).vm(vid).ip


def reaches(d: Day2, src: str, dst: str) -> bool:
    return now(d).exec(src, ["ping", "-c", "1", "-W", "1", vm_ip(d, dst)],
                      check=False).returncode == 0


class Traffic:
    """A TCP echo stream from `client` to `server` and a 20 ms ping from `pinger` to `target`,
    both running while the playbook does its work."""

    def __init__(self, d: Day2, client: str, server: str, pinger: str, target: str) -> None:
        self.d, self.tag = d, re.sub(r"\W", "-", server)
        self.ready, self.stop = d.work / f"{self.tag}.ready", d.work / f"{self.tag}.stop"
        self.ready.unlink(missing_ok=True)
        self.stop.unlink(missing_ok=True)
        ip, lab = vm_ip(d, server), now(d)
        self.server = lab.spawn(server, ["/usr/bin/python3", str(ECHO), "server", ip, "7001"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.client: subprocess.Popen[str] | None = None
        self.ping: subprocess.Popen[str] | None = None
        try:
            wait_until(lambda: ":7001" in lab.exec(server, ["ss", "-ltn"]).stdout, 10,
                       "the echo server")
            self.client = lab.spawn(client, ["/usr/bin/python3", str(ECHO), "client", ip, "7001",
                                             str(self.ready), str(self.stop)],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            self.ping = lab.spawn(pinger, ["ping", "-i", "0.02", "-W", "1", vm_ip(d, target)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            wait_until(lambda: self.ready.exists() or self.client.poll() is not None, 15,
                       "the TCP stream to be established")
            wait_until(lambda: reaches(d, pinger, target), 10, "the ping target")
        except BaseException:
            self.kill()
            raise

    def finish(self) -> tuple[dict[str, Any], int, int, str]:
        """(the stream's result, pings sent, pings received, ping's output)."""
        assert self.client is not None and self.ping is not None
        self.stop.write_text("stop\n")
        out, _ = self.client.communicate(timeout=30)
        self.ping.send_signal(signal.SIGINT)
        ping_out, _ = self.ping.communicate(timeout=30)
        self.kill()
        stream = json.loads(out.strip().splitlines()[-1])
        m = re.search(r"(\d+) packets transmitted, (\d+) received", ping_out)
        assert m, ping_out
        return stream, int(m.group(1)), int(m.group(2)), ping_out

    def kill(self) -> None:
        for p in (self.client, self.ping, self.server):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)


def test_tenant_add_then_remove_leaves_the_store_as_before(day2: Day2) -> None:
    before = intent(day2)
    spec = {"tenant_name": "d2t", "tenant_encapsulation": "geneve",
            "tenant_networks": [{"name": "net", "cidr": "10.9.0.0/24"}],
            "tenant_vms": [{"name": "a", "network": "net", "hypervisor": "hv1"},
                           {"name": "b", "network": "net", "hypervisor": "hv2"}]}
    vids = ("d2t/a", "d2t/b")
    checked = play(day2, "tenant", check=True, **spec)
    assert checked.changed == 1 and "d2t" in checked.output, checked.output
    assert intent(day2) == before  # check mode wrote nothing
    assert play(day2, "tenant", **spec).changed == 1
    wait_until(lambda: all(v in now(day2).vms for v in vids), 20,
               "the agent to plug the tenant's VMs")
    wait_until(lambda: reaches(day2, "d2t/a", "d2t/b"), 15, "d2t/a to reach d2t/b")
    assert play(day2, "tenant", **spec).changed == 0
    gone = {"tenant_name": "d2t", "tenant_state": "absent"}
    assert play(day2, "tenant", check=True, **gone).changed == 1
    assert "d2t" in [t["name"] for t in intent(day2)["tenants"]]
    assert play(day2, "tenant", **gone).changed == 1
    assert play(day2, "tenant", **gone).changed == 0
    assert intent(day2) == before
    wait_until(lambda: not any(v in now(day2).vms for v in vids), 20,
               "the agent to unplug the removed tenant's VMs")


def test_hot_vm_move_keeps_the_tcp_stream_and_the_ping(day2: Day2) -> None:
    move = {"vm_move_tenant": "acme", "vm_move_vm": "web2", "vm_move_to": "hv3"}
    assert now(day2).vm("acme/web2").hypervisor == "hv2"
    assert play(day2, "vm_move", check=True, **move).changed == 1
    assert "acme/web2" in placed(day2, "hv2")  # check mode moved nothing
    traffic = Traffic(day2, "acme/web1", "acme/web2", "acme/web3", "acme/web2")
    try:
        run = play(day2, "vm_move", **move)
    finally:
        stream, sent, received, ping_out = traffic.finish()
    assert run.changed == 1, run.output
    assert stream["error"] is None and stream["echoed"] > 20, stream
    assert sent - received <= PING_LOSS_MAX, ping_out[-300:]
    assert now(day2).vm("acme/web2").hypervisor == "hv3"
    assert "acme/web2" in placed(day2, "hv3")
    assert play(day2, "vm_move", **move).changed == 0
    print(f"hot move: {stream['echoed']} echoes, longest {stream['longest_ms']} ms, "
          f"ping {received}/{sent}")


def test_drain_moves_every_vm_away_and_undrain_reverses(day2: Day2) -> None:
    on_hv3 = placed(day2, "hv3")
    assert {"acme/db2", "acme/web2"} <= set(on_hv3), on_hv3
    drain, undrain = {"drain_hypervisor": "hv3"}, {"undrain_hypervisor": "hv3"}
    assert play(day2, "drain", check=True, **drain).changed == 1
    assert placed(day2, "hv3") == on_hv3 and hypervisor(day2, "hv3")["schedulable"] is not False
    traffic = Traffic(day2, "acme/db1", "acme/db2", "acme/web1", "acme/web2")
    try:
        run = play(day2, "drain", **drain)
    finally:
        stream, sent, received, ping_out = traffic.finish()
    assert run.changed == 1, run.output
    assert stream["error"] is None and stream["echoed"] > 20, stream
    assert sent - received <= PING_LOSS_MAX, ping_out[-300:]
    assert placed(day2, "hv3") == []
    assert hypervisor(day2, "hv3")["schedulable"] is False
    lab = now(day2)
    assert all(lab.vm(v).hypervisor != "hv3" for v in on_hv3)
    assert play(day2, "drain", **drain).changed == 0
    assert play(day2, "undrain", check=True, **undrain).changed == 1
    assert hypervisor(day2, "hv3")["schedulable"] is False
    assert play(day2, "undrain", **undrain).changed == 1
    assert hypervisor(day2, "hv3")["schedulable"] is not False
    assert play(day2, "undrain", **undrain).changed == 0
    print(f"drain of {len(on_hv3)} VMs: {stream['echoed']} echoes, longest "
          f"{stream['longest_ms']} ms, ping {received}/{sent}")


def test_retire_hypervisor_drains_it_and_removes_it(day2: Day2) -> None:
    retire = {"retire_hypervisor_name": "hv3"}
    # hv3 hosts a VM again (moved back through the API), so the retirement has something to drain.
    with datacenter.api_for(day2.lab) as api:
        rec = api.move_vm("acme", "web3", "hv3", False)
        wait_until(lambda: any(m["seq"] == rec["seq"] and m["result"] == "ok"
                               for m in api.moves("acme/web3")), 60, "web3 back on hv3")
    before = intent(day2)
    assert play(day2, "retire_hypervisor", check=True, **retire).changed >= 1
    assert intent(day2) == before
    assert play(day2, "retire_hypervisor", **retire).changed == 2
    assert hypervisor(day2, "hv3") is None
    assert now(day2).vm("acme/web3").hypervisor != "hv3"
    assert play(day2, "retire_hypervisor", **retire).changed == 0
    wait_until(lambda: reaches(day2, "acme/web1", "acme/web3"), 15, "web1 to reach web3")


def test_api_defaults_come_from_the_inventory_and_the_play_may_run_on_a_controller() -> None:
    """Without the lab: each role's API defaults from an inventory's `controllers` group, and
    `hypetunnel_api_host` choosing the host each playbook runs on."""
    work = Path(tempfile.mkdtemp(prefix="ht-day2-"))
    try:
        inventory = work / "inventory.json"
        inventory.write_text(json.dumps({"controllers": {"hosts": {
            "c1": {"mgmt_ip": "100.64.0.10", "hypetunnel_host_root": "/srv/c1"},
            "c2": {"mgmt_ip": "100.64.0.11"}}}}))
        roles = REPO / "ansible" / "ansible_collections" / "hypetunnel" / "fabric" / "roles"
        books = ("tenant", "vm_move", "drain", "undrain", "retire_hypervisor")
        book = work / "show.yml"
        book.write_text(json.dumps([{
            "hosts": "c1", "gather_facts": False, "connection": "local",
            "vars_files": [str(roles / r / "defaults" / "main.yml")],
            "tasks": [{"ansible.builtin.debug": {"msg": "API={{ [hypetunnel_api_urls, "
                       "hypetunnel_api_token_file, hypetunnel_api_ca] | to_json }}"}}]}
            for r in books]))
        env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(REPO / "ansible"),
               "ANSIBLE_NOCOLOR": "1", "ANSIBLE_HOME": str(work / "ansible-home"),
               "ANSIBLE_LOCAL_TEMP": str(work / "tmp")}
        common = ["-i", str(inventory), "-e", "ansible_python_interpreter=/usr/bin/python3"]
        out = subprocess.run([str(PLAYBOOK), *common, str(book)], env=env, capture_output=True,
                             text=True, timeout=120, check=True).stdout
        shown = [json.loads(json.loads(f'"{m}"')) for m in re.findall(r'"API=(.*)"', out)]
        assert shown == [[["https://100.64.0.10:8650", "https://100.64.0.11:8650"],
                          "/srv/c1/var/lib/hypetunnel/admin.token",
                          "/srv/c1/etc/hypetunnel/pki/ca.crt"]] * len(books), out
        fqcns = [f"hypetunnel.fabric.{name}" for name in books]
        for extra, host in (["-e", "hypetunnel_api_host=c2"], "c2"), ([], "localhost"):
            listed = subprocess.run([str(PLAYBOOK), *common, "--list-hosts", *extra, *fqcns],
                                    env=env, capture_output=True, text=True, timeout=60,
                                    check=True).stdout
            hosts = re.findall(r"hosts \((\d+)\):\s+(\S+)\s", listed)
            assert hosts == [("1", host)] * len(books), listed
    finally:
        shutil.rmtree(work, ignore_errors=True)
