"""A whole lab datacenter (3 hypervisors, 2 tenants with identical CIDRs) shared by the module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from hypetunnel.cli.democmd import bundled_example
from hypetunnel.client import ApiClient
from hypetunnel.lab import datacenter, diagnose
from hypetunnel.lab.controller import LabController
from hypetunnel.lab.topology import Lab

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
