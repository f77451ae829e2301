"""`hypetunnel backup` / `restore` on SQLite stores: the round trip (documents, revision,
schema, PKI files and token with their modes), the manifest, and every refusal leaving the
target exactly as it was."""

from __future__ import annotations

import gzip
import io
import json
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from hypetunnel import __version__
from hypetunnel.backup import FORMAT_VERSION, MANIFEST
from hypetunnel.cli.main import app
from hypetunnel.pki import init_ca, issue
from hypetunnel.store import schema
from hypetunnel.store.sqlite import SqliteStore

DOCS = {"fabric": {"vni_range": [1000, 2000]}, "tenant/acme": {"name": "acme"},
        "token/admin": {"name": "admin", "role": "admin", "sha256": "ab" * 32},
        "binding/acme/web1": {"hypervisor": "hv1"}}


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def make_site(root: Path, docs: dict[str, dict[str, Any]] | None = None) -> Path:
    """A controller's state (store with two commits, admin.token) and PKI; its config file."""
    state, pki = root / "state", root / "pki"
    store = SqliteStore(state / "store.db")
    store.commit({"tenant/old": {"name": "old"}}, [])
    store.commit(docs if docs is not None else DOCS, ["tenant/old"])
    store.close()
    (state / "admin.token").write_text("ht.admin.s3cret\n")
    (state / "admin.token").chmod(0o600)
    init_ca(pki)
    issue(pki, "ctl1")
    config = root / "controller.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(state), "tls_dir": str(pki),
                                      "node": "ctl1"}))
    return config


def fresh_config(root: Path) -> Path:
    config = root / "controller.yaml"
    root.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump({"state_dir": str(root / "state"),
                                      "tls_dir": str(root / "pki"), "node": "ctl1"}))
    return config


def snapshot(root: Path) -> dict[str, Any]:
    """Everything a restore may touch under root: the store's content and every file."""
    seen: dict[str, Any] = {}
    db = root / "state" / "store.db"
    if db.exists():
        s = SqliteStore(db)
        snap = s.load()
        seen["store"] = (snap.revision, snap.items, s.schema_version())
        s.close()
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith("store.db"):
            seen[str(p)] = (p.read_bytes(), mode(p))
    return seen


def test_backup_then_restore_into_a_fresh_site_is_the_same_state(tmp_path: Path) -> None:
    src = make_site(tmp_path / "a")
    out = tmp_path / "backup.tar.gz"
    r = invoke("backup", str(out), "--config", str(src))
    assert r.exit_code == 0, r.output
    assert "sqlite store" in r.output and "at revision 2 (4 documents), 4 PKI files" in r.output
    assert mode(out) == 0o600

    dst = fresh_config(tmp_path / "b")
    r = invoke("restore", str(out), "--config", str(dst))
    assert r.exit_code == 0, r.output
    restored = SqliteStore(tmp_path / "b" / "state" / "store.db")
    snap = restored.load()
    assert (snap.revision, snap.items) == (2, DOCS)
    assert restored.schema_version() == schema.SCHEMA_VERSION
    restored.close()
    token = tmp_path / "b" / "state" / "admin.token"
    assert token.read_text() == "ht.admin.s3cret\n" and mode(token) == 0o600
    for name in ("ca.crt", "ca.key", "ctl1.crt", "ctl1.key"):
        a, b = tmp_path / "a" / "pki" / name, tmp_path / "b" / "pki" / name
        assert b.read_bytes() == a.read_bytes() and mode(b) == mode(a), name
    assert mode(tmp_path / "b" / "pki" / "ctl1.key") == 0o600


