"""The controller: wires the parts, decides nothing itself.

    service (intent, store) --on_change--> runtime --apply_intent--> FabricState (topology,
                                                                       compiler, bindings)
    SwitchSessions (OVSDB + OpenFlow per switch) --observed/changed--> runtime --observe-->
    ControllerRole (HA election) --on_active/on_standby--> runtime --take_all/yield_all-->

Dependencies point one way: sessions report upward through SessionEvents and read the desired
state through a protocol; the fabric state knows no session; the role knows neither. One asyncio
loop carries everything, and nothing on it waits on I/O: store reads and writes run in threads,
OVSDB in its own thread per hypervisor, OpenFlow is asyncio. The controller never knows whether
a switch is a lab or a real hypervisor: it only has OVSDB endpoints and accepts OpenFlow
connections.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

from hypetunnel import __version__
from hypetunnel.accounting.meters import SwitchMeters
from hypetunnel.accounting.poller import USAGE_INTERVAL, UsagePoller
from hypetunnel.aio import cancel_and_wait
from hypetunnel.compiler.compile import FabricCompiler
from hypetunnel.compiler.flows import Flow, Slice
from hypetunnel.compiler.topology import Topology
from hypetunnel.controller.fabric import FabricState
from hypetunnel.controller.follower import IntentFollower
from hypetunnel.controller.ha import Election, HaConfig, NotActive
from hypetunnel.controller.health import LoopLag, StoreProbe
from hypetunnel.controller.installation import PortInstallation
from hypetunnel.controller.mobility import Mobility
from hypetunnel.controller.ports import OvsdbFactory, OvsdbPort, real_ovsdb
from hypetunnel.controller.role import ControllerRole
from hypetunnel.controller.service import FabricService
from hypetunnel.controller.session import SwitchSession
from hypetunnel.controller.sessions import RETIRE_TIMEOUT, SwitchSessions
from hypetunnel.controller.tasks import TaskSet
from hypetunnel.fcaps.cluster import MemberLike
from hypetunnel.fcaps.latency import Tunnel, TunnelProber
from hypetunnel.fcaps.monitor import FLOW_AUDIT_INTERVAL, FaultMonitor
from hypetunnel.fcaps.storage import RoleSideStore
from hypetunnel.fcaps.view import fabric_view
from hypetunnel.fcaps.watch import FabricView
from hypetunnel.metrics.registry import ControllerMetrics
from hypetunnel.model.intent import Intent
from hypetunnel.model.policy import VmFaultPolicy, vm_fault_policy
from hypetunnel.pki import TlsConfig, server_context
from hypetunnel.southbound.observation import SwitchObservation
from hypetunnel.southbound.openflow.channel import SwitchChannel
from hypetunnel.southbound.openflow.server import OpenFlowServer
from hypetunnel.store.base import Store
from hypetunnel.store.schema import SCHEMA_VERSION

log = logging.getLogger(__name__)

LOOP_LAG_BOUND = 0.5  # seconds: beyond this the loop is too late for 1 s heartbeats: not ready


class Controller:
    def __init__(self, store: Store, *, openflow_listen: list[str],
                 switch_targets: list[str] | None = None, bridge: str = "br-int",
                 startup_grace: float = 15.0, ha: HaConfig | None = None,
                 ovsdb_factory: OvsdbFactory = real_ovsdb,
                 retire_timeout: float = RETIRE_TIMEOUT,
                 store_probe_interval: float = 1.0,
                 tls: TlsConfig | None = None, webhooks: list[str] | None = None,
                 flow_audit_interval: float = FLOW_AUDIT_INTERVAL,
                 usage_interval: float = USAGE_INTERVAL,
                 node: str = "controller") -> None:
        """tls: our identity; then OpenFlow listens TLS-only and binds each switch to the
        hypervisor its certificate names (None: plain, switches known by datapath id).
        webhooks: URLs every alarm change is POSTed to (fcaps/webhook.py);
        flow_audit_interval: seconds between reads of each switch's flow table (drift);
        usage_interval: seconds between reads of each switch's flow counters (accounting)."""
        self.openflow_listen = openflow_listen
        self.bridge = bridge
        self.startup_grace = startup_grace
        self.store = store
        self.fabric = FabricState()
        # Prometheus (metrics/): a registry of this instance's own; the collector reads
        # status() at scrape time, the instruments are fed below.
        self.metrics = ControllerMetrics(self)
        instruments = self.metrics.instruments
        self.role = ControllerRole(store, ha, on_active=self._became_active,
                                   on_standby=self._became_standby)
        # Until this controller wins a term (HA) its service may read but not write.
        self.service = FabricService(self.role.writable_store(),
                                     on_change=self._on_intent_change)
        self.service.timed = instruments.store_operation
        self.switches = SwitchSessions(
            self, self.fabric, may_program=self._may_program, role=self.role.openflow_role,
            on_retired=self._retired, bridge=bridge,
            # Empty: the switches keep the controller targets enlistment gave them.
            switch_targets=switch_targets or [], ovsdb_factory=ovsdb_factory,
            retire_timeout=retire_timeout, authenticated=tls is not None)
        self.mobility = Mobility(self.service, self)
        self.mobility.on_finished = instruments.move_finished
        self.loop_lag = LoopLag()
        self.store_probe = StoreProbe(store, interval=store_probe_interval)
        self.store_probe.timed = instruments.store_operation
        self._of_server = OpenFlowServer(
            self.switches.accept,
            channel_options={"on_error": lambda _text: instruments.openflow_errors.inc()},
            ssl_context=server_context(tls.identity) if tls is not None else None)
        self._tasks = TaskSet()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._kick = asyncio.Event()
        self._started_at = time.monotonic()
        self._startup_done = False
        self._stop_watch: Callable[[], None] | None = None
        self.follower = IntentFollower(self._apply_intent, self.spawn)
        self._refreshing = False
        self._refresh_again = False
        self._takeover: asyncio.Task[None] | None = None
        self._taken_term: int | None = None  # HA: the term every switch was taken for
        self.installation = PortInstallation()  # when compute may switch a moving VM over
        self._compiled_epoch = 0
        self._node = ha.node if ha is not None else node
        self.faults = FaultMonitor(self, RoleSideStore(store, self.role.writable_store,
                                                       lambda: self.role.is_active),
                                   webhooks=webhooks or [],
                                   flow_audit_interval=flow_audit_interval)
        self.accounting = UsagePoller(self, RoleSideStore(store, self.role.writable_store,
                                                          lambda: self.role.is_active),
                                      interval=usage_interval)
        self.latency = TunnelProber(self)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._kick = asyncio.Event()
        self._started_at = time.monotonic()
        self.follower.offer(self.service.intent, self.service.revision)
        for target in self.openflow_listen:
            await self._of_server.listen(target)
        self.spawn(self._worker(), "reconcile-worker")
        self.spawn(self._startup_gate(), "startup-gate")
        self.spawn(self.mobility.watch_failures(), "failure-watch")
        self.spawn(self.loop_lag.run(), "loop-lag")
        self.spawn(self.store_probe.run(self._stored_revision), "store-probe")
        self.spawn(self.faults.run(), "fault-monitor")
        self.spawn(self.accounting.run(), "accounting")
        self.spawn(self.latency.run(), "tunnel-latency")
        if self.role.election is not None:
            self.spawn(self._resume_deferred(self.role.election), "resume-deferred")
        if self.role.election is not None:
            loop = self._loop

            def changed() -> None:  # in the watch thread
                loop.call_soon_threadsafe(self._refresh_soon)

            self._stop_watch = await asyncio.to_thread(self.role.watch, changed)
            self.spawn(self.role.run(), "election")

    async def stop(self) -> None:
        if self._stop_watch is not None:
            await asyncio.to_thread(self._stop_watch)
        await self._tasks.cancel_all()
        await self._of_server.close()
        await self.switches.close()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro, name)

    # -- high availability -----------------------------------------------------------------------
    @property
    def election(self) -> Election | None:
        return self.role.election

    @property
    def is_active(self) -> bool:
        return self.role.is_active

    def _may_program(self) -> bool:
        # A standby keeps its tables computed but never touches a switch; nobody programs
        # with half the bindings known (see _startup_gate), nor before holding every switch
        # as MASTER for its term (flow mods sent earlier would be refused).
        election = self.role.election
        return (self.role.is_active and self._startup_done
                and (election is None or (self._taken_term == self.role.term
                                          and election.holds_lease())))

    @property
    def may_program(self) -> bool:
        return self._may_program()

    async def _resume_deferred(self, election: Election) -> None:
        """Changes held while programming was not allowed (a lapsed lease: a pause, a slow
        store) go out once it is allowed again. Each session flags the round it skipped, so a
        lapse shorter than this loop's period is not missed (sampling the lease for a
        lapse-and-back edge was: the round was dropped and the switch kept stale flows until
        the next change)."""
        while True:
            await asyncio.sleep(election.config.term_check_interval / 2)
            if self._may_program() and self.switches.resume_deferred():
                self._kick.set()

    async def _became_active(self, term: int) -> None:
        # Returns at once: the election starts its heartbeats only after this callback, and
        # a takeover of many switches must not leave the standby without them.
        self.service.store = self.role.writable_store()
        self._takeover = self.spawn(self._take_over(term), f"takeover-{term}")

    async def _take_over(self, term: int) -> None:
        await self._refresh()
        # MASTER with our term as generation id demotes any other master and makes older
        # generations stale; then every switch is re-read and only the difference programmed.
        await self.switches.take_all(term)
        self._taken_term = term
        self.switches.mark()
        self._kick.set()

    async def _became_standby(self, term: int) -> None:
        self.service.store = self.role.writable_store()
        if self._takeover is not None:
            await cancel_and_wait(self._takeover)
            self._takeover = None
        await self.switches.yield_all(term)

    async def failover(self) -> dict[str, Any]:
        return await self.role.failover()

    # -- intent ----------------------------------------------------------------------------------
    def _on_intent_change(self, old: Intent, new: Intent) -> None:
        # Called by the service under its lock, from whatever thread wrote: its revision is
        # the one `new` was committed at. Hop onto the loop with both.
        revision = self.service.revision
        if self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self.follower.offer(new, revision)
        else:
            self._loop.call_soon_threadsafe(self.follower.offer, new, revision)

    def _apply_intent(self, intent: Intent) -> None:
        self.installation.changed()
        self.fabric.apply_intent(intent)
        self.switches.enlist({h.name: (h.ovsdb, h.datapath_type or "system")
                              for h in intent.hypervisors})
        self._kick.set()

    @property
    def intent(self) -> Intent:
        return self.fabric.intent

    def _refresh_soon(self) -> None:
        """The shared store changed (another controller, or our own fenced write): reload it
        in a thread; changes that arrive meanwhile are coalesced into one more reload."""
        if self._refreshing:
            self._refresh_again = True
            return
        self.spawn(self._refresh(), "refresh-intent")

    async def _refresh(self) -> None:
        self._refreshing = True
        try:
            while True:
                self._refresh_again = False
                try:
                    await asyncio.to_thread(self._reload)
                except Exception as e:  # the store probe sees it too; the next change retries
                    log.warning("cannot reload the intent: %s", e)
                if not self._refresh_again:
                    return
        finally:
            self._refreshing = False

    def _reload(self) -> None:
        """In a thread: take the store's state; on_change reports a new revision."""
        old, before = self.service.intent, self.service.revision
        self.service.reload()
        if self.service.revision != before:
            self._on_intent_change(old, self.service.intent)

    def _stored_revision(self, revision: int) -> None:
        """The store probe read the store's revision (on the loop)."""
        if revision > self.service.revision and not self._refreshing:
            log.info("store at revision %d, the service at %d: reloading", revision,
                     self.service.revision)
            self._refresh_soon()

    # -- what the sessions report (SessionEvents) ------------------------------------------------
    def observed(self, hypervisor: str, obs: SwitchObservation) -> None:
        self.installation.changed()
        for vm, port in obs.bindings().items():
            if not port.installed:
                self.installation.bound(hypervisor, port.name, vm)
        self.fabric.observe(hypervisor, obs)
        self._kick.set()

    def changed(self, hypervisor: str) -> None:
        self._kick.set()

    def health_changed(self, hypervisor: str) -> None:
        self.faults.look_now()

    def packet_in(self, hypervisor: str, frame: bytes, at: float) -> None:
        self.latency.received(frame, at)

    def reconciled(self, hypervisor: str) -> None:
        st = self.switches.get(hypervisor)
        if st is not None:  # called inside its reconcile round, which holds its lock
            if st.last_round_seconds is not None:
                self.metrics.instruments.reconcile_seconds.observe(st.last_round_seconds)
            self._note_converged([st], in_round=True)

    def _retired(self, hypervisor: str) -> None:
        self.installation.forget(hypervisor)
        self.fabric.forget(hypervisor)
        self._kick.set()

    # -- port installation (compute waits for it before a hot move's switch-over) ---------------
    def _note_converged(self, sessions: list[SwitchSession], in_round: bool = False) -> None:
        """Sessions holding the current compilation, with nothing pending and no round under
        way (other than the caller's), count for waiting ports; mark those whose every switch
        now has."""
        if not self.installation.waiting:
            return
        for st in sessions:
            busy = st.lock.locked() and not in_round
            if not st.pending and not busy and self.switch_converged(st):
                self.installation.converged(st.hypervisor, self._compiled_epoch)
        self._mark_installed()

    def _mark_installed(self) -> None:
        by_switch: dict[str, dict[str, str]] = {}
        for w in self.installation.ready(lambda w: self.network_hosts(w.vm)):
            by_switch.setdefault(w.hypervisor, {})[w.port] = w.vm
        for hv, ports in by_switch.items():
            st = self.switches.get(hv)
            if st is not None and st.ovsdb is not None:
                self.spawn(self._write_installed(hv, st.ovsdb, ports), f"installed-{hv}")

    async def _write_installed(self, hv: str, client: OvsdbPort, ports: dict[str, str]) -> None:
        try:
            await client.mark_installed(ports)
            log.info("%s: %s marked installed", hv, ", ".join(sorted(ports.values())))
        except Exception as e:  # compute then waits out its timeout: packets, not the move
            log.warning("%s: cannot mark %s installed: %s", hv, sorted(ports), e)

    # -- reconciliation --------------------------------------------------------------------------
    async def _startup_gate(self) -> None:
        """Hold flow and tunnel programming until every enlisted switch's bindings are known (or
        a grace period passed): programming with half the bindings would delete live flows and
        tunnel ports (re-created ports get new ofports, so every flow using them churns)."""
        deadline = self._started_at + self.startup_grace
        while time.monotonic() < deadline:
            if all(st.bindings_known for st in self.switches.values() if st.endpoint):
                break
            await asyncio.sleep(0.05)
        self._startup_done = True
        # Switches reconciled while the gate was shut did nothing: do them all now.
        self.switches.mark()
        self._kick.set()

    async def _worker(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            self._compiled_epoch = self.installation.epoch
            self.switches.mark(self.fabric.recompute())
            # Switches the change did not touch hold this compilation already.
            self._note_converged(self.switches.values())
            self.switches.run_pending()

    def kick(self) -> None:
        self._kick.set()

    @property
    def startup_done(self) -> bool:
        return self._startup_done

    # -- what mobility needs (MobilityPort) ------------------------------------------------------
    def seen(self, vm: str) -> set[str]:
        return self.fabric.seen(vm)

    def settled(self, hypervisor: str | None) -> bool:
        st = self.switches.get(hypervisor or "")
        return st is None or st.endpoint is None or self.switch_converged(st)

    def reachability(self) -> dict[str, bool]:
        return {name: st.up for name, st in self.switches.items() if st.endpoint is not None}

    def network_hosts(self, vm: str) -> set[str]:
        topo = self.fabric.topology
        view = topo.vms.get(vm)
        return set(topo.hosts_of(view.vni)) if view is not None else set()

    def lose(self, hypervisor: str) -> None:
        self.installation.forget(hypervisor)
        self.fabric.forget(hypervisor)
        self._kick.set()

    # -- views (RuntimeView for the API) ---------------------------------------------------------
    def switch_converged(self, st: SwitchSession) -> bool:
        return st.converged(self.fabric)

    def readiness(self) -> list[str]:
        """Why this controller is not ready to serve (empty: ready)."""
        reasons = []
        store = self.store_probe.problem()
        if store:
            reasons.append(store)
        if not self.role.known:
            reasons.append("role unknown: the election has not decided yet")
        elif self.role.is_active and not self._may_program() and self._startup_done:
            reasons.append(f"taking over the switches for term {self.role.term}")
        lag = self.loop_lag.recent()
        if lag > LOOP_LAG_BOUND:
            reasons.append(f"event loop lag {lag * 1000:.0f} ms over the bound of "
                           f"{LOOP_LAG_BOUND * 1000:.0f} ms")
        behind = self.follower.problem()
        if behind:
            reasons.append(behind)
        if not self._startup_done:
            reasons.append("starting: waiting for the switches' bindings")
        unsynced = [name for name, st in self.switches.items()
                    if st.endpoint and not (st.ovsdb_synced and st.openflow_ready)]
        if unsynced:
            reasons.append(f"switches not synced: {', '.join(unsynced)}")
        return reasons

    def status(self) -> dict[str, Any]:
        role = "MASTER" if self.role.is_active else "SLAVE"
        switches = [st.describe(self.fabric, role) for st in self.switches.values()]
        total, bound = self.fabric.vms()
        enlisted = [s for s in switches if s["ovsdb"]]
        return {
            # version: the package this process runs (a rolling upgrade waits for the new one
            # on each member); store_schema: the store layout it writes (store/schema.py).
            "controller": {**self.role.describe(), "version": __version__,
                           "store_schema": SCHEMA_VERSION, "startup_done": self._startup_done,
                           "applied_revision": self.follower.applied_revision,
                           "loop_lag_ms": round(self.loop_lag.recent() * 1000, 1),
                           "retiring": self.switches.retiring,
                           "flow_mods_sent": sum(st.flow_mods_sent
                                                 for st in self.switches.values())},
            "switches": switches,
            "vms": {"total": total, "bound": bound},
            "accounting": self.accounting.describe(),
            # Converged: every switch holds exactly its desired state AND every VM the intent
            # has is bound somewhere (a VM not plugged yet has no flows to be missing).
            "converged": (self._startup_done and bool(enlisted) and bound == total
                          and all(s["converged"] for s in enlisted)),
        }

    def overlay(self) -> dict[str, Any]:
        return self.fabric.overlay(list(self.switches))

    def trace(self, src: str, dst: str, kind: str = "ip") -> dict[str, Any]:
        return self.fabric.trace(src, dst, kind)

    async def move(self, vm: str, to: str, cold: bool = False) -> dict[str, Any]:
        if not self.is_active:
            raise NotActive("moves are run by the active controller")
        return await self.mobility.move(vm, to, cold)

    async def drain(self, hypervisor: str) -> list[dict[str, Any]]:
        if not self.is_active:
            raise NotActive("drains are run by the active controller")
        return await self.mobility.drain(hypervisor)

    async def undrain(self, hypervisor: str) -> dict[str, Any]:
        return await self.mobility.undrain(hypervisor)

    def moves(self) -> list[dict[str, Any]]:
        from hypetunnel.controller.moves import all_moves

        return all_moves(self.service)

    def bindings(self) -> dict[str, str]:
        """VM id -> hypervisor where its port is, as the switches report it."""
        return self.fabric.locations()

    # -- faults: alarms and the state log (MonitorPort, and the API's view) ---------------------
    def fcaps_view(self) -> FabricView:
        return fabric_view(self.fcaps_sessions(), self.intent, self.switch_converged)

    def fcaps_sessions(self) -> list[tuple[str, SwitchSession]]:
        return [(n, st) for n, st in self.switches.items() if st.endpoint is not None]

    def fcaps_identity(self) -> tuple[str, int, bool]:
        return self._node, self.role.term, self.role.election is not None

    def fault_policy(self, vm: str) -> VmFaultPolicy:
        return vm_fault_policy(self.intent, vm)

    async def etcd_members(self) -> Sequence[MemberLike] | None:
        members = getattr(self.store, "members", None)
        if members is None or self.role.election is None:
            return None
        return list(await asyncio.to_thread(members))

    def restart_vm(self, vm: str) -> None:
        self.spawn(self.mobility.restart_in_place(vm), f"restart-{vm}")

    def drain_vms(self, hypervisor: str, vms: list[str], avoid: set[str]) -> None:
        self.spawn(self.mobility.drain_vms(hypervisor, vms, avoid), f"drain-{hypervisor}")

    async def alarms(self, include_cleared: bool = False) -> list[dict[str, Any]]:
        return await self.faults.alarms(include_cleared)

    async def events(self, resource: str | None = None, since: float | None = None,
                     limit: int = 1000) -> list[dict[str, Any]]:
        return await self.faults.events(resource, since, limit)

    def open_alarm_kinds(self) -> list[tuple[str, str]] | None:
        """(kind, severity) of the open alarms, from the book in memory: the active monitor
        holds it; elsewhere None (the active controller exports them, metrics/collector.py)."""
        if not self.faults.active:
            return None
        return [(a.kind, a.severity) for a in self.faults.recorder.book.open_alarms()]

    async def ack_alarm(self, alarm_id: str) -> dict[str, Any]:
        if not (self.is_active and self.faults.active):
            raise NotActive("alarms are acknowledged on the active controller")
        return await self.faults.ack(alarm_id)

    # -- accounting: per-tenant usage from the flow counters (UsagePort, and the API's view) ----
    def usage_switches(self) -> list[tuple[str, SwitchSession]]:
        return [(n, st) for n, st in self.switches.items() if st.openflow_ready]

    def usage_meters(self, hypervisor: str) -> SwitchMeters:
        topo = self.topology
        networks = topo.networks

        def network_of(vni: int) -> str | None:
            n = networks.get(vni)
            return None if n is None else f"{n.tenant}/{n.name}"

        # A VM live on two hypervisors (a hot move) gets every frame at both: its deliveries
        # count where the intent places it, so each frame counts once.
        elsewhere = {vm for vm in topo.secondary
                     if (topo.expected.get(vm) or topo.location.get(vm)) != hypervisor}
        return SwitchMeters(self.compiler.vm_ports(hypervisor), network_of, elsewhere)

    def usage_slices(self, hypervisor: str) -> Iterator[tuple[int, Slice]]:
        return self.fabric.slices(hypervisor).items()

    def flows_added(self, hypervisor: str, flows: Sequence[Flow]) -> None:
        self.accounting.flows_added(hypervisor, flows)

    def flow_removed(self, hypervisor: str, cookie: int, packets: int, nbytes: int) -> None:
        self.accounting.flow_removed(hypervisor, cookie, packets, nbytes)

    def tunnel_sessions(self) -> list[tuple[str, str, str, bool]] | None:
        """The BFD sessions of the switches this controller serves (None on a standby)."""
        if not self.may_program:
            return None
        return [(hv, e.remote, e.encapsulation, e.forwarding)
                for hv, sw in self.fcaps_view().switches.items() for e in sw.bfd]

    def probe_targets(self) -> Iterator[tuple[SwitchChannel, list[Tunnel]]]:
        """Each switch served now, with its tunnel ports whose BFD session forwards."""
        for hv, st in self.switches.items():
            channel, obs = st.channel, st.observation
            if not st.openflow_ready or channel is None or obs is None:
                continue
            tunnels = []
            for t in obs.tunnels:
                bfd, ofport = st.bfd.get(t.name), obs.ofport(t.name)
                if bfd is not None and bfd.forwarding and ofport is not None:
                    tunnels.append(Tunnel(hv, t.remote_hypervisor, t.encapsulation, ofport))
            yield channel, tunnels

    def tunnel_latencies(self) -> list[tuple[str, str, str, float]] | None:
        """Each tunnel's latest probe round trip (metrics); None on a standby."""
        return self.latency.latencies() if self.may_program else None

    def tenant_usage(self) -> list[dict[str, Any]] | None:
        """Per-tenant totals from the counters in memory (the metrics); None on a standby."""
        return self.accounting.tenant_totals()

    async def usage(self, by: str = "tenant", tenant: str | None = None,
                    since: float | None = None) -> list[dict[str, Any]]:
        return await self.accounting.usage(by, tenant, since)

    # -- the parts, for tests and benchmarks -----------------------------------------------------
    @property
    def topology(self) -> Topology:
        return self.fabric.topology

    @property
    def compiler(self) -> FabricCompiler:
        return self.fabric.compiler
