"""The IDL thread: one per hypervisor, owning the OVS IDL replica and every transaction on it.

The OVS Python IDL is neither thread-safe nor asyncio-aware, so exactly one thread touches it.
That thread polls the OVSDB session and a wake-up pipe, builds a snapshot after every batch of
updates (Idl.run() applies whole server notifications, each one a committed transaction, so
the replica is consistent between two runs), and executes queued write requests one at a time
without ever blocking on a reply: a transaction in flight is polled like any other event.

Results leave the thread through plain callables (the asyncio facade turns them into
loop.call_soon_threadsafe) and concurrent.futures.Future objects. Because a snapshot is handed
out in the same loop iteration *before* the transaction that caused it is resolved, a caller
awaiting a write sees the corresponding observation first.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import queue
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ovs.poller
from ovs.db.idl import Idl, Transaction

from hypetunnel.errors import SouthboundError
from hypetunnel.southbound.observation import BfdStatus, SwitchObservation, UnderlayLink
from hypetunnel.southbound.ovsdb.schema import (
    SchemaFetcher,
    drain,
    schema_helper,
    tune_session,
)
from hypetunnel.southbound.ovsdb.snapshot import build_bfd, build_observation, build_underlay
from hypetunnel.southbound.ovsdb.tls import peer_mismatch

log = logging.getLogger(__name__)

Stage = Callable[[Any, Any], bool]  # (idl, txn) -> True if edits were staged
RETRY_DELAY_S = 0.2  # after TRY_AGAIN, when the replica has not changed meanwhile


@dataclass(eq=False)
class WriteRequest:
    what: str
    stage: Stage
    deadline: float  # time.monotonic()
    future: concurrent.futures.Future[bool] = field(default_factory=concurrent.futures.Future)
    started: bool = False
    retry_seqno: int | None = None  # replica version that made the last attempt fail
    retry_at: float = 0.0
    last_error: str = "OVSDB not connected"


class IdlWorker:
    def __init__(self, hypervisor: str, endpoint: str, bridge: str,
                 on_snapshot: Callable[[SwitchObservation], None],
                 on_state: Callable[[bool], None],
                 on_fatal: Callable[[BaseException], None],
                 on_bfd: Callable[[dict[str, BfdStatus]], None] = lambda _: None,
                 on_underlay: Callable[[UnderlayLink | None], None] = lambda _: None) -> None:
        self.hypervisor = hypervisor
        self.endpoint = endpoint
        self.bridge = bridge
        self._on_snapshot = on_snapshot
        self._on_state = on_state
        self._on_fatal = on_fatal
        self._on_bfd = on_bfd
        self._on_underlay = on_underlay
        self._inbox: queue.SimpleQueue[WriteRequest] = queue.SimpleQueue()
        self._pending: deque[WriteRequest] = deque()
        self._inflight: tuple[WriteRequest, Transaction, int] | None = None
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"ovsdb-{hypervisor}",
                                        daemon=True)
        self._idl: Idl | None = None
        self._synced = False
        self._seen_seqno = -1
        self._last_snapshot: SwitchObservation | None = None
        self._last_bfd: dict[str, BfdStatus] = {}
        self._last_underlay: UnderlayLink | None = None
        self._checked_session = -1  # the session seqno whose server identity was checked
        self.identity_problem: str | None = None  # why the server is not our hypervisor

    # ---- called from any thread -------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, what: str, stage: Stage, timeout: float) -> concurrent.futures.Future[bool]:
        """Queue a write; the future yields True if something was committed, False if the
        database already matched (nothing sent)."""
        req = WriteRequest(what, stage, time.monotonic() + timeout)
        if self._stopping:
            req.future.set_exception(SouthboundError(f"{self._name}: client stopped"))
            return req.future
        self._inbox.put(req)
        self._wake()
        return req.future

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to end and wait for it; False if it is still running."""
        self._stopping = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        with self._wake_lock:  # closed here, not in the thread: a late _wake() must not
            if not self._closed:  # write into a descriptor number reused by someone else
                self._closed = True
                os.close(self._wake_r)
                os.close(self._wake_w)
        return True

    @property
    def _name(self) -> str:
        return f"{self.hypervisor} ({self.endpoint})"

    def _wake(self) -> None:
        with self._wake_lock:
            if self._closed:
                return
            with contextlib.suppress(BlockingIOError):  # a full pipe wakes the thread too
                os.write(self._wake_w, b"x")

    # ---- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        fetcher: SchemaFetcher | None = None
        try:
            fetcher = SchemaFetcher(self.endpoint)
            while not self._stopping:
                if self._idl is None:
                    assert fetcher is not None  # dropped only once the IDL exists
                    schema = fetcher.poll()
                    if schema is not None:
                        fetcher.close()
                        fetcher = None
                        self._idl = Idl(self.endpoint, schema_helper(schema))
                        # The IDL offers no public knob for the reconnect backoff.
                        tune_session(self._idl._session)
                        continue
                else:
                    self._run_idl(self._idl)
                self._collect()
                self._wait(fetcher)
        except BaseException as e:  # the thread must report, never die silently
            log.exception("OVSDB worker for %s failed", self._name)
            if self._synced:
                self._synced = False
                self._on_state(False)
            self._on_fatal(e)
        finally:
            if fetcher is not None:
                fetcher.close()
            self._shutdown()

    def _run_idl(self, idl: Idl) -> None:
        try:
            idl.run()
            self._after_run(idl)
        except Exception:
            # A bug in the IDL or in our staging code may have left the replica out of step
            # with the server; a reconnect resynchronises it.
            log.exception("OVSDB worker for %s: resynchronising after error", self._name)
            idl.force_reconnect()

    def _collect(self) -> None:
        """Take new requests, expire old ones, and start what can start."""
        while True:
            try:
                self._pending.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        self._expire(time.monotonic())
        if self._idl is None:
            return
        self._progress_inflight()
        while self._inflight is None and self._synced and self._start_next(self._idl):
            pass

    def _wait(self, fetcher: SchemaFetcher | None) -> None:
        poller = ovs.poller.Poller()
        if self._idl is not None:
            self._idl.wait(poller)
        elif fetcher is not None:
            fetcher.wait(poller)
        poller.fd_wait(self._wake_r, select.POLLIN)
        if self._inflight is not None:
            self._inflight[1].wait(poller)
        next_timer = self._next_timer()
        if next_timer is not None:
            poller.timer_wait(max(0, int((next_timer - time.monotonic()) * 1000)) + 1)
        poller.block()
        drain(self._wake_r)

    def _after_run(self, idl: Idl) -> None:
        synced = bool(idl._session.is_connected()) and idl.state == Idl.IDL_S_MONITORING
        if synced and not self._server_is_ours(idl):
            synced = False  # neither its state nor our writes: it is another host
        if synced and idl.change_seqno != self._seen_seqno:
            self._seen_seqno = idl.change_seqno
            snap = build_observation(self.hypervisor, self.bridge,
                                     idl.tables["Bridge"].rows.values())
            if snap != self._last_snapshot:
                self._last_snapshot = snap
                self._on_snapshot(snap)
            bfd = build_bfd(self.bridge, idl.tables["Bridge"].rows.values())
            if bfd != self._last_bfd:
                self._last_bfd = bfd
                self._on_bfd(bfd)
            underlay = build_underlay(idl.tables["Bridge"].rows.values())
            if underlay != self._last_underlay:
                self._last_underlay = underlay
                self._on_underlay(underlay)
        if synced != self._synced:
            self._synced = synced
            log.info("OVSDB %s %s", self._name, "synchronised" if synced else "disconnected")
            self._on_state(synced)

    def _server_is_ours(self, idl: Idl) -> bool:
        """Check the server's certificate once per connection (the session's seqno moves on
        every connect and disconnect); on a mismatch reconnect, with the session's back-off,
        until the address answers as our hypervisor."""
        session = idl._session
        if session.get_seqno() != self._checked_session:
            self._checked_session = session.get_seqno()
            problem = peer_mismatch(session, self.hypervisor)
            if problem is not None and problem != self.identity_problem:
                log.error("OVSDB %s: refused, the server %s", self._name, problem)
            self.identity_problem = problem
            if problem is not None:
                idl.force_reconnect()
        return self.identity_problem is None

    def _next_timer(self) -> float | None:
        """When to wake up for a deadline or a retry, even without any I/O.

        Only future instants: a past one would make poll() return at once, forever.
        """
        now = time.monotonic()
        times = [r.deadline for r in self._pending]
        times += [r.retry_at for r in self._pending
                  if r.retry_seqno is not None and r.retry_at > now]
        return min(times, default=None)

    def _expire(self, now: float) -> None:
        for req in [r for r in self._pending if r.deadline <= now]:
            self._pending.remove(req)
            self._fail(req, f"timed out: {req.last_error}")

    def _start_next(self, idl: Idl) -> bool:
        """Start the head request; False when it must wait (so the caller stops looping)."""
        if not self._pending:
            return False
        req = self._pending[0]
        if (req.retry_seqno is not None and idl.change_seqno == req.retry_seqno
                and time.monotonic() < req.retry_at):
            return False
        self._pending.popleft()
        if not req.started:
            req.started = True
            if not req.future.set_running_or_notify_cancel():
                return True  # the awaiting task was cancelled before we began
        seqno = idl.change_seqno
        txn = Transaction(idl)
        try:
            staged = req.stage(idl, txn)
        except Exception as e:
            txn.abort()
            self._fail(req, str(e), cause=e)
            return True
        if not staged:
            txn.abort()
            req.future.set_result(False)
            return True
        txn.add_comment(f"hypetunnel: {req.what}")
        txn.commit()
        self._inflight = (req, txn, seqno)
        self._progress_inflight()
        return True

    def _progress_inflight(self) -> None:
        if self._inflight is None:
            return
        req, txn, seqno = self._inflight
        status = txn.commit()  # once sent, this only reports the status
        if status == Transaction.INCOMPLETE:
            return
        self._inflight = None
        if status == Transaction.SUCCESS:
            req.future.set_result(True)
        elif status in (Transaction.TRY_AGAIN, Transaction.NOT_LOCKED):
            # A verify failed or the connection dropped: recompose from a fresher replica.
            req.retry_seqno = seqno
            req.retry_at = time.monotonic() + RETRY_DELAY_S
            req.last_error = f"transaction status {status}"
            self._pending.appendleft(req)
        else:
            self._fail(req, f"transaction {status}: {txn.get_error()}")

    def _fail(self, req: WriteRequest, reason: str, cause: BaseException | None = None) -> None:
        if req.future.done():
            return
        if isinstance(cause, SouthboundError):
            req.future.set_exception(cause)
            return
        err = SouthboundError(f"{self._name}: {req.what}: {reason}")
        err.__cause__ = cause
        req.future.set_exception(err)

    def _shutdown(self) -> None:
        self._stopping = True  # also after a fatal error: later submits fail at once
        if self._inflight is not None:
            self._pending.appendleft(self._inflight[0])
            self._inflight = None
        while True:
            try:
                self._pending.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        for req in self._pending:
            self._fail(req, "client stopped")
        self._pending.clear()
        if self._idl is not None:
            self._idl.close()
