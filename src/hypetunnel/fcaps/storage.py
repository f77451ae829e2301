"""Where the monitor keeps the book, the log and the cursors: side documents (store/side.py),
outside the intent's revision. Read from the store itself (a standby answers the API too);
written through the role's store, so with HA only while this controller's term holds."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hypetunnel.controller.ha import NotActive
from hypetunnel.errors import HypeTunnelError
from hypetunnel.store.base import Store
from hypetunnel.store.side import SideStore


class NoSideStore(HypeTunnelError):
    """The store keeps no side documents (alarms and the state log need them)."""


class RoleSideStore:
    def __init__(self, store: Store, writable: Callable[[], Store],
                 active: Callable[[], bool]) -> None:
        self._store = store
        self._writable = writable
        self._active = active

    def side_load(self, prefix: str) -> dict[str, dict[str, Any]]:
        if not isinstance(self._store, SideStore):
            return {}
        return self._store.side_load(prefix)

    def side_commit(self, puts: Mapping[str, dict[str, Any]], deletes: Iterable[str]) -> None:
        if not self._active():
            raise NotActive("alarms and the state log are written by the active controller")
        target = self._writable()
        if not isinstance(target, SideStore):  # a view without side documents: the store's
            target = self._store
        if not isinstance(target, SideStore):
            raise NoSideStore(f"{type(self._store).__name__} keeps no side documents")
        target.side_commit(puts, deletes)
