"""The lab's EtcdCluster.recreate: the same members on the same addresses, with no data."""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from hypetunnel.lab.etcd import EtcdCluster

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed"),
              pytest.mark.timeout(120)]


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_recreate_starts_an_empty_cluster_and_keeps_the_logs() -> None:
    directory = Path(tempfile.mkdtemp(prefix="ht-restore-etcd-"))
    cluster = EtcdCluster.local(directory, size=1, name_prefix=f"rs{os.getpid() % 10000}x")
    member = cluster.members[0]
    try:
        with cluster.running():
            member._request("/v3/kv/put", {"key": _b64("k"), "value": _b64("v")})
            assert member._request("/v3/kv/range", {"key": _b64("k")}).get("count") == "1"
            endpoints = cluster.endpoints
            cluster.recreate()
            assert cluster.endpoints == endpoints and member.healthy()
            assert "count" not in member._request("/v3/kv/range", {"key": _b64("k")})
            assert member.log_file.stat().st_size > 0
    finally:
        cluster.destroy()
        shutil.rmtree(directory, ignore_errors=True)
