"""SQLite Store: one file, WAL, one key/value table plus the global revision.

Every commit is one IMMEDIATE transaction (the write lock is taken before the revision is
read), so the compare-and-swap on the revision holds even with several processes on one file.
The audit log is a table of its own (store/audit.py): a change's row is inserted in the change's
transaction; other rows never touch `kv` or the revision.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from hypetunnel.store.audit import AuditRow, pending_change
from hypetunnel.store.base import StaleRevision, StoreNotEmpty, StoreSnapshot, StoreUnavailable
from hypetunnel.store.side import prefix_range

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    mod_revision INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0);
CREATE TABLE IF NOT EXISTS audit (
    key TEXT PRIMARY KEY,
    time REAL NOT NULL,
    tenant TEXT,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time);
CREATE TABLE IF NOT EXISTS side (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are opened explicitly with BEGIN IMMEDIATE.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                       timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"cannot open store {self.path}: {exc}") from exc
        self._lock = threading.Lock()  # one connection shared by the API's worker threads

    def _revision(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
        return int(row[0])

    def load(self) -> StoreSnapshot:
        with self._lock:
            try:
                self._db.execute("BEGIN")
                try:
                    revision = self._revision()
                    rows = self._db.execute("SELECT key, value FROM kv").fetchall()
                finally:
                    self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot read store {self.path}: {exc}") from exc
        return StoreSnapshot(revision, {key: json.loads(value) for key, value in rows})

    def commit(
        self,
        puts: Mapping[str, dict[str, Any]],
        deletes: Iterable[str],
        *,
        expect_revision: int | None = None,
    ) -> int:
        encoded = [(key, json.dumps(value, sort_keys=True)) for key, value in puts.items()]
        removed = [(key,) for key in deletes]
        with self._write("store"):
            current = self._revision()
            if expect_revision is not None and expect_revision != current:
                raise StaleRevision(expect_revision, current)
            if not encoded and not removed:
                return current
            new = current + 1
            self._db.executemany("DELETE FROM kv WHERE key = ?", removed)
            self._db.executemany(
                "INSERT INTO kv (key, value, mod_revision) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
                "mod_revision = excluded.mod_revision",
                [(key, value, new) for key, value in encoded],
            )
            self._db.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (new,))
            audit = pending_change(new, puts, [key for (key,) in removed])
            if audit is not None:
                self._insert_audit([audit[1]])
        if audit is not None:  # only once committed: a rolled-back change has no row
            audit[0].committed(audit[1])
        return new

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[None]:
        """One write transaction under the lock: committed when the block ends (also by a
        return), rolled back if it raises; a database error is StoreUnavailable."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot write the {what} {self.path}: {exc}") from exc

    # -- audit log (AuditStore) ------------------------------------------------------------------
    def _insert_audit(self, rows: Sequence[AuditRow]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO audit (key, time, tenant, doc) VALUES (?, ?, ?, ?)",
            [(r.key, r.time, r.tenant, json.dumps(r.doc, sort_keys=True)) for r in rows])

    def audit_put(self, rows: Sequence[AuditRow]) -> None:
        with self._write("audit log"):
            self._insert_audit(rows)

    def audit_range(self, since: float, tenant: str | None, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT doc FROM audit WHERE time >= ? AND (? IS NULL OR tenant = ?) "
                    "ORDER BY time DESC, key DESC LIMIT ?", (since, tenant, tenant, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot read the audit log {self.path}: {exc}") from exc
        return [json.loads(doc) for (doc,) in rows]

    def audit_prune(self, kind: str, keep: int) -> int:
        # Keys of one kind sort by time; the primary key's index makes both scans ranges.
        with self._lock:
            try:
                cur = self._db.execute(
                    "DELETE FROM audit WHERE key >= ? AND key <= (SELECT key FROM audit "
                    "WHERE key >= ? AND key < ? ORDER BY key DESC LIMIT 1 OFFSET ?)",
                    (f"{kind}/", f"{kind}/", f"{kind}0", keep))
                return int(cur.rowcount)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot prune the audit log {self.path}: {exc}") from exc

    # -- side documents (store/side.py) ---------------------------------------------------------
    def side_load(self, prefix: str) -> dict[str, dict[str, Any]]:
        start, end = prefix_range(prefix)
        with self._lock:
            try:
                rows = self._db.execute("SELECT key, value FROM side WHERE key >= ? AND key < ?",
                                        (start, end)).fetchall()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot read store {self.path}: {exc}") from exc
        return {key: json.loads(value) for key, value in rows}

    def side_commit(self, puts: Mapping[str, dict[str, Any]], deletes: Iterable[str]) -> None:
        encoded = [(key, json.dumps(value, sort_keys=True)) for key, value in puts.items()]
        with self._write("side documents"):
            self._db.executemany("DELETE FROM side WHERE key = ?", [(k,) for k in deletes])
            self._db.executemany("INSERT OR REPLACE INTO side (key, value) VALUES (?, ?)",
                                 encoded)

    # -- restore (backup.py) --------------------------------------------------------------------
    def restore(self, items: Mapping[str, dict[str, Any]], revision: int, schema: int,
                *, replace: bool) -> int:
        encoded = [(key, json.dumps(value, sort_keys=True)) for key, value in items.items()]
        with self._write("restored store"):
            current = self._revision()
            (documents,) = self._db.execute("SELECT COUNT(*) FROM kv").fetchone()
            if (current or documents) and not replace:
                raise StoreNotEmpty(str(self.path), current, int(documents))
            new = max(revision, current + 1) if (current or documents) else revision
            self._db.execute("DELETE FROM kv")
            self._db.executemany("INSERT INTO kv (key, value, mod_revision) VALUES (?, ?, ?)",
                                 [(key, value, new) for key, value in encoded])
            self._db.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (new,))
            self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('schema', ?)",
                             (schema,))
        return new

    # -- schema version (store/schema.py) --------------------------------------------------------
    def _schema(self) -> int | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        return None if row is None else int(row[0])

    def schema_version(self) -> int | None:
        with self._lock:
            try:
                return self._schema()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot read store {self.path}: {exc}") from exc

    def stamp_schema(self, version: int, expected: int | None) -> bool:
        with self._write("schema version"):
            if self._schema() != expected:
                return False
            self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('schema', ?)",
                             (version,))
            return True

    def revision(self) -> int:
        with self._lock:
            try:
                return self._revision()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot read store {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()
