"""Side documents: JSON documents beside the intent but outside its key space and revision.

The alarm book and the state log (fcaps/) change with what the switches do, not with what an
operator wants: were they intent documents, every fault would move the store revision, so a
client's read-modify-write (If-Match) would fail for nothing, and every controller would
reload its intent. Side documents never move the revision and wake no watch (SQLite: a table
of its own; etcd: the sibling prefix `<prefix without its last />-side/`, see EtcdStore). A
fenced etcd view writes them only while its term holds, like any write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class SideStore(Protocol):
    def side_load(self, prefix: str) -> dict[str, dict[str, Any]]:
        """Every side document whose key starts with `prefix`."""
        ...

    def side_commit(self, puts: Mapping[str, dict[str, Any]], deletes: Iterable[str]) -> None:
        """Write and delete side documents (atomically where the backend allows it); the
        store revision does not move."""
        ...


def prefix_range(prefix: str) -> tuple[str, str]:
    """[start, end) of the keys starting with `prefix` (for an ordered key scan)."""
    return prefix, prefix + "\U0010ffff"
