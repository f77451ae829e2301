"""The rolling upgrade of the controller pair (hypetunnel.fabric.upgrade) over SSH against a
bare lab that site.yml deployed: a newer wheel of this very source (a local version suffix) is
installed into the standby first, then the active role is handed over, then the old active is
upgraded, while a 10 ms ping and a TCP echo stream cross the hypervisors. Not one echo is lost,
both controllers report the new version, `--check` before changes nothing and a second run
reports changed=0."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from hypetunnel import __version__
from hypetunnel.client import ApiClient
from hypetunnel.lab import hapair
from hypetunnel.lab.proc import wait_until
from hypetunnel.lab.topology import Lab
from tests.lab.conftest import answers, keep_failed_lab, lost, start_ping, stop_ping
from tests.lab.test_ansible_site import (
    HOSTS,
    RECAP,
    TENANTS,
    WHEELHOUSE,
    build_wheelhouse,
    hypetunnel,
    kill_role_processes,
    lab_service_records,
)

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
ECHO = Path(__file__).parent / "tcp_echo.py"
NEW_VERSION = f"{__version__}+up1"  # a local version label: the same source, a newer wheel
CONTROLLERS = ("hv1", "hv2")  # the inventory's controllers group: the first two hosts
SERVICE = "hypetunnel-controller"
PING_SRC, PING_DST = "acme/web1", "acme/web3"  # hv1 -> hv3
STREAM_SRC, STREAM_DST = "acme/web1", "acme/web2"  # hv1 -> hv2


@dataclass
class Playbook:
    output: str
    recap: dict[str, dict[str, int]]

    def changed(self) -> int:
        return sum(r["changed"] for r in self.recap.values())


@dataclass
class Stage:
    """The module's lab and what each test in turn did to it and measured: the tests run in
    file order, each stage within its own time budget (a loaded machine makes site.yml slow)."""

    lab: Lab
    work: Path
    deployed: Path  # the wheelhouse site.yml installs from
    wheels: Path  # the newer wheel the upgrade installs
    views_before: dict[str, dict[str, Any]] = field(default_factory=dict)
    services_before: dict[str, dict[str, Any]] = field(default_factory=dict)
    upgraded: Playbook | None = None
    services_after: dict[str, dict[str, Any]] = field(default_factory=dict)

    def upgrade(self, *args: str) -> Playbook:
        return playbook(self.lab, "upgrade", "-e", f"upgrade_version={NEW_VERSION}",
                        "-e", f"upgrade_wheelhouse={self.wheels}", *args)


def own_wheelhouse(where: Path) -> Path:
    """What site.yml installs from: the shared wheelhouse's dependencies and this checkout's
    own wheel, built here (another checkout's test run may rebuild the shared wheelhouse's
    hypetunnel wheel at any moment, and this test needs this source's API on both sides)."""
    wheels = where / "deployed"
    wheels.mkdir()
    for dep in WHEELHOUSE.glob("*.whl"):
        if not dep.name.startswith("hypetunnel-"):
            (wheels / dep.name).symlink_to(dep)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--find-links",
                    str(WHEELHOUSE), "-w", str(wheels), str(REPO)], check=True, timeout=300,
                   cwd=where)
    return wheels


def newer_wheelhouse(where: Path) -> Path:
    """This checkout's source with NEW_VERSION (pyproject.toml and __version__), built into a
    wheelhouse of its own: the package a rolling upgrade installs."""
    src = where / "source"
    shutil.copytree(REPO / "src", src / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    old = f'version = "{__version__}"'
    pyproject = (REPO / "pyproject.toml").read_text()
    assert old in pyproject
    (src / "pyproject.toml").write_text(pyproject.replace(old, f'version = "{NEW_VERSION}"', 1))
    init = src / "src" / "hypetunnel" / "__init__.py"
    text = init.read_text()
    assert f'__version__ = "{__version__}"' in text
    init.write_text(text.replace(f'__version__ = "{__version__}"',
                                 f'__version__ = "{NEW_VERSION}"'))
    wheels = where / "wheelhouse"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--find-links",
                    str(WHEELHOUSE), "-w", str(wheels), str(src)], check=True, timeout=300,
                   cwd=where)
    assert [p.name for p in wheels.glob("hypetunnel-*.whl")] == \
        [f"hypetunnel-{NEW_VERSION}-py3-none-any.whl"]
    return wheels


def playbook(lab: Lab, book: str, *args: str, timeout: float = 480) -> Playbook:
    cp = hypetunnel("lab", "operator", "--name", lab.name, "--", "ansible-playbook",
                    f"hypetunnel.fabric.{book}", *args, timeout=timeout)
    out = cp.stdout + cp.stderr
    assert cp.returncode == 0, out[-6000:]
    recap = {m[1]: {"ok": int(m[2]), "changed": int(m[3]), "unreachable": int(m[4]),
                    "failed": int(m[5])} for m in RECAP.finditer(cp.stdout)}
    assert recap and all(r["failed"] == r["unreachable"] == 0 for r in recap.values()), out
    return Playbook(cp.stdout, recap)


