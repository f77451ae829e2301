"""Backup and restore of a controller pair's state: its store, its PKI directory, its token.

A backup is a tar.gz (mode 0600: it holds private keys and the admin token) of

    manifest.json   what is inside (see Manifest), written first
    store.json      {"revision", "schema", "items": {key: document}}: every document of the
                    store (intent, token hashes, bindings, ...) at one revision
    admin.token     <state_dir>/admin.token, the bootstrap admin token, if there is one
    pki/<path>      every regular file of tls_dir, if one is configured

The manifest lists every other member with its sha256, size and file mode; `read` refuses a
backup whose members do not match it exactly (corrupted, tampered with, truncated). It is a
check against damage, not a signature: whoever can rewrite the file can rewrite the manifest.

The audit log is history, not state: it is not in a backup and a restore leaves it alone.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hypetunnel import __version__
from hypetunnel.client.config import TOKEN_FILE
from hypetunnel.daemon_config import ControllerSettings
from hypetunnel.errors import HypeTunnelError
from hypetunnel.pki import TlsConfig
from hypetunnel.store import opening, schema
from hypetunnel.store.base import RestorableStore, Store

FORMAT: Literal["hypetunnel-backup"] = "hypetunnel-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STORE_MEMBER = "store.json"
PKI_PREFIX = "pki/"
MAX_MEMBER_BYTES = 256 * 1024 * 1024  # far above any real store; a bound on a hostile file


class BackupInvalid(HypeTunnelError):
    """The backup file is unreadable, damaged, or of a format this version cannot restore."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}; nothing was restored")


class RestoreRefused(HypeTunnelError):
    """The target is not one a restore may write (not empty, files that differ, ...)."""


