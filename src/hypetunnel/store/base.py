"""The store interface: key/value JSON documents, one global revision, atomic conditional commits.

Shaped after etcd (a later HA store implements the same protocol): `load` is a consistent
snapshot, `commit` applies puts and deletes in one transaction and bumps the revision once, and
`expect_revision` turns it into a compare-and-swap so two writers cannot silently interleave.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from hypetunnel.errors import Conflict, FieldError, HypeTunnelError


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    revision: int
    items: dict[str, dict[str, Any]] = field(default_factory=dict)


class StaleRevision(Conflict):
    """A conditional commit was based on an older revision than the store's."""

    def __init__(self, expected: int, actual: int) -> None:
        self.expected = expected
        self.actual = actual
        reason = f"the store is at revision {actual}, the change was based on revision {expected}"
        self.errors = [FieldError("revision", reason)]
        super().__init__(reason)


class StoreUnavailable(HypeTunnelError):
    """The store's backend failed (disk, database file, network)."""


@runtime_checkable
class Store(Protocol):
    def load(self) -> StoreSnapshot:
        """Every key with its document, and the revision they are consistent with."""
        ...

    def commit(
        self,
        puts: Mapping[str, dict[str, Any]],
        deletes: Iterable[str],
        *,
        expect_revision: int | None = None,
    ) -> int:
        """Apply all puts and deletes atomically and return the new revision. Raises
        StaleRevision (a Conflict) when expect_revision is given and is not the current one.
        An empty commit changes nothing and returns the current revision."""
        ...

    def revision(self) -> int:
        """The current revision alone: a cheap read (health checks, catching up)."""
        ...

    def close(self) -> None: ...


class StoreNotEmpty(HypeTunnelError):
    """A restore into a store that already holds documents, without `replace`."""

    def __init__(self, where: str, revision: int, documents: int) -> None:
        self.revision, self.documents = revision, documents
        super().__init__(
            f"the target store {where} is not empty (revision {revision}, {documents} "
            "documents): a restore replaces everything in it; stop its controllers and "
            "restore with --force to replace it")


@runtime_checkable
class RestorableStore(Store, Protocol):
    """A store that can be written back whole from a backup (store/dump in backup.py)."""

    def restore(self, items: Mapping[str, dict[str, Any]], revision: int, schema: int,
                *, replace: bool) -> int:
        """In ONE transaction: make the documents exactly `items`, the schema version
        `schema`, and the revision `revision` (on a store that was not empty: above its own,
        so no reader ever sees the revision go back). Raises StoreNotEmpty if the store holds
        anything and not `replace`. Returns the new revision. The audit log is not touched."""
        ...


@runtime_checkable
class HaStore(Store, Protocol):
    """The optional HA extension (etcd): the election's term, fenced writes, change watch."""

    def term(self) -> int: ...

    def claim_term(self, expected: int, node: str, info: dict[str, Any]) -> bool:
        """Become leader for term expected+1 if the term is still `expected`; True if won."""
        ...

    def leader(self) -> dict[str, Any] | None:
        """The record the winning claim wrote ({"node", "term", "peer", "api", ...})."""
        ...

    def fenced(self, term: int) -> Store:
        """A view whose commits also require the election term to still be `term`."""
        ...

    def watch(self, on_change: Callable[[], None]) -> Callable[[], None]:
        """Call on_change (from another thread) after the store changed; returns a stopper."""
        ...
