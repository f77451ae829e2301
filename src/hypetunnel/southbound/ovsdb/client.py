"""OvsdbClient: the asyncio face of one hypervisor's OVSDB, over the IDL thread.

Everything the IDL thread reports (snapshots, connection state) is re-delivered on the event
loop with call_soon_threadsafe, so `observation`, `connected` and the user callbacks are only
ever touched from the loop thread. Writes are queued to the thread and awaited; the loop never
blocks on OVSDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from hypetunnel.compiler.tunnels import TunnelPort
from hypetunnel.errors import SouthboundError
from hypetunnel.southbound.observation import BfdStatus, SwitchObservation, UnderlayLink
from hypetunnel.southbound.ovsdb.worker import IdlWorker, Stage
from hypetunnel.southbound.ovsdb.writes import (
    BridgeSpec,
    apply_bridge,
    apply_tunnels,
    mark_installed,
)

log = logging.getLogger(__name__)

DEFAULT_WRITE_TIMEOUT = 10.0


class OvsdbClient:
    """One hypervisor's OVSDB: observes `bridge` and keeps our tunnel ports and bridge settings.

    Callbacks run on the event loop that called start(); an exception they raise is logged.
    """

    def __init__(self, hypervisor: str, endpoint: str, *, bridge: str = "br-int",
                 on_change: Callable[[SwitchObservation], None] | None = None,
                 on_connection: Callable[[bool], None] | None = None,
                 on_health: Callable[[], None] | None = None) -> None:
        self.hypervisor = hypervisor
        self.endpoint = endpoint
        self.bridge = bridge
        self._on_change = on_change
        self._on_connection = on_connection
        self._on_health = on_health
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: IdlWorker | None = None
        self._ready: asyncio.Event | None = None
        self._fatal: BaseException | None = None
        self._observation: SwitchObservation | None = None
        self._bfd: Mapping[str, BfdStatus] = {}
        self._underlay: UnderlayLink | None = None
        self._connected = False

    def __repr__(self) -> str:
        return f"OvsdbClient({self.hypervisor!r}, {self.endpoint!r}, bridge={self.bridge!r})"

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self, timeout: float = 10.0) -> None:
        """Connect and wait for the initial monitor sync.

        On timeout raise SouthboundError, but keep connecting in the background: a later
        start() or wait_ready() succeeds once the server is up.
        """
        if self._worker is None:
            self._loop = asyncio.get_running_loop()
            self._ready = asyncio.Event()
            self._fatal = None
            self._worker = IdlWorker(self.hypervisor, self.endpoint, self.bridge,
                                     on_snapshot=self._from_thread(self._deliver_snapshot),
                                     on_state=self._from_thread(self._deliver_state),
                                     on_fatal=self._from_thread(self._deliver_fatal),
                                     on_bfd=self._from_thread(self._deliver_bfd),
                                     on_underlay=self._from_thread(self._deliver_underlay))
            self._worker.start()
        await self.wait_ready(timeout)

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the replica is connected and synchronised (now or after a reconnect)."""
        if self._ready is None:
            raise SouthboundError(f"{self!r}: not started")
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError as e:
            raise SouthboundError(f"{self.hypervisor}: OVSDB {self.endpoint} not synchronised "
                                  f"within {timeout}s (still trying)") from e
        self._raise_fatal()

    async def stop(self) -> None:
        """End the IDL thread and close the connection; pending writes fail."""
        worker, self._worker = self._worker, None
        self._connected = False
        if self._ready is not None:
            self._ready.clear()
        if worker is not None and not await asyncio.to_thread(worker.stop, 10.0):
            raise SouthboundError(f"{self!r}: IDL thread did not stop")

    # ---- observed state ---------------------------------------------------------------------

    @property
    def observation(self) -> SwitchObservation | None:
        """The latest consistent snapshot (None before the first sync)."""
        return self._observation

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def bfd(self) -> Mapping[str, BfdStatus]:
        """Our tunnel ports' BFD sessions by port name (the latest report; a change calls
        on_health, never on_change: it is the fault monitor's, not a reconcile round's)."""
        return self._bfd

    @property
    def underlay(self) -> UnderlayLink | None:
        """The narrowest interface of the underlay bridge (health: on_health as well)."""
        return self._underlay

    # ---- desired state ----------------------------------------------------------------------

    async def ensure_tunnels(self, desired: frozenset[TunnelPort], *,
                             timeout: float = DEFAULT_WRITE_TIMEOUT) -> bool:
        """Make our tunnel ports on the bridge equal `desired`, in one transaction.

        Ports without our external_ids marker are never touched. Returns True if a
        transaction was committed, False if the bridge already matched (nothing sent).
        Once this returns, `observation.tunnels` already reflects the commit (ofports follow
        when ovs-vswitchd assigns them).
        """
        wanted = frozenset(desired)
        bridge = self.bridge
        return await self._write(f"ensure {len(wanted)} tunnel ports on {bridge}",
                                 lambda idl, txn: apply_tunnels(idl, txn, bridge, wanted),
                                 timeout)

    async def ensure_bridge(self, *, datapath_type: str, controller_targets: list[str],
                            datapath_id: int | None = None,
                            timeout: float = DEFAULT_WRITE_TIMEOUT) -> bool:
        """Create or fix the bridge (fail_mode secure, OpenFlow13, our controllers, in-band
        control off, optional fixed datapath id); its ports are left alone.
        Returns True if a transaction was committed."""
        spec = BridgeSpec(self.bridge, datapath_type, tuple(controller_targets), datapath_id)
        spec.other_config()  # validate on the caller's side, before queueing
        return await self._write(f"ensure bridge {self.bridge}",
                                 lambda idl, txn: apply_bridge(idl, txn, spec), timeout)

    async def mark_installed(self, ports: dict[str, str], *,
                             timeout: float = DEFAULT_WRITE_TIMEOUT) -> bool:
        """Tell compute that these ports' networks are programmed (port name -> VM id)."""
        wanted = dict(ports)
        return await self._write(f"mark {len(wanted)} ports installed",
                                 lambda idl, txn: mark_installed(idl, wanted), timeout)

    async def _write(self, what: str, stage: Stage, timeout: float) -> bool:
        self._raise_fatal()
        if self._worker is None:
            raise SouthboundError(f"{self!r}: not started")
        future = self._worker.submit(what, stage, timeout)
        try:
            # The worker enforces the deadline; the margin only guards against a dead thread.
            async with asyncio.timeout(timeout + 5.0):
                return await asyncio.wrap_future(future)
        except TimeoutError as e:
            future.cancel()
            raise SouthboundError(f"{self.hypervisor}: {what}: no answer from IDL thread") from e

    # ---- delivery from the IDL thread -------------------------------------------------------

    def _from_thread(self, fn: Callable[[Any], None]) -> Callable[[Any], None]:
        loop = self._loop
        assert loop is not None

        def post(arg: Any) -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to tell
                loop.call_soon_threadsafe(fn, arg)

        return post

    def _deliver_snapshot(self, snap: SwitchObservation) -> None:
        self._observation = snap
        if self._on_change is not None:
            try:
                self._on_change(snap)
            except Exception:
                log.exception("%r: on_change callback failed", self)

    def _deliver_bfd(self, bfd: dict[str, BfdStatus]) -> None:
        self._bfd = bfd
        self._health_changed()

    def _deliver_underlay(self, underlay: UnderlayLink | None) -> None:
        self._underlay = underlay
        self._health_changed()

    def _health_changed(self) -> None:
        if self._on_health is not None:
            try:
                self._on_health()
            except Exception:
                log.exception("%r: on_health callback failed", self)

    def _deliver_state(self, up: bool) -> None:
        if self._worker is None:
            return  # stopped meanwhile
        self._connected = up
        if self._ready is not None:
            if up:
                self._ready.set()
            else:
                self._ready.clear()
        if self._on_connection is not None:
            try:
                self._on_connection(up)
            except Exception:
                log.exception("%r: on_connection callback failed", self)

    def _deliver_fatal(self, exc: BaseException) -> None:
        self._fatal = exc
        if self._ready is not None:
            self._ready.set()  # wake start()/wait_ready() so they raise instead of timing out

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            raise SouthboundError(f"{self.hypervisor}: OVSDB client failed: "
                                  f"{self._fatal}") from self._fatal
