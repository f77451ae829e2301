"""The audit trail's writer: rows the API hands over are written by one thread, never the loop.

What it writes (the change rows themselves are written inside their commits, store/audit.py):
- the answer to a change (HTTP status, plan) added to its row once the response is known;
- a `request` row per write request that committed nothing in the store: refused (invalid,
  conflict, 413, 503), a dry run, or an operation whose effect is not a commit (failover);
- `refusal` rows for 401/403, coalesced: within a window (10 s) refusals with the same status,
  caller (token name, or the 401's reason), client address and route are ONE row whose count
  grows; the first is written at once, the final count when the window closes. At most
  `refusal_groups` rows per window, then one overflow row counts the rest. So a caller
  hammering with bad tokens costs a few store writes per window, whatever its rate.

Retention: each kind keeps its newest N rows (Retention); the oldest are pruned every
`PRUNE_EVERY` rows written and once a minute. Kinds are pruned apart, so refusals and failed
requests can never push the record of a committed change out.

If the store is slow, the queue (bounded) fills and further rows are dropped and counted; the
next row written says how many were lost. Change rows are never among them: they are committed
with their change.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypetunnel.store.audit import KINDS, AuditRow, AuditStore, row_key

log = logging.getLogger(__name__)

PRUNE_EVERY = 100  # rows written between prunes
PRUNE_INTERVAL = 60.0  # seconds; change rows arrive through commits, not through this queue
_IDLE_EXIT = 5.0  # the writer thread ends when idle this long (restarted on demand)


@dataclass(frozen=True)
class Retention:
    """Rows kept per kind (the newest ones); documented in the README."""

    change: int = 10_000
    request: int = 2_000
    refusal: int = 2_000

    def keep(self, kind: str) -> int:
        return int(getattr(self, kind))


@dataclass
class _Group:
    row: AuditRow
    count: int = 1
    dirty: bool = False


@dataclass
class _Refusals:
    started: float
    groups: dict[tuple[Any, ...], _Group] = field(default_factory=dict)


OVERFLOW = ("overflow",)
Rows = list[AuditRow] | Callable[[], list[AuditRow]]


class AuditTrail:
    def __init__(self, store: AuditStore, node: str, retention: Retention | None = None, *,
                 refusal_window: float = 10.0, refusal_groups: int = 20,
                 queue_size: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.node = node
        self.retention = retention or Retention()
        self.refusal_window = refusal_window
        self.refusal_groups = refusal_groups
        self._clock = clock
        self._queue: queue.Queue[Rows] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._refusals = _Refusals(clock())
        self._dropped = 0
        self._unfinished = 0  # rows handed over and not yet written (or given up)
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._written_since_prune = 0
        self._pruned_at = time.monotonic()
        self._warned_at = -float("inf")

    # -- handing rows over (any thread, the event loop included: never blocks) ------------------
    def put(self, rows: Rows) -> None:
        """Rows, or a function making them: run by the writer thread, so the work of reading an
        answer (parsing a large plan) never falls on the event loop."""
        with self._lock:
            try:
                self._queue.put_nowait(rows)
            except queue.Full:
                self._dropped += len(rows) if isinstance(rows, list) else 1
                return
            self._unfinished += 1
            self._ensure_writer()

    def refused(self, group: tuple[Any, ...], doc: dict[str, Any]) -> None:
        """One 401/403; `group` says which refusals are the same (see the module doc)."""
        now = self._clock()
        first: AuditRow | None = None
        closed: list[AuditRow] = []
        with self._lock:
            closed = self._close_window_locked(now)
            groups = self._refusals.groups
            if group not in groups and len(groups) >= self.refusal_groups:
                group = OVERFLOW
                doc = {**doc, "who": "*", "role": None, "route": "*", "params": {},
                       "client": "*", "tenant": None, "overflow": True}
            g = groups.get(group)
            if g is None:
                first = AuditRow(row_key("refusal", now), {**doc, "time": now, "count": 1,
                                                           "last": now})
                groups[group] = _Group(first)
            else:
                g.count += 1
                g.dirty = True
                g.row.doc.update(count=g.count, last=now)
        if closed:
            self.put(closed)
        if first is not None:  # a copy: the group's document keeps counting meanwhile
            self.put([AuditRow(first.key, dict(first.doc))])

    def _close_window_locked(self, now: float) -> list[AuditRow]:
        if now - self._refusals.started < self.refusal_window:
            return []
        final = [AuditRow(g.row.key, dict(g.row.doc)) for g in self._refusals.groups.values()
                 if g.dirty]
        self._refusals = _Refusals(now)
        return final

    # -- the writer thread ----------------------------------------------------------------------
    def _ensure_writer(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                with self._lock:
                    closed = self._close_window_locked(self._clock())
                    if (not closed and not self._refusals.groups and self._queue.empty()
                            and time.monotonic() - idle_since > _IDLE_EXIT):
                        # Idle: end. put() starts a new writer; the lock orders the two.
                        self._thread = None
                        return
                if closed:
                    self.put(closed)
                continue
            self._write(item)
            idle_since = time.monotonic()

    def _write(self, item: Rows) -> None:
        try:
            rows = item() if callable(item) else item
        except Exception:
            log.exception("cannot make an audit row")
            rows = []
        with self._lock:
            dropped, self._dropped = self._dropped, 0
        note = []
        if dropped:
            now = self._clock()
            note = [AuditRow(row_key("request", now), {
                "kind": "request", "time": now, "node": self.node, "who": "audit",
                "error": f"{dropped} audit rows lost: the store did not keep up or failed"})]
        try:
            self.store.audit_put([*rows, *note])
            self._written_since_prune += len(rows)
        except Exception as e:  # the store is down: the rows are lost, and counted
            if time.monotonic() - self._warned_at > 10:
                self._warned_at = time.monotonic()
                log.warning("cannot write %d audit rows: %s", len(rows), e)
            with self._lock:
                self._dropped += dropped + len(rows)
        finally:
            with self._lock:
                self._unfinished -= 1
                self._idle.notify_all()
        if (self._written_since_prune >= PRUNE_EVERY
                or time.monotonic() - self._pruned_at > PRUNE_INTERVAL):
            self.prune()

    def prune(self) -> None:
        self._written_since_prune, self._pruned_at = 0, time.monotonic()
        for kind in KINDS:
            try:
                self.store.audit_prune(kind, self.retention.keep(kind))
            except Exception as e:
                log.warning("cannot prune the audit log: %s", e)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every row handed over is written (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._unfinished:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close_window(self) -> None:
        """Write the current window's final refusal counts now (tests, shutdown)."""
        with self._lock:
            self._refusals.started = -float("inf")
            closed = self._close_window_locked(self._clock())
        if closed:
            self.put(closed)
