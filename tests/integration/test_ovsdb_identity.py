"""The controller's OVSDB client trusts a hypervisor's ovsdb-server only when it presents that
hypervisor's certificate: a CA-signed certificate of another host is refused (python-ovs checks
the CA alone). A real ovsdb-server on a `pssl:` remote, the real IDL worker."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypetunnel.lab.controller import free_port
from hypetunnel.lab.ovs import SCHEMA
from hypetunnel.lab.proc import run, wait_until
from hypetunnel.pki import Identity, init_ca, issue
from hypetunnel.southbound.ovsdb.tls import use_identity
from hypetunnel.southbound.ovsdb.worker import IdlWorker

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def server_of_hv2() -> Iterator[str]:
    """An ovsdb-server (no vswitchd needed) serving pssl: with hv2's certificate; the
    process-wide client identity is the controller's, from the same CA."""
    d = Path(tempfile.mkdtemp(prefix=f"ht-ovsdb-id-{os.getpid()}-"))
    pidfile = d / "ovsdb-server.pid"
    try:
        init_ca(d / "pki")
        for name in ("hv1", "hv2", "ctl1"):
            issue(d / "pki", name, ips=["127.0.0.1"])
        hv2 = Identity.in_directory(d / "pki", "hv2")
        run(["ovsdb-tool", "create", str(d / "conf.db"), str(SCHEMA)])
        port = free_port()
        run(["ovsdb-server", str(d / "conf.db"), f"--remote=punix:{d}/db.sock",
             f"--remote=pssl:{port}:127.0.0.1", f"--private-key={hv2.key}",
             f"--certificate={hv2.cert}", f"--ca-cert={hv2.ca}", f"--pidfile={pidfile}",
             f"--unixctl={d}/ovsdb-server.ctl", f"--log-file={d}/ovsdb-server.log",
             "--detach", "--no-chdir"])
        run(["ovs-vsctl", f"--db=unix:{d}/db.sock", "--no-wait", "--timeout=20", "init",
             "--", "add-br", "br-int"])
        use_identity(Identity.in_directory(d / "pki", "ctl1"))
        yield f"ssl:127.0.0.1:{port}"
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
            wait_until(lambda: not pidfile.exists(), 10, "ovsdb-server to exit")
        shutil.rmtree(d, ignore_errors=True)


class Watch:
    def __init__(self, hypervisor: str, endpoint: str) -> None:
        self.synced = threading.Event()
        self.snapshots = 0
        self.worker = IdlWorker(hypervisor, endpoint, "br-int", self._snapshot, self._state,
                                lambda e: None)

    def _snapshot(self, _: object) -> None:
        self.snapshots += 1

    def _state(self, up: bool) -> None:
        if up:
            self.synced.set()


def test_the_hypervisor_s_own_certificate_is_trusted(server_of_hv2: str) -> None:
    w = Watch("hv2", server_of_hv2)
    w.worker.start()
    try:
        assert w.synced.wait(20), "never synchronised with hv2's own ovsdb-server"
        assert w.worker.identity_problem is None and w.snapshots >= 1
    finally:
        w.worker.stop()


def test_another_hypervisor_s_certificate_is_refused(server_of_hv2: str) -> None:
    """hv1 enlisted with hv2's address: TLS succeeds (same CA), the identity does not."""
    w = Watch("hv1", server_of_hv2)
    w.worker.start()
    try:
        wait_until(lambda: w.worker.identity_problem is not None, 20,
                   "the worker to check the server's certificate")
        assert "'hv2', not of 'hv1'" in str(w.worker.identity_problem)
        assert not w.synced.is_set() and w.snapshots == 0
    finally:
        w.worker.stop()
