"""The controller as a service: started by its systemd unit's ExecStart on a config file (TLS
on, SQLite), it serves /readyz over HTTPS and logs one JSON object per line on stdout."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypetunnel.lab.controller import free_port
from hypetunnel.lab.proc import wait_until
from hypetunnel.pki import init_ca, issue
from tests.integration.config_daemon import daemon, write_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def site() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix=f"ht-svc-config-{os.getpid()}-"))
    try:
        init_ca(root / "pki")
        issue(root / "pki", "ctl1", ips=["127.0.0.1"])
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_unit_starts_a_controller_from_its_config_file(site: Path) -> None:
    port = free_port()
    config = write_config(site / "etc" / "controller.yaml", state_dir=site / "state",
                          api=f"127.0.0.1:{port}", openflow=["pssl:127.0.0.1:0"],
                          tls_dir=site / "pki", tls_name="ctl1", node="ctl1",
                          log_level="info")
    with daemon(config, site / "state", port, site / "pki" / "ca.crt") as ctl:
        wait_until(lambda: ctl.get("/readyz").status_code == 200, 30, "the controller ready")
        assert ctl.get("/readyz").json() == {"ok": True}
        wait_until((site / "state" / "admin.token").exists, 10, "the bootstrap token")
        token = (site / "state" / "admin.token").read_text().strip()
        assert ctl.get("/controller", token).json()["role"] == "active"
    assert ctl.proc.returncode == 0, ctl.log.read_text()[-2000:]  # SIGTERM: a clean stop
    lines = [ln for ln in ctl.log.read_text().splitlines() if ln.strip()]
    docs = [json.loads(ln) for ln in lines]  # every line is one JSON object
    assert all({"ts", "level", "logger", "msg"} <= set(d) for d in docs)
    assert any(d["msg"].startswith(f"API on 127.0.0.1:{port}") for d in docs), lines
    assert any("bootstrap admin token written" in d["msg"] for d in docs), lines
    assert ctl.errors.read_text() == ""  # nothing outside the format, not even a warning
