"""rotate_certificates.yml over SSH on a bare lab that site.yml deployed: a forced rotation
under a 10 ms ping between VMs on two hypervisors loses no packet; every host's certificate
is a new one from the same CA; both controllers hold every switch over TLS with its new
certificate and serve their own new one, reloaded, not restarted; the etcd members were
restarted one at a time; `--check` changes nothing and a second run without force neither."""

from __future__ import annotations

import itertools
import json
import os
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from hypetunnel.lab import datacenter
from hypetunnel.lab.proc import LabError, wait_until
from hypetunnel.lab.topology import Lab
from tests.lab.conftest import answers, lost, start_ping, stop_ping
from tests.lab.test_ansible_site import HOSTS, bare_lab, hypetunnel, site

pytestmark = pytest.mark.lab

PING_SRC, PING_DST = "acme/web1", "acme/web2"  # hv1 -> hv2 (examples/deploy/tenants.yml)
CONTROLLERS = HOSTS[:2]  # the bare lab's inventory: the first two hosts
FORCE = ("-e", "rotate_certificates_force=true")


@dataclass
class Rotated:
    """What the module's one scenario saw, for the tests to check one by one."""

    lab: Lab
    before: dict[str, int]  # host -> serial of its installed certificate
    after: dict[str, int]
    issuers_before: dict[str, str]
    issuers_after: dict[str, str]
    services_before: dict[str, int]  # service (host/name) -> pid
    services_after: dict[str, int]
    views: dict[str, dict[str, str | None]]  # controller -> switch -> certificate serial
    served: dict[str, int]  # controller -> serial of the certificate its API presents
    recap: dict[str, dict[str, int]]
    output: str
    ping: dict[int, float]
    ping_out: str
    started: float
    ended: float
    tmp: Path


def cert_file(lab: Lab, host: str) -> Path:
    return lab.directory / "hosts" / host / "etc/hypetunnel/pki" / f"{host}.crt"


def certificates(lab: Lab) -> dict[str, x509.Certificate]:
    return {h: x509.load_pem_x509_certificate(cert_file(lab, h).read_bytes()) for h in HOSTS}


def services(lab: Lab) -> dict[str, int]:
    """The roles' services on the hosts: host/name -> pid (a restart shows as a new pid)."""
    return {f"{path.parents[3].name}/{path.stem}": json.loads(path.read_text())["pid"]
            for path in lab.directory.glob("hosts/*/var/run/hypetunnel-lab/*.json")}


def api_urls(lab: Lab) -> list[str]:
    return [u for u in (Lab.load(lab.name).api_url or "").split(",") if u]


def switch_serials(lab: Lab) -> dict[str, dict[str, str | None]]:
    """Each controller's view: hypervisor -> the serial its OpenFlow channel presented (None:
    not connected, or not over TLS)."""
    out: dict[str, dict[str, str | None]] = {}
    for node, url in zip(CONTROLLERS, api_urls(lab), strict=True):
        try:
            with datacenter.client(lab, url, timeout=5.0) as api:
                status: dict[str, Any] = dict(api.status())
        except Exception as e:  # not answering is a view too (shown in a failure)
            out[node] = {"(no answer)": repr(e)[:200]}
            continue
        out[node] = {s["hypervisor"]: s.get("certificate_serial") if s["openflow_connected"]
                     else None for s in status["switches"]}
    return out


def served_serial(url: str) -> int:
    """The serial of the certificate an API (here: its forwarder's unix socket) presents."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # we only read what it shows
    with socket.socket(socket.AF_UNIX) as raw:
        raw.settimeout(10)
        raw.connect(url.removeprefix("unix:"))
        with ctx.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def wait_for_switches_with(lab: Lab, serials: dict[str, int], what: str) -> None:
    """Until both controllers hold every switch with the certificate of that serial. Polled
    twice a second: the API limits each caller's request rate, and a refused poll would
    pass for "not connected"."""
    want = {h: f"{s:x}" for h, s in serials.items()}
    seen: list[dict[str, dict[str, str | None]]] = [{}]

    def holds() -> bool:
        seen[0] = switch_serials(lab)
        return all(seen[0].get(n) == want for n in CONTROLLERS)

    try:
        wait_until(holds, 60, what, interval=0.5)
    except LabError as e:
        raise AssertionError(f"{e}: want {want}, the controllers hold {seen[0]}") from e


@pytest.fixture(scope="module")
def deployed() -> Iterator[Lab]:
    """The bare lab after site.yml, its VMs plugged (`lab attach`, `lab sync`)."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    with bare_lab("rc") as lab:
        site(lab)
        for step in ("attach", "sync"):
            cp = hypetunnel("lab", step, "--name", lab.name)
            assert cp.returncode == 0, cp.stdout + cp.stderr
        yield Lab.load(lab.name)