def services(lab: Lab) -> dict[str, dict[str, Any]]:
    """The controller service's record on each controller host (pid, start time, command)."""
    out = {}
    for host in CONTROLLERS:
        path = lab.directory / "hosts" / host / "var/run/hypetunnel-lab" / f"{SERVICE}.json"
        with contextlib.suppress(OSError, ValueError):
            out[host] = json.loads(path.read_text())
    return out


def installed(lab: Lab) -> dict[str, str]:
    """The package version in each controller host's virtualenv."""
    out = {}
    for host in CONTROLLERS:
        py = lab.directory / "hosts" / host / "opt/hypetunnel/venv/bin/python"
        out[host] = subprocess.run(
            [str(py), "-c", "import importlib.metadata as m; print(m.version('hypetunnel'))"],
            capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    return out


def views(lab: Lab) -> dict[str, dict[str, Any]]:
    """GET /controller of each member, by its node name (through the lab's forwarders)."""
    lab = Lab.load(lab.name)
    out = {}
    for url in (lab.api_url or "").split(","):
        with contextlib.suppress(Exception), \
                ApiClient(url, ca=hapair.lab_ca(lab), token=hapair.api_token(lab),
                          timeout=5.0) as api:
            view = dict(api.controller())
            out[str(view.get("node"))] = view
    return out


def reaches(lab: Lab, src: str, dst: str) -> bool:
    return lab.exec(src, ["ping", "-c", "1", "-W", "1", lab.vm(dst).ip],
                    check=False).returncode == 0


class Stream:
    """tcp_echo.py: one TCP connection STREAM_SRC -> STREAM_DST, an echo every 10 ms."""

    def __init__(self, lab: Lab, work: Path) -> None:
        self.ready, self.stop = work / "stream.ready", work / "stream.stop"
        ip = lab.vm(STREAM_DST).ip
        self.server = lab.spawn(STREAM_DST, ["/usr/bin/python3", str(ECHO), "server", ip, "7001"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.client: subprocess.Popen[str] | None = None
        try:
            wait_until(lambda: ":7001" in lab.exec(STREAM_DST, ["ss", "-ltn"]).stdout, 10,
                       "the echo server")
            self.client = lab.spawn(STREAM_SRC, ["/usr/bin/python3", str(ECHO), "client", ip,
                                                 "7001", str(self.ready), str(self.stop)],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            wait_until(lambda: self.ready.exists() or self.client.poll() is not None, 15,
                       "the TCP stream to be established")
        except BaseException:
            self.kill()
            raise

    def finish(self) -> dict[str, Any]:
        assert self.client is not None
        self.stop.write_text("stop\n")
        out, _ = self.client.communicate(timeout=30)
        self.kill()
        try:
            return dict(json.loads(out.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            return {"echoed": 0, "error": out[-500:]}

    def kill(self) -> None:
        for p in (self.client, self.server):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)


def shared_dependencies() -> None:
    """The dependencies' wheels in the shared wheelhouse (built once, under its lock)."""
    stamp = WHEELHOUSE / (".deps-" + hashlib.sha1((REPO / "pyproject.toml").read_bytes())
                          .hexdigest()[:12])
    if not stamp.exists():
        build_wheelhouse()


@pytest.fixture(scope="module")
def stage(request: pytest.FixtureRequest) -> Iterator[Stage]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    name = f"up{os.getpid() % 10000}"
    hypetunnel("lab", "down", name)
    work = Path(tempfile.mkdtemp(prefix="ht-upgrade-"))
    directory: Path | None = None
    try:
        shared_dependencies()
        deployed, wheels = own_wheelhouse(work), newer_wheelhouse(work)
        hosts = work / "hosts.yaml"
        hosts.write_text(yaml.safe_dump({"hosts": [{"name": n} for n in HOSTS]}))
        cp = hypetunnel("lab", "up", "--bare", str(hosts), "--name", name)
        assert cp.returncode == 0, cp.stderr
        lab = Lab.load(name)
        directory = lab.directory
        yield Stage(lab, work, deployed, wheels)
    finally:
        if not keep_failed_lab(request):
            records = lab_service_records(directory) if directory else []
            try:
                kill_role_processes(records)
            finally:
                cp = hypetunnel("lab", "down", name)
                assert cp.returncode == 0, cp.stderr
        shutil.rmtree(work, ignore_errors=True)


def restarts(out: str) -> list[str]:
    """The hosts the upgrade restarted, in the order the play did it."""
    hosts = []
    for block in re.split(r"\n(?=TASK \[)", out):
        if block.startswith("TASK [hypetunnel.fabric.upgrade : Restart the controller]"):
            hosts += re.findall(r"^changed: \[(\w+)\]", block, re.M)
    return hosts


def test_site_deploys_the_pair(stage: Stage) -> None:
    t = time.monotonic()
    playbook(stage.lab, "site", "-e", f"@{TENANTS}", "-e",
             f"controller_wheelhouse={stage.deployed}")
    elapsed = time.monotonic() - t
    for args in (("attach",), ("sync",)):
        cp = hypetunnel("lab", *args, "--name", stage.lab.name)
        assert cp.returncode == 0, cp.stdout + cp.stderr
    stage.lab = lab = Lab.load(stage.lab.name)
    wait_until(lambda: reaches(lab, PING_SRC, PING_DST) and reaches(lab, STREAM_SRC, STREAM_DST),
               30, "the VMs to reach each other")
    stage.views_before, stage.services_before = views(lab), services(lab)
    before = {n: (v.get("role"), v.get("version")) for n, v in stage.views_before.items()}
    assert before == {"hv1": ("active", __version__), "hv2": ("standby", __version__)}, \
        stage.views_before
    print(f"\n[upgrade] site.yml: {elapsed:.0f} s")


def test_check_mode_changes_nothing(stage: Stage) -> None:
    assert stage.services_before, "site.yml did not deploy the pair"
    t = time.monotonic()
    check = stage.upgrade("--check")
    elapsed = time.monotonic() - t
    assert check.changed() >= 1, check.output[-3000:]  # it tells what it would do
    assert restarts(check.output) == ["hv2", "hv1"], check.output[-3000:]
    assert services(stage.lab) == stage.services_before  # no controller was restarted
    assert installed(stage.lab) == {h: __version__ for h in CONTROLLERS}
    assert {n: v.get("role") for n, v in views(stage.lab).items()} == \
        {"hv1": "active", "hv2": "standby"}  # no hand-over
    print(f"\n[upgrade] --check: {elapsed:.0f} s")


def test_the_rolling_upgrade_loses_not_one_packet(stage: Stage) -> None:
    assert stage.services_before, "site.yml did not deploy the pair"
    lab = stage.lab
    pinger = start_ping(lab, PING_SRC, PING_DST, stage.work / "ping.out")
    stream: Stream | None = None
    try:
        stream = Stream(lab, stage.work)
        wait_until(lambda: len(answers((stage.work / "ping.out").read_text())) >= 50, 15,
                   "the ping to run")
        began = time.time()
        stage.upgraded = stage.upgrade()
        ended = time.time()
        time.sleep(1.0)  # traffic keeps flowing after the upgrade (a measurement window)
    finally:
        ping_out = stop_ping(pinger)
        result = stream.finish() if stream is not None else {"echoed": 0, "error": "no stream"}
    stage.services_after = services(lab)
    got = answers(ping_out)
    assert got, ping_out[-300:]
    missing = lost(got)
    assert missing == [], f"lost icmp_seq {missing[:20]} of {max(got)}"
    assert min(got.values()) < began and max(got.values()) > ended, ping_out[-500:]
    assert result["error"] is None and result["echoed"] > 100, result
    print(f"\n[upgrade] the rolling upgrade: {ended - began:.0f} s; ping {len(got)} answered "
          f"of {max(got)}; tcp {result['echoed']} echoes, longest {result.get('longest_ms')} ms")


def test_the_standby_first_then_a_hand_over_then_the_old_active(stage: Stage) -> None:
    assert stage.upgraded is not None, "the upgrade did not run"
    out = stage.upgraded.output
    assert restarts(out) == ["hv2", "hv1"], out[-4000:]
    hand_over = out.index("TASK [hypetunnel.fabric.upgrade : Hand the active role over")
    first, second = (out.index(f"TASK [hypetunnel.fabric.upgrade : {t}")
                     for t in ("The standby first: hv2", "Then the old active: hv1"))
    assert first < hand_over < second
    # The processes' own start times (kernel clock ticks) tell the same order.
    after, before = stage.services_after, stage.services_before
    assert int(after["hv2"]["start_time"]) < int(after["hv1"]["start_time"]), after
    assert all(after[h]["pid"] != before[h]["pid"] for h in CONTROLLERS)


def test_both_controllers_run_the_new_version(stage: Stage) -> None:
    assert stage.upgraded is not None, "the upgrade did not run"
    now = views(stage.lab)
    assert {n: (v.get("role"), v.get("version")) for n, v in now.items()} == \
        {"hv1": ("standby", NEW_VERSION), "hv2": ("active", NEW_VERSION)}, now
    assert now["hv2"]["term"] > stage.views_before["hv1"]["term"]
    assert installed(stage.lab) == {h: NEW_VERSION for h in CONTROLLERS}


def test_a_second_run_changes_nothing(stage: Stage) -> None:
    assert stage.upgraded is not None, "the upgrade did not run"
    again = stage.upgrade()
    assert again.changed() == 0, "\n".join(
        ln for ln in again.output.splitlines() if ln.startswith(("TASK", "changed")))
    assert services(stage.lab) == stage.services_after  # nothing restarted
    assert "Hand the active role over" in again.output  # skipped, not missing
