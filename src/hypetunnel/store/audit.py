"""The audit log's rows in the store, and how a change's row rides in the change's own commit.

An audit row is a JSON document under its own keys, outside the intent's key space and outside
the store revision: appending one never changes what `load()` returns nor the revision, so the
intent loader, the compiler, the follower and the HA watch never see it (SQLite: a table of its
own; etcd: a sibling prefix, see EtcdStore.audit_prefix).

"Never lost" for a change means its row commits if and only if the change does. So the API binds
the request it serves to the context (`CURRENT`), and every store's `commit` that runs in that
context (the API's worker thread, asyncio.to_thread) writes one `change` row in the very same
transaction: who, what, and the changed keys with the new revision. The HTTP status and the
plan are only known after the response; they are added to that row afterwards, best effort (a
row whose `status` is missing tells exactly that: the change committed, its answer was not
recorded). Rows of requests that committed nothing (refusals, failed or dry-run writes) are
plain appends, see api/audit_trail.py.

Keys sort by time within a kind: `<kind>/<time_ns:019d>-<suffix>`; retention prunes each kind on
its own, so a flood of refusals can never push out the record of a change.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from threading import Lock
from typing import Any, Literal, Protocol, runtime_checkable

Kind = Literal["change", "request", "refusal"]
KINDS: tuple[Kind, ...] = ("change", "request", "refusal")
MAX_KEYS = 100  # changed keys listed in a change row (the count is always exact)


@dataclass(frozen=True, slots=True)
class AuditRow:
    key: str
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.key.partition("/")[0]

    @property
    def time(self) -> float:
        return float(self.doc["time"])

    @property
    def tenant(self) -> str | None:
        tenant = self.doc.get("tenant")
        return tenant if isinstance(tenant, str) else None


def row_key(kind: Kind, at: float, suffix: str | None = None) -> str:
    return f"{kind}/{int(at * 1e9):019d}-{suffix or uuid.uuid4().hex[:12]}"


def since_key(kind: str, since: float) -> str:
    """The smallest key of `kind` at or after time `since` (a range start)."""
    return f"{kind}/{max(int(since * 1e9), 0):019d}"


@dataclass
class PendingAudit:
    """The request on whose behalf store commits are made (bound by the API)."""

    # Who, what, which controller; no result yet. Asked at commit time: by then the request is
    # routed (route template, parameters) and authenticated (principal).
    describe: Callable[[], dict[str, Any]]
    rows: list[AuditRow] = field(default_factory=list)  # the change rows committed so far
    responded: bool = False  # commits after the answer (a 503 whose write landed late) say so
    _lock: Lock = field(default_factory=Lock)

    def change_row(self, revision: int, puts: Iterable[str], deletes: Iterable[str]) -> AuditRow:
        put, delete = sorted(puts), sorted(deletes)
        now = time.time()
        doc = self.describe()
        if doc.get("tenant") is None:
            doc["tenant"] = tenant_of_keys([*put, *delete])
        doc.update(kind="change", time=now, revision=revision,
                   keys={"put": put[:MAX_KEYS], "delete": delete[:MAX_KEYS],
                         "count": len(put) + len(delete)})
        if self.responded:
            doc["after_response"] = True
        return AuditRow(row_key("change", now, f"{revision:012d}"), doc)

    def committed(self, row: AuditRow) -> None:
        with self._lock:
            self.rows.append(row)

    def committed_rows(self) -> list[AuditRow]:
        with self._lock:
            return list(self.rows)


_TENANT_KINDS = ("tenant", "network", "vm", "move")


def tenant_of_keys(keys: Iterable[str]) -> str | None:
    """The one tenant every changed key belongs to, else None (a provider-wide change): a
    tenant sees a change to its objects however it was made (e.g. an admin's apply)."""
    tenants = set()
    for key in keys:
        kind, _, rest = key.partition("/")
        if kind not in _TENANT_KINDS or not rest:
            return None
        tenants.add(rest.partition("/")[0])
    return tenants.pop() if len(tenants) == 1 else None


CURRENT: ContextVar[PendingAudit | None] = ContextVar("hypetunnel_audit", default=None)


def pending_change(revision: int, puts: Mapping[str, Any],
                   deletes: Sequence[str]) -> tuple[PendingAudit, AuditRow] | None:
    """The change row a commit at `revision` must write with itself, if a request is bound."""
    pending = CURRENT.get()
    if pending is None:
        return None
    return pending, pending.change_row(revision, puts.keys(), deletes)


@runtime_checkable
class AuditStore(Protocol):
    """What a store offers the audit log besides the in-commit change row."""

    def audit_put(self, rows: Sequence[AuditRow]) -> None:
        """Write (or overwrite) rows; the store revision does not move."""
        ...

    def audit_range(self, since: float, tenant: str | None, limit: int) -> list[dict[str, Any]]:
        """Rows at or after `since` (of `tenant` when given), newest first, at most `limit`."""
        ...

    def audit_prune(self, kind: str, keep: int) -> int:
        """Delete the oldest rows of `kind` beyond the newest `keep`; returns how many."""
        ...


def newest(rows: Iterable[AuditRow], since: float, tenant: str | None,
           limit: int) -> list[dict[str, Any]]:
    """The filter every store applies (SQLite in SQL): newest first."""
    chosen = [r for r in rows if r.time >= since and (tenant is None or r.tenant == tenant)]
    chosen.sort(key=lambda r: (r.time, r.key), reverse=True)
    return [r.doc for r in chosen[:limit]]
