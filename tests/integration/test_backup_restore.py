"""Backup a running controller's store, PKI and token; destroy all of it; restore onto a new
site (new directories; for etcd a new cluster): a controller started there serves the same
intent and takes the old tokens, and a tampered backup is refused leaving it unchanged.

SQLite, and etcd with TLS (client certificates on every member); the controllers run from
config files through their systemd unit's command line, TLS on.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hypetunnel.cli.main import app
from hypetunnel.client import ApiClient, ApiError
from hypetunnel.lab.controller import free_port
from hypetunnel.lab.etcd import EtcdCluster
from hypetunnel.lab.proc import wait_until
from hypetunnel.pki import Identity, client_context, init_ca, issue
from hypetunnel.store import schema
from hypetunnel.store.etcd import EtcdStore
from hypetunnel.store.sqlite import SqliteStore
from tests.integration.config_daemon import Running, daemon, write_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture
def root() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=f"ht-svc-backup-{os.getpid()}-"))
    try:
        init_ca(d / "ca")
        issue(d / "ca", "ctl1", ips=["127.0.0.1"])
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def cli(*args: str) -> Any:
    r = CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})
    return r


def api(ctl: Running, token: str) -> ApiClient:
    return ApiClient(ctl.url.removesuffix("/api/v1"), ca=ctl.ca, token=token)


class Site:
    """One controller's host: its config, state dir and PKI dir (and etcd cluster)."""

    def __init__(self, root: Path, name: str, pki: Path, etcd: EtcdCluster | None) -> None:
        self.root, self.pki, self.etcd = root / name, pki, etcd
        self.state = self.root / "state"
        self.port = free_port()
        keys: dict[str, Any] = dict(
            state_dir=self.state, api=f"127.0.0.1:{self.port}",
            openflow=["pssl:127.0.0.1:0"], tls_dir=pki, tls_name="ctl1", node="ctl1")
        if etcd is not None:
            keys.update(etcd=etcd.endpoints, peer=f"127.0.0.1:{free_port()}",
                        peer_name=["ctl1", "ctl2"])
        self.config = write_config(self.root / "controller.yaml", **keys)

    def run(self) -> Any:
        return daemon(self.config, self.state, self.port, self.pki / "ca.crt")

    def store(self) -> SqliteStore | EtcdStore:
        if self.etcd is None:
            return SqliteStore(self.state / "store.db")
        tls = client_context(Identity.in_directory(self.pki, "ctl1"), check_hostname=True)
        return EtcdStore(self.etcd.endpoints, tls=tls)

    def content(self) -> tuple[int, dict[str, Any], int | None]:
        s = self.store()
        try:
            snap = s.load()
            return snap.revision, snap.items, s.schema_version()
        finally:
            s.close()


def cluster(root: Path, name: str) -> EtcdCluster:
    # One member is enough for a store; TLS with the site's CA like production.
    return EtcdCluster.local(root / name, size=1, name_prefix=f"svcb{os.getpid()}{name}",
                             pki=root / "ca")


def tampered(src: Path, dst: Path) -> None:
    """dst := src with one more admin token in its store document (manifest untouched)."""
    with tarfile.open(src) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members:
            if name == "store.json":
                doc = json.loads(data)
                doc["items"]["token/evil"] = {"name": "evil", "role": "admin"}
                data = json.dumps(doc).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    dst.write_bytes(buf.getvalue())


@pytest.mark.parametrize("kind", ["sqlite", "etcd"])
def test_backup_destroy_restore_serves_the_same_intent_with_the_old_tokens(
        root: Path, kind: str) -> None:
    old_etcd = cluster(root, "etcd-a") if kind == "etcd" else None
    new_etcd: EtcdCluster | None = None
    try:
        if old_etcd is not None:
            old_etcd.start()
        old = Site(root, "a", root / "ca", old_etcd)
        with old.run() as ctl:
            wait_until((old.state / "admin.token").exists, 30, "the bootstrap token")
            admin = (old.state / "admin.token").read_text().strip()
            # Used the moment the file appears: its record is committed by then.
            with api(ctl, admin) as a:
                a.create_tenant({"name": "acme"})
                a.create_network("acme", {"name": "front", "cidr": "10.1.0.0/24"})
                operator = a.create_token("ops", "operator")["token"]
                intent = a.get_intent()
                tokens = sorted(t["name"] for t in a.list_tokens())
            backup = root / "site.tar.gz"
            r = cli("backup", str(backup), "--config", str(old.config))  # while it runs
            assert r.exit_code == 0, r.output
        revision, items, _ = old.content()
        assert "token/ops" in items and "tenant/acme" in items

        # Both controllers and their store are gone: the state, the PKI, the etcd cluster.
        shutil.rmtree(old.root)
        if old_etcd is not None:
            old_etcd.destroy()
            old_etcd = None
            new_etcd = cluster(root, "etcd-b")
            new_etcd.start()
        pki = root / "b" / "pki"  # a new host: the PKI comes from the backup
        new = Site(root, "b", pki, new_etcd)
        r = cli("restore", str(backup), "--config", str(new.config))
        assert r.exit_code == 0, r.output
        assert new.content() == (revision, items, schema.SCHEMA_VERSION)
        assert (pki / "ctl1.key").stat().st_mode & 0o777 == 0o600

        # A tampered copy is refused, naming why, and the restored store is left as it is.
        bad = root / "tampered.tar.gz"
        tampered(backup, bad)
        r = cli("restore", str(bad), "--config", str(new.config), "--force")
        assert r.exit_code == 1
        assert "member 'store.json' does not match its sha256 in the manifest" in r.output
        assert new.content() == (revision, items, schema.SCHEMA_VERSION)
        # So is a second restore onto the now non-empty store, without --force.
        r = cli("restore", str(backup), "--config", str(new.config))
        assert r.exit_code == 1 and "is not empty" in r.output, r.output

        with new.run() as ctl:
            with api(ctl, admin) as a:  # the old bootstrap token
                assert a.get_intent() == intent
                assert sorted(t["name"] for t in a.list_tokens()) == tokens
            with api(ctl, operator) as o:  # and a token made through the API
                assert o.get_intent() == intent
            with api(ctl, "ht.admin.not-a-token") as x, pytest.raises(ApiError) as e:
                x.get_intent()
            assert e.value.status == 401
        # No second bootstrap token was made: the restored one is still the admin's.
        assert (new.state / "admin.token").read_text().strip() == admin
    except BaseException:
        for log in sorted(root.rglob("*.log")) + sorted(root.rglob("*.err")):
            print(f"--- {log}\n{log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        for c in (old_etcd, new_etcd):
            if c is not None:
                c.destroy()
