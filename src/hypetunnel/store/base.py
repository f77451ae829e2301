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
