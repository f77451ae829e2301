"""TLS with identity on real Open vSwitch (the lab runs TLS by default): who a switch is comes
from its certificate, plain and foreign clients get nothing, and a rotated certificate
reconnects without losing a packet or reprogramming a flow."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from hypetunnel.controller.switch import datapath_id_for
from hypetunnel.lab import pki as labpki
from hypetunnel.lab.datacenter import wait_converged
from hypetunnel.lab.hapair import OPENFLOW_PORT
from hypetunnel.lab.pki import SINGLE_CONTROLLER
from hypetunnel.lab.proc import wait_until
from hypetunnel.pki import authority, init_ca, issue
from tests.lab.conftest import LabFabric
from tests.lab.test_controller_restart import installed
from tests.lab.test_overlay_packets import cross_hv_pair

pytestmark = pytest.mark.lab

IMPOSTOR_BRIDGE = "br-tlsimp"

# Run inside a hypervisor's namespace: connect to the controller's OpenFlow port (plain, or
# TLS with the given files) and say what came back.
_PROBE = """
import socket, ssl, sys
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
hello = bytes([4, 0, 0, 8, 0, 0, 0, 1])
sock = socket.create_connection((host, port), timeout=10)
try:
    if mode == "plain":
        sock.sendall(hello)
        data = sock.recv(64)
        print("closed" if not data else "answered " + data.hex())
    else:
        ca, cert, key = sys.argv[4:7]
        ctx = ssl.create_default_context(cafile=ca)
        ctx.check_hostname = False
        ctx.load_cert_chain(cert, key)
        tls = ctx.wrap_socket(sock, server_hostname="controller")
        tls.sendall(hello)
        data = tls.recv(64)
        print("closed" if not data else "answered " + data.hex())
except (ssl.SSLError, ConnectionError) as e:
    print("refused", type(e).__name__)