def test_the_manifest_says_what_is_inside(tmp_path: Path) -> None:
    src = make_site(tmp_path / "a")
    out = tmp_path / "backup.tar.gz"
    assert invoke("backup", str(out), "--config", str(src)).exit_code == 0
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile(MANIFEST))  # type: ignore[arg-type]
    assert names[0] == MANIFEST
    assert manifest["format"] == "hypetunnel-backup"
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["hypetunnel_version"] == __version__
    assert manifest["store"] == {"kind": "sqlite", "source": str(tmp_path / "a/state/store.db"),
                                 "revision": 2, "schema_version": schema.SCHEMA_VERSION,
                                 "documents": 4}
    members = {m["name"]: m for m in manifest["members"]}
    assert set(members) == set(names) - {MANIFEST}
    assert set(members) == {"store.json", "admin.token", "pki/ca.crt", "pki/ca.key",
                            "pki/ctl1.crt", "pki/ctl1.key"}
    assert members["pki/ctl1.key"]["mode"] == 0o600 and members["pki/ca.crt"]["mode"] == 0o644


def test_flags_name_the_store_like_controller_run(tmp_path: Path) -> None:
    make_site(tmp_path / "a")
    out = tmp_path / "backup.tar.gz"
    r = invoke("backup", str(out), "--state-dir", str(tmp_path / "a" / "state"))
    assert r.exit_code == 0, r.output
    assert "0 PKI files, the admin token" in r.output  # no tls_dir: no PKI
    r = invoke("restore", str(out), "--state-dir", str(tmp_path / "b" / "state"))
    assert r.exit_code == 0, r.output
    s = SqliteStore(tmp_path / "b" / "state" / "store.db")
    assert s.load().items == DOCS
    s.close()


def test_a_non_empty_target_is_refused_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "backup.tar.gz"
    assert invoke("backup", str(out), "--config", str(make_site(tmp_path / "a"))).exit_code == 0
    # The target has a store of its own (revision 2, other documents) and its own PKI.
    dst = make_site(tmp_path / "b", docs={"tenant/other": {"name": "other"}})
    before = snapshot(tmp_path / "b")
    r = invoke("restore", str(out), "--config", str(dst))
    assert r.exit_code == 1
    # Its PKI differs (the token is the same): named first, before the store is even opened.
    assert f"{tmp_path / 'b' / 'pki' / 'ca.crt'} exists and differs" in r.output
    assert snapshot(tmp_path / "b") == before
    # Same files, other store: the store is named, with why.
    (tmp_path / "b" / "state" / "admin.token").unlink()
    for f in (tmp_path / "b" / "pki").iterdir():
        f.unlink()
    before = snapshot(tmp_path / "b")
    r = invoke("restore", str(out), "--config", str(dst))
    assert r.exit_code == 1
    assert "is not empty (revision 2, 1 documents): a restore replaces everything" in r.output
    assert "--force" in r.output
    assert snapshot(tmp_path / "b") == before
    r = invoke("restore", str(out), "--config", str(dst), "--force")
    assert r.exit_code == 0, r.output
    s = SqliteStore(tmp_path / "b" / "state" / "store.db")
    snap = s.load()
    s.close()
    # The documents are exactly the backup's; the revision moves on, never back.
    assert snap.items == DOCS and snap.revision == 3


def rewrite(src: Path, dst: Path, change: Any) -> None:
    """dst := src's tar with change(name, data) -> data | None (None: drop the member)."""
    with tarfile.open(src) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members:
            new = change(name, data)
            if new is not None:
                info = tarfile.TarInfo(name)
                info.size = len(new)
                tar.addfile(info, io.BytesIO(new))
    dst.write_bytes(buf.getvalue())


def _tamper_store(name: str, data: bytes) -> bytes:
    if name != "store.json":
        return data
    doc = json.loads(data)
    doc["items"]["token/evil"] = {"name": "evil", "role": "admin"}
    return json.dumps(doc).encode()


