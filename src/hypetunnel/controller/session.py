"""One switch's sessions: its OVSDB client and its OpenFlow channel, as explicit state machines.

Like OVN's ofctrl, every step of a session is a named state, and each state says what the
controller may do with the switch:

    OVSDB      IDLE -> CONNECTING -> CONFIGURING -> SYNCED <-> LOST        (any -> STOPPED)
    OpenFlow   DISCONNECTED -> CLAIMING -> SYNCING -> READY -> DISCONNECTED
    lifecycle  SERVING -> RETIRING -> RETIRED          (RETIRING -> SERVING if re-enlisted)

CONNECTING retries until the hypervisor answers; CONFIGURING makes br-int ours (fail mode,
controller targets, datapath id); in SYNCED and LOST (the IDL reconnects by itself) the last
snapshot still tells which ports exist. CLAIMING is the HA role request; SYNCING reads the
installed cookies, so READY programs only differences. RETIRING removes what HypeTunnel put on a
hypervisor that left the intent before the controller forgets it.

A session knows nothing of the fabric: it reports observations and state changes upward
through `SessionEvents`, and is told what to install through `DesiredState`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from hypetunnel.controller.ports import DesiredState, OvsdbFactory, OvsdbPort, SessionEvents, Spawn
from hypetunnel.controller.reconciler import FlowReconciler
from hypetunnel.controller.switch import datapath_id_for
from hypetunnel.southbound.observation import BfdStatus, SwitchObservation, UnderlayLink
from hypetunnel.southbound.openflow.channel import SwitchChannel

log = logging.getLogger(__name__)

RECONCILE_BACKOFF = 0.5  # seconds before retrying a switch whose reconcile failed
OVSDB_CONNECT_TIMEOUT = 10.0  # one attempt; CONNECTING retries forever


class OvsdbState(enum.Enum):
    IDLE = "idle"  # no endpoint: nothing to connect to
    CONNECTING = "connecting"
    CONFIGURING = "configuring"
    SYNCED = "synced"
    LOST = "lost"
    STOPPED = "stopped"


class OpenFlowState(enum.Enum):
    DISCONNECTED = "disconnected"
    CLAIMING = "claiming"
    SYNCING = "syncing"
    READY = "ready"


class Lifecycle(enum.Enum):
    SERVING = "serving"
    RETIRING = "retiring"
    RETIRED = "retired"


_OVSDB_NEXT: dict[OvsdbState, set[OvsdbState]] = {
    OvsdbState.IDLE: {OvsdbState.CONNECTING},
    OvsdbState.CONNECTING: {OvsdbState.CONFIGURING, OvsdbState.LOST},
    OvsdbState.CONFIGURING: {OvsdbState.SYNCED, OvsdbState.LOST},
    OvsdbState.SYNCED: {OvsdbState.LOST},
    OvsdbState.LOST: {OvsdbState.SYNCED, OvsdbState.CONFIGURING},
    OvsdbState.STOPPED: {OvsdbState.CONNECTING},
}
_OPENFLOW_NEXT: dict[OpenFlowState, set[OpenFlowState]] = {
    OpenFlowState.DISCONNECTED: {OpenFlowState.CLAIMING, OpenFlowState.SYNCING},
    OpenFlowState.CLAIMING: {OpenFlowState.SYNCING},
    OpenFlowState.SYNCING: {OpenFlowState.READY},
    OpenFlowState.READY: set(),
}


class SwitchSession:
    def __init__(self, hypervisor: str, events: SessionEvents, *, bridge: str,
                 ovsdb_factory: OvsdbFactory, switch_targets: list[str],
                 spawn: Spawn) -> None:
        self.hypervisor = hypervisor
        self.datapath_id = datapath_id_for(hypervisor)
        self.datapath_type = "system"
        self._events = events
        self._bridge = bridge
        self._factory = ovsdb_factory
        self._switch_targets = switch_targets
        self._spawn = spawn
        self.ovsdb_state = OvsdbState.IDLE
        self.openflow_state = OpenFlowState.DISCONNECTED
        self.lifecycle = Lifecycle.SERVING
        self.endpoint: str | None = None
        self.ovsdb: OvsdbPort | None = None
        self.observation: SwitchObservation | None = None
        self.channel: SwitchChannel | None = None
        self.reconciler: FlowReconciler | None = None
        self._attaching: SwitchChannel | None = None
        self.bound: set[str] = set()  # VM ids whose port is on this switch
        self.pending = True  # desired state may differ from what was last applied
        # A round skipped because programming was not allowed (a standby, a lapsed lease, a
        # takeover under way): the runtime makes it pending again once programming is allowed.
        # A flag, not an edge to watch for: a lapse too short to be seen is not lost.
        self.deferred = False
        self.programmed_generation = 0  # bumps at every flow push that changed something
        self.flow_mods_sent = 0  # flow adds and deletes sent to this switch, ever
        self.last_flow_push: float | None = None
        self.last_error: str | None = None
        self.last_round_seconds: float | None = None  # the last full reconcile round's time
        self.lock = asyncio.Lock()  # one reconcile (or retirement) at a time

    def __repr__(self) -> str:
        return (f"<SwitchSession {self.hypervisor} ovsdb={self.ovsdb_state.value} "
                f"openflow={self.openflow_state.value} {self.lifecycle.value}>")

    # -- transitions -----------------------------------------------------------------------------
    def _ovsdb_to(self, state: OvsdbState) -> None:
        if state is self.ovsdb_state:
            return
        if state not in (OvsdbState.STOPPED, OvsdbState.IDLE) \
                and state not in _OVSDB_NEXT[self.ovsdb_state]:
            raise AssertionError(f"{self.hypervisor}: OVSDB {self.ovsdb_state.value} -> "
                                 f"{state.value} is not a transition")
        log.debug("%s: OVSDB %s -> %s", self.hypervisor, self.ovsdb_state.value, state.value)
        self.ovsdb_state = state
        self._events.changed(self.hypervisor)

    def _openflow_to(self, state: OpenFlowState) -> None:
        if state is not OpenFlowState.DISCONNECTED \
                and state not in _OPENFLOW_NEXT[self.openflow_state]:
            raise AssertionError(f"{self.hypervisor}: OpenFlow {self.openflow_state.value} -> "
                                 f"{state.value} is not a transition")
        log.debug("%s: OpenFlow %s -> %s", self.hypervisor, self.openflow_state.value,
                  state.value)
        self.openflow_state = state
        self.pending = True
        self._events.changed(self.hypervisor)

    # -- facts -----------------------------------------------------------------------------------
    @property
    def bindings_known(self) -> bool:
        """A snapshot arrived: which VM ports the switch has is known."""
        return self.observation is not None

    @property
    def ovsdb_synced(self) -> bool:
        return self.observation is not None

    @property
    def ovsdb_connected(self) -> bool:
        return self.ovsdb is not None and self.ovsdb.connected

    @property
    def openflow_ready(self) -> bool:
        return (self.openflow_state is OpenFlowState.READY and self.channel is not None
                and self.reconciler is not None and self.channel.is_ready())

    @property
    def bfd(self) -> Mapping[str, BfdStatus]:
        """The BFD sessions of its tunnel ports, by port name (empty without OVSDB)."""
        return self.ovsdb.bfd if self.ovsdb is not None else {}

    @property
    def underlay(self) -> UnderlayLink | None:
        return self.ovsdb.underlay if self.ovsdb is not None else None

    @property
    def up(self) -> bool:
        """Either session answers (the hypervisor is alive)."""
        return self.ovsdb_connected or self.openflow_ready

    def converged(self, desired: DesiredState) -> bool:
        """Exactly the desired flows and tunnel ports are installed, nothing left to do."""
        if not (self.ovsdb_synced and self.openflow_ready and self.reconciler is not None):
            return False
        assert self.observation is not None
        return (not self.pending
                and self.reconciler.follows(desired.slices(self.hypervisor))
                and desired.tunnels(self.hypervisor) == self.observation.tunnels)

    def describe(self, desired: DesiredState, role: str) -> dict[str, Any]:
        """The switch's line of the status (role: what we hold while OpenFlow is up)."""
        hv = self.hypervisor
        return {
            "hypervisor": hv,
            "ovsdb": self.endpoint,
            "ovsdb_connected": self.ovsdb_connected,
            "ovsdb_state": self.ovsdb_state.value,
            "synced": self.ovsdb_synced,
            "openflow_connected": self.openflow_ready,
            "openflow_state": self.openflow_state.value,
            "role": role if self.openflow_ready else None,
            # Which certificate the switch's OpenFlow channel presented (hex; None when plain
            # or down): a certificate rotation shows here once the switch reconnected.
            "certificate_serial": (f"{self.channel.certificate_serial:x}"
                                   if self.openflow_ready and self.channel is not None
                                   and self.channel.certificate_serial is not None else None),
            "flows": desired.flow_count(hv),
            "flows_installed": len(self.reconciler.installed) if self.reconciler else 0,
            "tunnels": len(desired.tunnels(hv)),
            "vms_bound": len(self.bound),
            "converged": self.converged(desired),
            "generation": self.programmed_generation,
            "last_flow_push": self.last_flow_push,
            "last_error": self.last_error,
        }

    # -- OVSDB session ---------------------------------------------------------------------------
    def set_endpoint(self, endpoint: str | None) -> Coroutine[Any, Any, None] | None:
        """Connect to `endpoint` (None: disconnect); returns what connects, to be run as a
        task (it ends once connected, or when this client is replaced)."""
        if endpoint == self.endpoint and self.ovsdb is not None:
            return None
        self._stop_ovsdb()
        self.endpoint = endpoint
        if endpoint is None:
            self._ovsdb_to(OvsdbState.IDLE)
            return None
        client = self._factory(self.hypervisor, endpoint, self._bridge,
                               lambda obs: self._observed(client, obs),
                               lambda up: self._connection(client, up),
                               lambda: self._events.health_changed(self.hypervisor))
        self.ovsdb = client
        self._ovsdb_to(OvsdbState.CONNECTING)
        return self._connect(client)

    def _stop_ovsdb(self) -> None:
        client, self.ovsdb = self.ovsdb, None
        self.observation = None
        if client is not None:
            self._ovsdb_to(OvsdbState.STOPPED)
            self._spawn(client.stop(), f"ovsdb-stop-{self.hypervisor}")

    async def _connect(self, client: OvsdbPort) -> None:
        while self.ovsdb is client:  # until connected, or this client was replaced or stopped
            try:
                await client.start(timeout=OVSDB_CONNECT_TIMEOUT)
                break
            except Exception as e:  # keep trying: a hypervisor may come up after us
                self.last_error = f"ovsdb: {e}"
                log.warning("%s: OVSDB not reachable yet: %s", self.hypervisor, e)
        if self.ovsdb is not client:
            return
        if self.ovsdb_state in (OvsdbState.CONNECTING, OvsdbState.LOST):
            self._ovsdb_to(OvsdbState.CONFIGURING)
        try:
            await client.ensure_bridge(datapath_type=self.datapath_type,
                                       controller_targets=self._switch_targets,
                                       datapath_id=self.datapath_id)
        except Exception as e:
            self.last_error = f"ensure_bridge: {e}"
            log.error("%s: cannot configure %s: %s", self.hypervisor, self._bridge, e)
        if self.ovsdb is not client:
            return
        if self.ovsdb_state is OvsdbState.CONFIGURING:
            self._ovsdb_to(OvsdbState.SYNCED if client.connected else OvsdbState.LOST)
        if client.observation is not None:
            self._observed(client, client.observation)

    def _observed(self, client: OvsdbPort, obs: SwitchObservation) -> None:
        if self.ovsdb is not client:
            return  # a late report of a client we already stopped
        self.observation = obs
        self.bound = set(obs.bindings())
        self.pending = True
        self._events.observed(self.hypervisor, obs)

    def _connection(self, client: OvsdbPort, up: bool) -> None:
        if self.ovsdb is not client:
            return
        if not up:
            self.last_error = "ovsdb: connection lost"
            if self.ovsdb_state in (OvsdbState.CONFIGURING, OvsdbState.SYNCED):
                self._ovsdb_to(OvsdbState.LOST)
        elif self.ovsdb_state is OvsdbState.LOST:
            self._ovsdb_to(OvsdbState.SYNCED)

    # -- OpenFlow session ------------------------------------------------------------------------
    async def attach(self, channel: SwitchChannel, role: tuple[str, int] | None) -> bool:
        """Take a new connection of this switch: role request (HA), then read its flows.
        False if the switch refused our role (the channel is closed then)."""
        # A new connection: the old one is dead, and a newer one supersedes this attach.
        self.channel, self.reconciler, self._attaching = None, None, channel
        self.openflow_state = OpenFlowState.DISCONNECTED
        if role is not None:
            self._openflow_to(OpenFlowState.CLAIMING)
            try:
                await channel.set_role(*role)
            except Exception as e:
                log.warning("%s: %s role refused (%s): closing", self.hypervisor, role[0], e)
                if self._attaching is channel:
                    self._openflow_to(OpenFlowState.DISCONNECTED)
                await channel.close()
                return False
            if self._attaching is not channel:
                return False
        self._openflow_to(OpenFlowState.SYNCING)
        hv = self.hypervisor
        channel.on_flow_removed = (
            lambda cookie, packets, nbytes: self._events.flow_removed(hv, cookie, packets, nbytes))
        channel.on_packet_in = lambda _port, frame, at: self._events.packet_in(hv, frame, at)
        reconciler = FlowReconciler(channel,
                                    on_added=lambda flows: self._events.flows_added(hv, flows))
        try:
            await reconciler.resync()
        except Exception:
            if self._attaching is channel:
                self._openflow_to(OpenFlowState.DISCONNECTED)
            raise
        if self._attaching is not channel:
            return False
        self.channel, self.reconciler = channel, reconciler
        self._openflow_to(OpenFlowState.READY)
        log.info("%s: OpenFlow connected from %s", self.hypervisor, channel.peer)
        return True

    def live_channel(self) -> SwitchChannel | None:
        """The connection serving (or being attached as) this switch, if still open."""
        for channel in (self.channel, self._attaching):
            if channel is not None and channel.is_ready():
                return channel
        return None

    def detach(self, channel: SwitchChannel) -> None:
        """The connection closed."""
        if self._attaching is channel:
            self._attaching = None
        if self.channel is channel:
            self.channel, self.reconciler = None, None
            self._openflow_to(OpenFlowState.DISCONNECTED)
            log.warning("%s: OpenFlow connection lost", self.hypervisor)

    async def take(self, term: int) -> None:
        """We became active: MASTER with our term as generation id (older ones become stale),
        then re-read what is installed (the old active may have changed it)."""
        channel, reconciler = self.channel, self.reconciler
        if channel is None or reconciler is None:
            return
        try:
            await channel.set_role("MASTER", term)
            await reconciler.resync()
        except Exception as e:
            self.last_error = f"takeover: {e}"
            log.error("%s: takeover failed: %s", self.hypervisor, e)
        self.pending = True

    async def yield_role(self, term: int) -> None:
        if self.channel is not None:
            try:
                await self.channel.set_role("SLAVE", term)
            except Exception as e:  # a newer generation exists: we are SLAVE anyway
                log.info("%s: SLAVE role request: %s", self.hypervisor, e)

    # -- programming -----------------------------------------------------------------------------
    async def reconcile(self, desired: DesiredState, may_program: Callable[[], bool]) -> None:
        """Until nothing is pending: tunnel ports through OVSDB, flows through OpenFlow, only
        the difference. A failure is retried after a short back-off."""
        async with self.lock:
            while self.pending and self.lifecycle is Lifecycle.SERVING:
                self.pending = False
                try:
                    if may_program():
                        await self._reconcile_once(desired)
                    else:
                        self.deferred = True
                except Exception as e:
                    self.last_error = str(e)
                    log.error("%s: reconcile failed: %s", self.hypervisor, e)
                    self.pending = True
                    await asyncio.sleep(RECONCILE_BACKOFF)

    async def _reconcile_once(self, desired: DesiredState) -> None:
        hv = self.hypervisor
        started = time.perf_counter()
        if self.ovsdb is not None and self.observation is not None:
            tunnels = desired.tunnels(hv)
            if tunnels != self.observation.tunnels:
                await self.ovsdb.ensure_tunnels(tunnels)
        if not (self.ovsdb_synced and self.openflow_ready):
            return
        assert self.reconciler is not None
        # Only the slices changed since the last round are diffed (one full diff after a
        # resync): the cost follows the change, not the size of the switch's table.
        diff = await self.reconciler.apply_slices(desired.slices(hv))
        self.flow_mods_sent += diff.added + diff.removed + diff.foreign_removed
        if diff.added or diff.removed or diff.foreign_removed:
            self.programmed_generation += 1
            self.last_flow_push = time.time()
            log.info("%s: +%d -%d flows", hv, diff.added,
                     diff.removed + diff.foreign_removed)
        self.last_error = None
        self.last_round_seconds = time.perf_counter() - started
        self._events.reconciled(hv)

    async def audit_flows(self) -> tuple[int, int] | None:
        """Compare the switch's flow table with what this session installed: (missing,
        unexpected); None if it cannot be compared now (no channel, a round under way). A
        difference makes the switch pending: its next round re-reads and repairs it."""
        if self.lock.locked() or not self.openflow_ready:
            return None
        async with self.lock:
            reconciler = self.reconciler
            if reconciler is None or not reconciler.synced or not self.openflow_ready:
                return None
            diff = await reconciler.drift()
        if diff != (0, 0):
            self.pending = True
        # Also when asked for meanwhile (a takeover's mark, an observation): run_pending
        # skipped this switch while the audit held its lock, and nothing else would kick it.
        if self.pending:
            self._events.changed(self.hypervisor)
        return diff

    async def flow_stats(self) -> list[bytes] | None:
        """The switch's flow table with its counters (raw OFPMP_FLOW bodies, for accounting);
        None without a ready channel. Not under the round's lock: a read between two flow-mods
        only sees a flow early or late, which the accounting's arithmetic allows for."""
        channel = self.channel
        if channel is None or not self.openflow_ready:
            return None
        return await channel.dump_flow_stats()

    # -- retirement ------------------------------------------------------------------------------
    def begin_retiring(self) -> None:
        """Called when the hypervisor leaves the intent, before retire() is scheduled: a
        reconcile that keeps failing stops retrying at once; `serve_again` undoes it."""
        self.lifecycle = Lifecycle.RETIRING

    def serve_again(self) -> None:
        """Enlisted again before retire() finished: it stops, and the switch is reconciled."""
        self.lifecycle = Lifecycle.SERVING
        self.pending = True

    async def retire(self, clean: bool, timeout: float) -> bool:
        """The hypervisor left the intent (begin_retiring): if `clean`, remove our flows (cookie
        prefix) and tunnel ports from it first; then stop both sessions. True if cleaned."""
        cleaned = False
        async with self.lock:
            if self.lifecycle is not Lifecycle.RETIRING:
                return False  # re-enlisted while we waited
            if clean and self.up:
                cleaned = await self._clean(time.monotonic() + timeout)
            elif clean:
                # Both sessions are down: it is most likely gone for good, and waiting would
                # only keep polling it. Should it come back, its connections are refused.
                log.warning("%s: retired while unreachable: its flows and tunnel ports (if "
                            "any are left) could not be removed", self.hypervisor)
            if self.lifecycle is not Lifecycle.RETIRING:
                return cleaned  # re-enlisted meanwhile: keep serving
            self.lifecycle = Lifecycle.RETIRED
        self._stop_ovsdb()
        self._ovsdb_to(OvsdbState.IDLE)
        channel, self.channel, self.reconciler = self.channel, None, None
        if channel is not None:
            await channel.close()
        return cleaned

    async def _clean(self, deadline: float) -> bool:
        flows_done = tunnels_done = False
        while time.monotonic() < deadline and self.lifecycle is Lifecycle.RETIRING:
            try:
                if not flows_done and self.openflow_ready:
                    assert self.channel is not None and self.reconciler is not None
                    await self.reconciler.resync()
                    ours = sorted(self.reconciler.installed)
                    if ours:
                        await self.channel.send_flow_batch([], ours)
                    flows_done = True
                if not tunnels_done and self.ovsdb is not None and self.ovsdb_connected:
                    await self.ovsdb.ensure_tunnels(frozenset())
                    tunnels_done = True
            except Exception as e:
                self.last_error = f"retire: {e}"
                log.warning("%s: cleaning up before retiring failed: %s", self.hypervisor, e)
            if flows_done and tunnels_done:
                log.info("%s: retired: HypeTunnel's flows and tunnel ports removed",
                         self.hypervisor)
                return True
            await asyncio.sleep(0.1)
        log.warning("%s: retired without cleaning it (flows removed: %s, tunnel ports "
                    "removed: %s): it did not answer in time", self.hypervisor, flows_done,
                    tunnels_done)
        return False