"""


def controller_address(f: LabFabric) -> str:
    return f.lab.service(SINGLE_CONTROLLER).mgmt_ip


def controller_log(f: LabFabric) -> str:
    return (f.controller.directory / "controller.log").read_text(errors="replace")


def probe(f: LabFabric, where: str, *args: str) -> str:
    cp = f.lab.exec(where, [sys.executable, "-c", _PROBE, controller_address(f),
                            str(OPENFLOW_PORT), *args], timeout=30)
    return cp.stdout.strip()


@pytest.fixture(scope="module")
def foreign_pki() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ht-foreign-") as d:
        init_ca(Path(d), common_name="Not the lab's CA")
        issue(Path(d), "hv1")
        yield Path(d)


def test_the_lab_runs_tls_everywhere(fabric: LabFabric) -> None:
    assert fabric.lab.tls_dir is not None
    for hv in fabric.lab.hypervisors.values():
        targets = hv.ovs.vsctl("get-controller", "br-int").split()
        assert targets and all(t.startswith("ssl:") for t in targets), (hv.name, targets)
        assert hv.ovs.vsctl("get", "SSL", ".", "certificate").strip('"').endswith(
            f"{hv.name}.crt")
    switches = fabric.api.status()["switches"]
    assert {s["ovsdb"].split(":")[0] for s in switches} == {"ssl"}


def test_a_switch_with_hv2s_certificate_claiming_hv1s_datapath_id_gets_no_flow(
        fabric: LabFabric) -> None:
    hv2 = fabric.lab.hypervisor("hv2")
    dpid = datapath_id_for("hv1")
    before = installed(fabric)
    claim = f"claims datapath id {dpid:016x} of hypervisor hv1: dropped"
    seen = controller_log(fabric).count(claim)
    # A second bridge of hv2's own Open vSwitch: it presents hv2's certificate (the SSL table
    # is per instance) and reports hv1's datapath id.
    hv2.ovs.vsctl("--may-exist", "add-br", IMPOSTOR_BRIDGE, "--", "set", "Bridge",
                  IMPOSTOR_BRIDGE, "datapath_type=netdev", "fail_mode=secure",
                  "protocols=OpenFlow13", f"other-config:datapath-id={dpid:016x}",
                  "other_config:disable-in-band=true")
    try:
        hv2.ovs.vsctl("set-controller", IMPOSTOR_BRIDGE,
                      f"ssl:{controller_address(fabric)}:{OPENFLOW_PORT}")
        wait_until(lambda: controller_log(fabric).count(claim) > seen, 30,
                   "the controller to drop the impostor")
        dump = hv2.ovs.ofctl("dump-flows", bridge_mgmt=IMPOSTOR_BRIDGE)
        assert "cookie=" not in dump, dump
        # hv1 kept its own connection and every flow, untouched.
        assert wait_converged(fabric.api, 10)["converged"]
        after = installed(fabric)
        assert set(after["hv1"]) == set(before["hv1"])
        assert all(after["hv1"][c] >= before["hv1"][c] for c in before["hv1"])
    finally:
        hv2.ovs.vsctl("--if-exists", "del-br", IMPOSTOR_BRIDGE)
    dump = hv2.ovs.ofctl("dump-flows", bridge_mgmt="br-int")
    assert "cookie=" in dump  # hv2's own bridge was never in question


def test_a_plain_tcp_connection_to_the_openflow_port_gets_nothing(fabric: LabFabric) -> None:
    # Closed (or reset) without a byte: neither an OpenFlow HELLO nor anything else.
    out = probe(fabric, "hv2", "plain")
    assert out == "closed" or out.startswith("refused"), out


def test_a_certificate_from_another_ca_is_refused(fabric: LabFabric,
                                                  foreign_pki: Path) -> None:
    own = fabric.lab.tls_dir
    assert own is not None
    out = probe(fabric, "hv2", "tls", str(foreign_pki / "ca.crt"),
                str(foreign_pki / "hv1.crt"), str(foreign_pki / "hv1.key"))
    assert out.startswith("refused"), out
    # Even trusting the lab's CA itself, a client certificate the lab did not sign is refused.
    out = probe(fabric, "hv2", "tls", str(own / "ca.crt"), str(foreign_pki / "hv1.crt"),
                str(foreign_pki / "hv1.key"))
    assert out.startswith(("refused", "closed")), out


def test_ovsdb_answers_tls_with_the_labs_certificates_only(fabric: LabFabric,
                                                            foreign_pki: Path) -> None:
    hv1, own = fabric.lab.hypervisor("hv1"), fabric.lab.tls_dir
    assert own is not None and hv1.mgmt_ip
    plain = fabric.lab.exec("hv2", ["ovs-vsctl", f"--db=tcp:{hv1.mgmt_ip}:6640",
                                    "--timeout=5", "list-br"], check=False)
    assert plain.returncode != 0, plain.stdout
    foreign = fabric.lab.exec("hv2", [
        "ovs-vsctl", f"--db=ssl:{hv1.mgmt_ip}:6640", "--timeout=5",
        "-p", str(foreign_pki / "hv1.key"), "-c", str(foreign_pki / "hv1.crt"),
        "-C", str(foreign_pki / "ca.crt"), "list-br"], check=False)
    assert foreign.returncode != 0, foreign.stdout
    ctl = labpki.ensure_identity(own, SINGLE_CONTROLLER)
    good = fabric.lab.exec("hv2", [
        "ovs-vsctl", f"--db=ssl:{hv1.mgmt_ip}:6640", "--timeout=5", "-p", str(ctl.key),
        "-c", str(ctl.cert), "-C", str(ctl.ca), "list-br"])
    assert "br-int" in good.stdout.split()


def _serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def test_a_rotated_certificate_reconnects_and_loses_no_packet(
        fabric: LabFabric, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = cross_hv_pair(fabric, "acme")
    own = fabric.lab.tls_dir
    assert own is not None
    hv = fabric.lab.hypervisor(b.hypervisor)
    real_write = authority._write_private

    def write_then_let_ovs_look(path: Path, data: bytes, mode: int) -> None:
        # ovs-vswitchd looks at its key and certificate on every trip through its main loop,
        # which serves appctl: so it looks between the two files' writes, every time (a
        # key-first rotation then left the old certificate in use, as once in CI by chance).
        real_write(path, data, mode)
        hv.ovs.appctl("version")

    monkeypatch.setattr(authority, "_write_private", write_then_let_ovs_look)
    old = _serial(own / f"{hv.name}.crt")
    before = installed(fabric)
    pinger = fabric.lab.spawn(a.vm_id, ["ping", "-i", "0.01", "-c", "400", "-W", "1", b.ip],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ident = labpki.rotate(own, hv.name, [hv.mgmt_ip])
        new = _serial(ident.cert)
        assert new != old
        labpki.configure_ovs(hv, own)  # set-ssl again: OVS reads the new files
        hv.ovs.appctl("bridge/reconnect", "br-int")  # its next connection shows the new one
        wait_until(lambda: f"CN={hv.name} serial {new:x})" in controller_log(fabric), 30,
                   f"{hv.name} to reconnect with its new certificate")
        out, _ = pinger.communicate(timeout=60)
    finally:
        if pinger.poll() is None:
            pinger.kill()
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    assert int(m.group(1)) == 400 and int(m.group(2)) == 400, out[-300:]
    wait_converged(fabric.api, 30)
    after = installed(fabric)
    # fail_mode secure kept the flows through the reconnection, and the controller found them
    # right: nothing was flushed or added again (every flow is older than before).
    for name in before:
        assert set(after[name]) == set(before[name]), name
        assert all(after[name][c] >= before[name][c] for c in before[name]), name