@pytest.fixture(scope="module")
def rotated(deployed: Lab, tmp_path_factory: pytest.TempPathFactory) -> Rotated:
    """rotate_certificates.yml with force under the ping, and what it left."""
    tmp, lab = tmp_path_factory.mktemp("ht-rotate-"), deployed
    certs = certificates(lab)
    before = {h: c.serial_number for h, c in certs.items()}
    wait_for_switches_with(lab, before, "both controllers to hold every switch over TLS")
    services_before = services(lab)
    pinger = start_ping(lab, PING_SRC, PING_DST, tmp / "ping.out")
    try:
        wait_until(lambda: len(answers((tmp / "ping.out").read_text())) >= 20, 30,
                   f"{PING_SRC} to answer pings", interval=0.2)
        started = time.time()
        output, recap = site(lab, *FORCE, playbook="rotate_certificates", timeout=300)
        ended = time.time()
        after_certs = certificates(lab)
        after = {h: c.serial_number for h, c in after_certs.items()}
        wait_for_switches_with(lab, after,
                               "both controllers to hold every switch with its new certificate")
        wait_until(lambda: max(answers((tmp / "ping.out").read_text()).values(), default=0)
                   > ended + 1, 30, "the ping to go on after the rotation", interval=0.2)
    finally:
        ping_out = stop_ping(pinger)
    return Rotated(lab, before, after,
                   {h: c.issuer.rfc4514_string() for h, c in certs.items()},
                   {h: c.issuer.rfc4514_string() for h, c in after_certs.items()},
                   services_before, services(lab), switch_serials(lab),
                   {n: served_serial(u) for n, u in zip(CONTROLLERS, api_urls(lab),
                                                        strict=True)},
                   recap, output, answers(ping_out), ping_out, started, ended, tmp)


def test_site_left_both_controllers_holding_every_switch_over_tls(deployed: Lab) -> None:
    serials = {h: c.serial_number for h, c in certificates(deployed).items()}
    wait_for_switches_with(deployed, serials, "both controllers to hold every switch over TLS")


def test_every_host_has_a_new_certificate_from_the_same_ca(rotated: Rotated) -> None:
    r = rotated
    assert all(r.recap[h]["changed"] > 0 for h in HOSTS), r.recap
    assert sorted(r.after) == sorted(HOSTS)
    assert all(r.after[h] != r.before[h] for h in HOSTS), (r.before, r.after)
    assert r.issuers_after == r.issuers_before


def test_the_ping_lost_nothing(rotated: Rotated) -> None:
    got = rotated.ping
    assert got, rotated.ping_out[-300:]
    assert min(got.values()) < rotated.started and max(got.values()) > rotated.ended, \
        f"the ping did not span the rotation: {rotated.ping_out[-600:]}"
    times = sorted(got.values())
    silence = max(b - a for a, b in itertools.pairwise(times))
    print(f"\n[rotate] {rotated.ended - rotated.started:.1f} s; ping {len(got)} answered of "
          f"{max(got)}, longest silence {silence * 1000:.0f} ms")
    assert lost(got) == [], rotated.ping_out[-600:]


def test_both_controllers_hold_every_switch_with_its_new_certificate(rotated: Rotated) -> None:
    want = {h: f"{s:x}" for h, s in rotated.after.items()}
    assert rotated.views == {n: want for n in CONTROLLERS}


def test_the_controllers_serve_their_new_certificate_without_a_restart(rotated: Rotated
                                                                       ) -> None:
    r = rotated
    assert r.served == {n: r.after[n] for n in CONTROLLERS}
    for node in CONTROLLERS:
        key = f"{node}/hypetunnel-controller"
        assert r.services_after[key] == r.services_before[key], key  # reloaded: same process


def test_the_etcd_members_were_restarted_and_ovs_was_not(rotated: Rotated) -> None:
    r = rotated
    etcd = [k for k in r.services_before if k.endswith("/hypetunnel-etcd")]
    assert len(etcd) == 3, r.services_before
    assert all(r.services_after[k] != r.services_before[k] for k in etcd), r.services_after
    ovs = [k for k in r.services_before if k.split("/")[1].startswith(("ovs", "ovsdb"))]
    assert len(ovs) == 2 * len(HOSTS), r.services_before
    assert all(r.services_after[k] == r.services_before[k] for k in ovs)


def test_check_mode_reports_a_forced_rotation_and_changes_nothing(rotated: Rotated) -> None:
    r = rotated
    _, recap = site(r.lab, *FORCE, "--check", playbook="rotate_certificates", timeout=300)
    assert all(recap[h]["changed"] > 0 for h in HOSTS), recap
    assert {h: c.serial_number for h, c in certificates(r.lab).items()} == r.after
    assert services(r.lab) == r.services_after


def test_a_second_run_without_force_changes_nothing(rotated: Rotated) -> None:
    out, recap = site(rotated.lab, playbook="rotate_certificates", timeout=300)
    assert all(recap[h]["changed"] == 0 for h in HOSTS), \
        "\n".join(line for line in out.splitlines() if line.startswith(("TASK", "changed")))
    assert {h: c.serial_number for h, c in certificates(rotated.lab).items()} == rotated.after
