"""Open the store a controller is configured with: SQLite in its state directory, or etcd.

Shared by the daemon and the offline tools (backup, restore) so both find the very same store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from hypetunnel.errors import HypeTunnelError
from hypetunnel.pki import TlsConfig, client_context
from hypetunnel.store.base import Store

SQLITE_FILE = "store.db"


def open_store(state_dir: Path, etcd: list[str] | None, tls: TlsConfig | None, *,
               create: bool = True) -> Store:
    """etcd if endpoints are given (with our certificate when `tls`), else
    <state_dir>/store.db; `create=False`: a missing SQLite file is an error, not a new store.
    A bad endpoint raises ValueError naming it."""
    if etcd:
        from hypetunnel.store.etcd import EtcdStore

        # Members are reached by address: their certificates must name it (IP SAN).
        context = client_context(tls.identity, check_hostname=True) if tls else None
        return EtcdStore(etcd, tls=context)
    from hypetunnel.store.sqlite import SqliteStore

    path = state_dir / SQLITE_FILE
    if not create and not path.is_file():
        raise HypeTunnelError(f"there is no store at {path} (state_dir {state_dir})")
    state_dir.mkdir(parents=True, exist_ok=True)
    return SqliteStore(path)


def describe(state_dir: Path, etcd: list[str] | None) -> tuple[Literal["sqlite", "etcd"], str]:
    """(kind, where) of the store these settings name, for messages and manifests."""
    if etcd:
        return "etcd", ", ".join(etcd)
    return "sqlite", str(state_dir / SQLITE_FILE)