class Member(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    mode: int = Field(ge=0, le=0o7777)  # the file's mode to restore


class StoreInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: Literal["sqlite", "etcd"]
    source: str  # the file or the etcd endpoints it was read from
    revision: int = Field(ge=0)
    schema_version: int = Field(ge=0)
    documents: int = Field(ge=0)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    format: Literal["hypetunnel-backup"]
    format_version: int
    hypetunnel_version: str
    created: str  # ISO 8601, UTC
    store: StoreInfo
    members: list[Member]


@dataclass
class Backup:
    manifest: Manifest
    revision: int
    schema_version: int
    items: dict[str, dict[str, Any]]
    token: bytes | None = None
    pki: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # relative path -> data, mode


def _tls(settings: ControllerSettings) -> TlsConfig | None:
    return (TlsConfig(settings.tls_dir, settings.tls_identity_name())
            if settings.tls_dir is not None else None)


def _open(settings: ControllerSettings, create: bool) -> Store:
    try:
        return opening.open_store(settings.state_dir, settings.etcd, _tls(settings),
                                  create=create)
    except ValueError as e:
        raise RestoreRefused(f"etcd: {e}") from e


def _pki_files(tls_dir: Path) -> dict[str, tuple[bytes, int]]:
    if not tls_dir.is_dir():
        raise HypeTunnelError(f"tls_dir {tls_dir} is not a directory")
    found = {}
    for path in sorted(tls_dir.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found[path.relative_to(tls_dir).as_posix()] = (
                path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return found


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def create(path: Path, settings: ControllerSettings) -> Manifest:
    """Write the backup of the store, PKI directory and token these settings name to `path`
    (replaced atomically; 0600). The store is read as one consistent snapshot."""
    kind, source = opening.describe(settings.state_dir, settings.etcd)
    store = _open(settings, create=False)
    try:
        snapshot = store.load()
        version = store.schema_version() if isinstance(store, schema.VersionedStore) else None
    finally:
        store.close()
    version = version or schema.SCHEMA_VERSION  # unversioned (0.1.0): the same layout as 1
    members: dict[str, tuple[bytes, int]] = {STORE_MEMBER: (json.dumps(
        {"revision": snapshot.revision, "schema": version, "items": snapshot.items},
        sort_keys=True).encode(), 0o600)}
    token = settings.state_dir / TOKEN_FILE
    if token.is_file():
        members[TOKEN_FILE] = (token.read_bytes(), 0o600)
    if settings.tls_dir is not None:
        for rel, (data, mode) in _pki_files(settings.tls_dir).items():
            members[PKI_PREFIX + rel] = (data, mode)
    manifest = Manifest(
        format=FORMAT, format_version=FORMAT_VERSION, hypetunnel_version=__version__,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        store=StoreInfo(kind=kind, source=source, revision=snapshot.revision,
                        schema_version=version, documents=len(snapshot.items)),
        members=[Member(name=name, sha256=_digest(data), size=len(data), mode=mode)
                 for name, (data, mode) in members.items()])
    _write_tar(path, {MANIFEST: manifest.model_dump_json(indent=2).encode(),
                      **{name: data for name, (data, _) in members.items()}})
    return manifest


def _write_tar(path: Path, members: dict[str, bytes]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            with tarfile.open(fileobj=out, mode="w:gz") as tar:
                now = time.time()
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode = len(data), now, 0o600
                    tar.addfile(info, io.BytesIO(data))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _safe_name(name: str) -> bool:
    p = PurePosixPath(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts and "\\" not in name


def read(path: Path) -> Backup:
    """The backup in `path`, verified against its manifest; BackupInvalid says what is wrong."""
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            data: dict[str, bytes] = {}
            for info in tar:
                if not info.isreg():
                    raise BackupInvalid(path, f"member {info.name!r} is not a regular file")
                if info.name in data:
                    raise BackupInvalid(path, f"member {info.name!r} appears twice")
                if info.size > MAX_MEMBER_BYTES:
                    raise BackupInvalid(path, f"member {info.name!r} is too large")
                f = tar.extractfile(info)
                assert f is not None  # a regular file has contents
                data[info.name] = f.read()
            # To the end of the gzip stream, which checks its CRC and length: damage after
            # the last member is found too.
            while tar.fileobj is not None and tar.fileobj.read(1 << 20):
                pass
    except FileNotFoundError as e:
        raise BackupInvalid(path, "no such file") from e
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise BackupInvalid(path, f"not a readable tar.gz ({e})") from e
    if MANIFEST not in data:
        raise BackupInvalid(path, f"no {MANIFEST}: not a hypetunnel backup")
    try:
        manifest = Manifest.model_validate_json(data.pop(MANIFEST))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BackupInvalid(path, f"{MANIFEST}: {where}: {first['msg']}") from e
    if manifest.format_version != FORMAT_VERSION:
        raise BackupInvalid(path, f"format version {manifest.format_version} (this hypetunnel "
                                  f"{__version__} reads {FORMAT_VERSION})")
    listed = {m.name: m for m in manifest.members}
    extra = sorted(set(data) - set(listed))
    if extra:
        raise BackupInvalid(path, f"member {extra[0]!r} is not in the manifest")
    for name, m in listed.items():
        if name not in data:
            raise BackupInvalid(path, f"member {name!r} of the manifest is missing")
        if not _safe_name(name):
            raise BackupInvalid(path, f"member name {name!r} is not a safe relative path")
        if len(data[name]) != m.size or _digest(data[name]) != m.sha256:
            raise BackupInvalid(path, f"member {name!r} does not match its sha256 in the "
                                      "manifest (the file is damaged or was changed)")
    if STORE_MEMBER not in data:
        raise BackupInvalid(path, f"no {STORE_MEMBER}")
    try:
        doc = json.loads(data[STORE_MEMBER])
        revision, version, items = int(doc["revision"]), int(doc["schema"]), doc["items"]
        if not isinstance(items, dict) or not all(isinstance(v, dict) for v in items.values()):
            raise TypeError("items must map keys to documents")
    except (ValueError, KeyError, TypeError) as e:
        raise BackupInvalid(path, f"{STORE_MEMBER}: {e}") from e
    if (revision, version, len(items)) != (manifest.store.revision,
                                           manifest.store.schema_version,
                                           manifest.store.documents):
        raise BackupInvalid(path, f"{STORE_MEMBER} disagrees with the manifest's store")
    return Backup(manifest=manifest, revision=revision, schema_version=version, items=items,
                  token=data.get(TOKEN_FILE),
                  pki={name.removeprefix(PKI_PREFIX): (data[name], listed[name].mode)
                       for name in data if name.startswith(PKI_PREFIX)})


@dataclass
class Restored:
    store_kind: str
    store_where: str
    revision: int
    documents: int
    files: list[Path]


def restore(path: Path, settings: ControllerSettings, *, force: bool = False) -> Restored:
    """Verify `path`, then write its PKI files, token and store (one transaction) where these
    settings put them. A refused restore leaves the target as it was: the backup and the files
    are checked before anything is written, and the files are put back if the store refuses.
    Without `force`, the store must be empty and every file absent or already identical."""
    backup = read(path)
    if backup.schema_version > schema.SCHEMA_VERSION:
        raise BackupInvalid(path, f"store schema version {backup.schema_version} was made by a "
                                  f"newer hypetunnel ({backup.manifest.hypetunnel_version}); "
                                  f"this {__version__} reads up to {schema.SCHEMA_VERSION}")
    files: dict[Path, tuple[bytes, int]] = {}
    if backup.token is not None:
        files[settings.state_dir / TOKEN_FILE] = (backup.token, 0o600)
    if backup.pki:
        if settings.tls_dir is None:
            raise RestoreRefused(f"the backup holds {len(backup.pki)} PKI files and no tls_dir "
                                 "is configured to restore them into (--tls-dir or the config's "
                                 "tls_dir)")
        for rel, (data, mode) in backup.pki.items():
            files[settings.tls_dir / rel] = (data, mode)
    if not force:
        for target, (data, _) in files.items():
            if target.exists() and (not target.is_file() or target.read_bytes() != data):
                raise RestoreRefused(f"{target} exists and differs from the backup's; restore "
                                     "with --force to replace it")
    kind, where = opening.describe(settings.state_dir, settings.etcd)
    # The files first: with etcd over TLS the store is reached with the very certificate the
    # backup brings to a fresh host. Put back as they were if the store refuses.
    before = {target: (target.read_bytes(), stat.S_IMODE(target.stat().st_mode))
              if target.is_file() else None for target in files}
    try:
        for target, (data, mode) in files.items():
            _write_file(target, data, mode)
        store = _open(settings, create=True)
        try:
            if not isinstance(store, RestorableStore):
                raise RestoreRefused(f"the {kind} store cannot be restored into")
            revision = store.restore(backup.items, backup.revision, backup.schema_version,
                                     replace=force)
        finally:
            store.close()
    except BaseException:
        for target, old in before.items():
            if old is None:
                target.unlink(missing_ok=True)
            else:
                _write_file(target, *old)
        raise
    return Restored(kind, where, revision, len(backup.items), sorted(files))


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """`path` := data with `mode`, atomically (readers see the old file or the new one). Made
    0600 first: a private key is never readable by others, not even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.restore.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
