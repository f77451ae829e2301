"""The store's layout version: a newer controller reads an older store, never the reverse.

The version is a record of the store's own, beside the revision and outside the documents
(SQLite: meta row 'schema'; etcd: <prefix>meta/schema), so stamping it changes neither what
`load()` returns nor the revision. A store without it was written before versioning (hypetunnel
0.1.0): version 0.

At start (`ensure`), the controller refuses a store newer than it knows (an older controller
would misread or overwrite what a newer one wrote: a rolling upgrade's way back is a backup
restore, not a downgrade), and brings an older one up to date one step at a time:
MIGRATIONS[n] turns a version-n store into version n+1, then n+1 is stamped. Each stamp is a
compare-and-swap on the old version, so of two controllers starting together on one etcd only
one stamps a step (both may run its migration: a migration must be idempotent). A future
migration that rewrites documents must do it in one commit that is correct for both the old and
the new code (both run during a rolling upgrade), e.g. adding keys.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from hypetunnel import __version__
from hypetunnel.errors import HypeTunnelError
from hypetunnel.store.base import Store

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1  # the layout this code writes (documents per key as in store/codec.py)


@runtime_checkable
class VersionedStore(Store, Protocol):
    def schema_version(self) -> int | None:
        """The stamped version, None if the store has none (made before versioning)."""
        ...

    def stamp_schema(self, version: int, expected: int | None) -> bool:
        """Stamp `version` if the stamped one is still `expected`; False if it was not."""
        ...


class SchemaTooNew(HypeTunnelError):
    def __init__(self, found: int, known: int) -> None:
        self.found, self.known = found, known
        super().__init__(
            f"the store's schema is version {found}, newer than this controller (hypetunnel "
            f"{__version__}) reads (up to {known}): run a newer controller, or restore a backup "
            "made by this version; the store was not changed")


def _unversioned_to_1(store: Store) -> None:
    """0.1.0 wrote exactly version 1's layout: only the stamp is new."""


Migration = Callable[[Store], None]
MIGRATIONS: Mapping[int, Migration] = {0: _unversioned_to_1}


def ensure(store: Store, *, current: int = SCHEMA_VERSION,
           migrations: Mapping[int, Migration] = MIGRATIONS) -> int:
    """Check the store's version against `current`, migrate it up if older; returns the
    version found (0: none). A store that is not versioned at all (a test's fake) passes."""
    if not isinstance(store, VersionedStore):
        return current
    stamped = store.schema_version()
    found = 0 if stamped is None else stamped
    if found > current:
        raise SchemaTooNew(found, current)
    while True:
        version = 0 if stamped is None else stamped
        if version >= current:
            break
        migrations[version](store)
        if store.stamp_schema(version + 1, stamped):
            log.info("store schema migrated from version %d to %d", version, version + 1,
                     extra={"schema_from": version, "schema_to": version + 1})
        stamped = store.schema_version()  # ours, or another controller's stamp that won
        if stamped is not None and stamped > current:
            raise SchemaTooNew(stamped, current)
    return found
