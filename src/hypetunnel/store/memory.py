"""In-memory Store: same semantics as the SQLite one (documents are JSON-copied in and out),
the audit log included (store/audit.py)."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hypetunnel.store.audit import AuditRow, newest, pending_change
from hypetunnel.store.base import StaleRevision, StoreSnapshot


class MemoryStore:
    def __init__(self) -> None:
        self._items: dict[str, dict[str, Any]] = {}
        self._revision = 0
        self._lock = threading.Lock()
        self.commits = 0  # number of non-empty commits, for tests
        self._audit: dict[str, AuditRow] = {}
        self._schema: int | None = None
        self._side: dict[str, str] = {}  # side documents (store/side.py), JSON-encoded

    def load(self) -> StoreSnapshot:
        with self._lock:
            return StoreSnapshot(self._revision, copy.deepcopy(self._items))

    def commit(
        self,
        puts: Mapping[str, dict[str, Any]],
        deletes: Iterable[str],
        *,
        expect_revision: int | None = None,
    ) -> int:
        deletes = list(deletes)
        # Encode before touching anything, like SQLite does: a bad document writes nothing.
        encoded = {key: json.dumps(value) for key, value in puts.items()}
        with self._lock:
            if expect_revision is not None and expect_revision != self._revision:
                raise StaleRevision(expect_revision, self._revision)
            if not puts and not deletes:
                return self._revision
            # The audit row is made first: if it cannot be, nothing changes (as in SQLite).
            audit = pending_change(self._revision + 1, puts, deletes)
            row = _copied(audit[1]) if audit is not None else None
            for key in deletes:
                self._items.pop(key, None)
            for key, text in encoded.items():
                self._items[key] = json.loads(text)
            self._revision += 1
            self.commits += 1
            if audit is not None and row is not None:
                self._audit[row.key] = row
                audit[0].committed(audit[1])
            return self._revision

    def audit_put(self, rows: Sequence[AuditRow]) -> None:
        copies = [_copied(r) for r in rows]
        with self._lock:
            self._audit.update((r.key, r) for r in copies)

    def audit_range(self, since: float, tenant: str | None, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            rows = list(self._audit.values())
        return copy.deepcopy(newest(rows, since, tenant, limit))

    def audit_prune(self, kind: str, keep: int) -> int:
        with self._lock:
            keys = sorted(k for k in self._audit if k.startswith(f"{kind}/"))
            old = keys[: max(len(keys) - keep, 0)]
            for key in old:
                del self._audit[key]
            return len(old)

    def side_load(self, prefix: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: json.loads(v) for k, v in self._side.items() if k.startswith(prefix)}

    def side_commit(self, puts: Mapping[str, dict[str, Any]], deletes: Iterable[str]) -> None:
        encoded = {key: json.dumps(value) for key, value in puts.items()}
        with self._lock:
            for key in deletes:
                self._side.pop(key, None)
            self._side.update(encoded)

    def schema_version(self) -> int | None:
        with self._lock:
            return self._schema

    def stamp_schema(self, version: int, expected: int | None) -> bool:
        with self._lock:
            if self._schema != expected:
                return False
            self._schema = version
            return True

    def revision(self) -> int:
        with self._lock:
            return self._revision

    def close(self) -> None:
        pass


def _copied(row: AuditRow) -> AuditRow:
    return AuditRow(row.key, json.loads(json.dumps(row.doc)))
