"""site.yml over SSH against a bare lab of 3 hosts: etcd refuses to bootstrap under a --limit
that leaves a member out; the first run converges and real packets
prove the tenants (reach and isolation); the second run changes nothing; after a change in vars,
`--check --diff` reports it and leaves the store and the switches' flows as they were; the real
run then applies it."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from hypetunnel.lab import datacenter
from hypetunnel.lab.proc import run, wait_until
from hypetunnel.lab.topology import Lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
TENANTS = REPO / "examples" / "deploy" / "tenants.yml"
HOSTS = ("hv1", "hv2", "hv3")
WHEELHOUSE = Path("/var/cache/hypetunnel-test/wheelhouse")
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                   re.M)
VERIFIED = re.compile(r"reachability (\d+)/(\d+), isolation (\d+)/(\d+)")
NEW_VM = {"name": "web4", "network": "front", "hypervisor": "hv2", "ip": "10.1.0.13",
          "mac": "02:00:00:01:00:13"}


def hypetunnel(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hypetunnel", *args], capture_output=True,
                          text=True, timeout=timeout)


def build_wheelhouse() -> Path:
    """The controller role's offline package source: the dependencies' wheels once (per
    pyproject.toml), this checkout's own wheel on every run. Locked: other runs share it."""
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--find-links", str(WHEELHOUSE),
           "-w", str(WHEELHOUSE)]
    stamp = WHEELHOUSE / (".deps-" + hashlib.sha1((REPO / "pyproject.toml").read_bytes())
                          .hexdigest()[:12])
    with open(WHEELHOUSE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            subprocess.run([*pip, str(REPO)], check=True, timeout=600, cwd=REPO)
            stamp.touch()
        subprocess.run([*pip, "--no-deps", str(REPO)], check=True,
                       timeout=300, cwd=REPO)
    return WHEELHOUSE


def lab_service_records(lab_dir: Path) -> list[dict[str, Any]]:
    """What hypetunnel_service (manager lab) started on the bare hosts: pid and start time."""
    records = []
    for path in lab_dir.glob("hosts/*/var/run/hypetunnel-lab/*.json"):
        with contextlib.suppress(OSError, ValueError):
            records.append(json.loads(path.read_text()))
    return records


def still_running(record: dict[str, Any]) -> bool:
    try:
        stat = Path(f"/proc/{record['pid']}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return stat[0] != "Z" and stat[19] == record.get("start_time")


def kill_role_processes(records: list[dict[str, Any]]) -> None:
    for rec in records:
        if still_running(rec):
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec["pid"], signal.SIGKILL)
    wait_until(lambda: not any(still_running(r) for r in records), 20,
               "the roles' processes to die")


@contextlib.contextmanager
def bare_lab(prefix: str, hosts: Sequence[str] = HOSTS) -> Iterator[Lab]:
    """A bare lab of `hosts` named PREFIX<pid>; on the way out the roles' processes are
    killed and the lab taken down (and checked gone), whatever happened."""
    name = f"{prefix}{os.getpid() % 10000}"
    datacenter.down(name)
    build_wheelhouse()
    directory: Path | None = None
    with tempfile.TemporaryDirectory(prefix="ht-bare-") as tmp:
        spec = Path(tmp) / "hosts.yaml"
        spec.write_text(yaml.safe_dump({"hosts": [{"name": n} for n in hosts]}))
        try:
            cp = hypetunnel("lab", "up", "--bare", str(spec), "--name", name, timeout=600)
            assert cp.returncode == 0, cp.stderr
            lab = Lab.load(name)
            directory = lab.directory
            yield lab
        finally:
            records = lab_service_records(directory) if directory else []
            try:
                kill_role_processes(records)
            finally:
                cp = hypetunnel("lab", "down", name, timeout=300)
                assert cp.returncode == 0, cp.stderr
                assert not any(still_running(r) for r in records)
                assert directory is None or not directory.exists()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    with bare_lab("st") as built:
        yield built


def site(lab: Lab, *args: str, timeout: float = 480, playbook: str = "site",
         hosts: Sequence[str] = HOSTS) -> tuple[str, dict[str, dict[str, int]]]:
    """ansible-playbook hypetunnel.fabric.PLAYBOOK over SSH (with the tenants' vars); its
    output and its PLAY RECAP, which must name every host."""
    cp = hypetunnel("lab", "operator", "--name", lab.name, "--", "ansible-playbook",
                    f"hypetunnel.fabric.{playbook}", "-e", f"@{TENANTS}",
                    "-e", f"controller_wheelhouse={WHEELHOUSE}", *args, timeout=timeout)
    out = cp.stdout + cp.stderr
    assert cp.returncode == 0, out[-6000:]
    recap = {m[1]: {"ok": int(m[2]), "changed": int(m[3]), "unreachable": int(m[4]),
                    "failed": int(m[5])} for m in RECAP.finditer(cp.stdout)}
    assert sorted(recap) == sorted(hosts), out[-3000:]
    return out, recap


def verify(lab: Lab) -> tuple[int, int]:
    """`lab sync` then `verify`: real pings between every pair of VMs; (pairs, pairs as
    expected) over reachability and isolation together."""
    cp = hypetunnel("lab", "sync", "--name", lab.name)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    cp = hypetunnel("verify", "--name", lab.name, timeout=180)
    m = VERIFIED.search(cp.stdout)
    assert m, cp.stdout + cp.stderr
    reach_ok, reach, iso_ok, iso = (int(g) for g in m.groups())
    assert cp.returncode == 0 and reach_ok == reach > 0 and iso_ok == iso > 0, cp.stdout
    return reach + iso, reach_ok + iso_ok


def intent(lab: Lab) -> dict[str, Any]:
    with datacenter.api_for(Lab.load(lab.name)) as api:
        return api.get_intent()


def flows(lab: Lab) -> dict[str, list[str]]:
    """Every host's br-int flow table, without counters."""
    out = {}
    for name in HOSTS:
        hv = Lab.load(lab.name).hypervisor(name)
        ctl = hv.ovs.directory / "br-int.mgmt"
        dump = run(["ovs-ofctl", "-O", "OpenFlow13", "--no-stats", "dump-flows",
                    f"unix:{ctl}"]).stdout
        out[name] = sorted(line.strip() for line in dump.splitlines() if "actions=" in line)
    return out


def changed_vars(tmp_path: Path) -> Path:
    doc = yaml.safe_load(TENANTS.read_text())
    acme = next(t for t in doc["hypetunnel_tenants"] if t["name"] == "acme")
    acme["vms"].append(NEW_VM)
    path = tmp_path / "tenants-changed.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_etcd_refuses_to_bootstrap_with_members_left_out(lab: Lab) -> None:
    cp = hypetunnel("lab", "operator", "--name", lab.name, "--", "ansible-playbook",
                    "hypetunnel.fabric.site", "--tags", "etcd", "--limit", "hv1,hv2",
                    timeout=300)
    out = cp.stdout + cp.stderr
    assert cp.returncode != 0 and "hv3 is not in this run (--limit?)" in out, out[-3000:]
    assert not lab_service_records(lab.directory)  # nothing was started


def test_first_run_converges(lab: Lab) -> None:
    started = time.monotonic()
    _, recap = site(lab)
    elapsed = time.monotonic() - started
    assert all(r["failed"] == 0 and r["unreachable"] == 0 and r["changed"] > 0
               for r in recap.values()), recap
    print(f"first run: {elapsed:.0f}s")


def test_real_packets_prove_the_tenants(lab: Lab) -> None:
    cp = hypetunnel("lab", "attach", "--name", lab.name)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    verify(lab)
    vms = sorted(Lab.load(lab.name).vms)
    assert vms == ["acme/web1", "acme/web2", "acme/web3", "globex/web1", "globex/web2"]


def test_second_run_changes_nothing(lab: Lab) -> None:
    out, recap = site(lab)
    assert all(r["changed"] == 0 and r["failed"] == 0 for r in recap.values()), \
        "\n".join(line for line in out.splitlines() if line.startswith(("TASK", "changed")))


def test_check_diff_reports_a_vars_change_and_touches_nothing(lab: Lab, tmp_path: Path) -> None:
    before_intent, before_flows = intent(lab), flows(lab)
    out, recap = site(lab, "-e", f"@{changed_vars(tmp_path)}", "--check", "--diff")
    assert recap["hv1"]["changed"] >= 1, recap  # the tenants role, on the first controller
    assert recap["hv2"]["changed"] == recap["hv3"]["changed"] == 0, out[-3000:]
    assert NEW_VM["name"] in out and NEW_VM["ip"] in out, out[-3000:]  # the diff shows it
    assert intent(lab) == before_intent
    assert flows(lab) == before_flows
    verify(lab)  # the fabric still carries the tenants' packets as before
    assert "acme/web4" not in Lab.load(lab.name).vms


def test_real_run_applies_the_change(lab: Lab, tmp_path: Path) -> None:
    _, recap = site(lab, "-e", f"@{changed_vars(tmp_path)}")
    assert recap["hv1"]["changed"] >= 1 and recap["hv3"]["changed"] == 0, recap
    acme = next(t for t in intent(lab)["tenants"] if t["name"] == "acme")
    assert NEW_VM["name"] in [vm["name"] for vm in acme["vms"]]
    verify(lab)
    assert "acme/web4" in Lab.load(lab.name).vms