def _truncate_gzip(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("how", "says"), [
    ("tampered store", "member 'store.json' does not match its sha256 in the manifest"),
    ("tampered key", "member 'pki/ctl1.key' does not match its sha256"),
    ("dropped member", "member 'admin.token' of the manifest is missing"),
    ("added member", "member 'pki/extra.crt' is not in the manifest"),
    ("no manifest", "no manifest.json: not a hypetunnel backup"),
    ("future format", "format version 99 (this hypetunnel"),
    ("truncated", "not a readable tar.gz"),
    # Found by gzip's CRC or by a member's sha256, depending on where the byte is.
    ("flipped byte", ("not a readable tar.gz", "does not match its sha256")),
    ("not a tar", "not a readable tar.gz"),
])
def test_a_damaged_or_tampered_backup_is_refused_and_nothing_changes(
        tmp_path: Path, how: str, says: str | tuple[str, ...]) -> None:
    good = tmp_path / "good.tar.gz"
    assert invoke("backup", str(good), "--config", str(make_site(tmp_path / "a"))).exit_code == 0
    bad = tmp_path / "bad.tar.gz"
    if how == "tampered store":
        rewrite(good, bad, _tamper_store)
    elif how == "tampered key":
        rewrite(good, bad, lambda n, d: d + b"x" if n == "pki/ctl1.key" else d)
    elif how == "dropped member":
        rewrite(good, bad, lambda n, d: None if n == "admin.token" else d)
    elif how == "added member":
        rewrite(good, bad, lambda n, d: d)
        with tarfile.open(good) as tar:
            members = [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, data in [*members, ("pki/extra.crt", b"x")]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        bad.write_bytes(buf.getvalue())
    elif how == "no manifest":
        rewrite(good, bad, lambda n, d: None if n == MANIFEST else d)
    elif how == "future format":
        rewrite(good, bad, lambda n, d: json.dumps({**json.loads(d), "format_version": 99})
                .encode() if n == MANIFEST else d)
    elif how == "truncated":
        bad.write_bytes(good.read_bytes())
        _truncate_gzip(bad)
    elif how == "flipped byte":
        bad.write_bytes(good.read_bytes())
        _flip_a_byte(bad)
    else:
        bad.write_bytes(gzip.compress(b"just text"))
    # The target: a site with state of its own that must survive the refusal untouched.
    dst = make_site(tmp_path / "b", docs={"tenant/other": {"name": "other"}})
    before = snapshot(tmp_path / "b")
    r = invoke("restore", str(bad), "--config", str(dst), "--force")
    assert r.exit_code == 1, r.output
    assert f"error: {bad}: " in r.output, r.output
    assert any(s in r.output for s in ((says,) if isinstance(says, str) else says)), r.output
    assert "nothing was restored" in r.output
    assert snapshot(tmp_path / "b") == before


def test_a_backup_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    src = make_site(tmp_path / "a")
    s = SqliteStore(tmp_path / "a" / "state" / "store.db")
    assert s.stamp_schema(schema.SCHEMA_VERSION + 1, None)
    s.close()
    out = tmp_path / "backup.tar.gz"
    assert invoke("backup", str(out), "--config", str(src)).exit_code == 0
    r = invoke("restore", str(out), "--config", str(fresh_config(tmp_path / "b")))
    assert r.exit_code == 1 and "was made by a newer hypetunnel" in r.output, r.output
    assert not (tmp_path / "b" / "state").exists()


def test_backing_up_a_missing_store_says_so_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "backup.tar.gz"
    r = invoke("backup", str(out), "--state-dir", str(tmp_path / "nothing"))
    assert r.exit_code == 1
    assert f"there is no store at {tmp_path / 'nothing' / 'store.db'}" in r.output
    assert not out.exists() and not (tmp_path / "nothing").exists()


def test_a_bad_config_key_is_named(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("state_dri: /x\n")
    r = invoke("backup", str(tmp_path / "b.tgz"), "--config", str(config))
    assert r.exit_code == 2
    assert f"error: {config}: key 'state_dri': unknown key (did you mean 'state_dir'?)" in r.output
