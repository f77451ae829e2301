"""The audit trail of a real controller daemon (SQLite) survives a restart, even a kill -9
right after the write was acknowledged: a change's row is committed with the change itself.

No Open vSwitch is needed (the controller runs with no hypervisor), but like every daemon test
it runs with the integration tier.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from hypetunnel.lab.controller import free_port
from hypetunnel.lab.proc import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
SRC = Path(__file__).resolve().parents[2] / "src"
TENANT = f"aud{os.getpid()}"


def headers(state: Path) -> dict[str, str]:
    """The bootstrap admin token once the auth layer writes one; none before."""
    token = state / "admin.token"
    return {"Authorization": f"Bearer {token.read_text().strip()}"} if token.exists() else {}


@contextmanager
def controller(state: Path, log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    sock_dir = Path(tempfile.mkdtemp(prefix=f"hta-{os.getpid()}-"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hypetunnel", "controller", "run", "--state-dir", str(state),
             "--api", f"127.0.0.1:{port}", "--openflow", f"unix:{sock_dir / 'of.sock'}",
             "--node", "audit-ctl"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)
    url = f"http://127.0.0.1:{port}/api/v1"
    try:
        def healthy() -> bool:
            assert proc.poll() is None, f"controller exited: {log.read_text()[-2000:]}"
            try:
                return httpx.get(f"{url}/healthz", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 30, "the controller API", interval=0.05)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        shutil.rmtree(sock_dir, ignore_errors=True)


def audit(url: str, state: Path) -> list[dict[str, Any]]:
    """This test's rows: about its tenant (the first write also stores the fabric document,
    so that row is provider-wide rather than the tenant's)."""
    r = httpx.get(f"{url}/audit", headers=headers(state), timeout=5)
    assert r.status_code == 200, r.text
    return [row for row in r.json() if f"tenant/{TENANT}" in json.dumps(row.get("keys"))]


def test_the_audit_trail_survives_kill_9_and_a_restart(tmp_path: Path) -> None:
    state, log = tmp_path / "state", tmp_path / "controller.log"
    with controller(state, log) as (url, proc):
        r = httpx.post(f"{url}/tenants", json={"name": TENANT}, headers=headers(state),
                       timeout=10)
        assert r.status_code == 200, r.text
        revision = r.json()["revision"]
        proc.send_signal(signal.SIGKILL)  # at once: the answer's status may never be written
        proc.wait(timeout=10)
    with controller(state, log) as (url, proc):
        [created] = audit(url, state)
        assert (created["kind"], created["method"], created["route"]) == (
            "change", "POST", "/api/v1/tenants")
        assert created["revision"] == revision and created["node"] == "audit-ctl"
        assert f"tenant/{TENANT}" in created["keys"]["put"]
        r = httpx.delete(f"{url}/tenants/{TENANT}", headers=headers(state), timeout=10)
        assert r.status_code == 200, r.text
        proc.send_signal(signal.SIGTERM)  # graceful: queued answers are flushed first
        assert proc.wait(timeout=15) == 0, log.read_text()[-2000:]
    with controller(state, log) as (url, _):
        deleted, created = audit(url, state)
        assert deleted["route"] == "/api/v1/tenants/{tenant}" and deleted["status"] == 200
        assert deleted["plan"]["removed"] == [f"tenant {TENANT}"]
        assert created["revision"] == revision
    assert "Traceback" not in log.read_text()
