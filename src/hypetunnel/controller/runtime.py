"""The controller: intent and observations in, tunnel ports and flows out.

One asyncio loop. Intent changes (from the service) and observations (from each hypervisor's
OVSDB) update the Topology; the compiler recomputes the touched (hypervisor, VNI) slices; each
touched switch is reconciled by its own task: tunnel ports through OVSDB, flows through
OpenFlow, only the difference. The controller never knows whether a switch is a lab or a
real hypervisor: it only has OVSDB endpoints and accepts OpenFlow connections.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from hypetunnel.compiler.compile import FabricCompiler
from hypetunnel.compiler.from_intent import sync_topology
from hypetunnel.compiler.topology import Topology
from hypetunnel.controller.bindings import BindingTable
from hypetunnel.controller.ha import Election, HaConfig, NotActive, Role, StandbyStore
from hypetunnel.controller.installation import PortInstallation, WaitingPort
from hypetunnel.controller.mobility import Mobility
from hypetunnel.controller.reconciler import FlowReconciler
from hypetunnel.controller.service import FabricService
from hypetunnel.controller.switch import SwitchState, datapath_id_for
from hypetunnel.model.intent import Intent, vm_id
from hypetunnel.southbound.observation import SwitchObservation
from hypetunnel.southbound.openflow.channel import SwitchChannel
from hypetunnel.southbound.openflow.server import OpenFlowServer
from hypetunnel.southbound.ovsdb.client import OvsdbClient
from hypetunnel.store.base import Store

log = logging.getLogger(__name__)


class Controller:
    def __init__(self, store: Store, *, openflow_listen: list[str],
                 switch_targets: list[str] | None = None, bridge: str = "br-int",
                 startup_grace: float = 15.0, ha: HaConfig | None = None) -> None:
        self.openflow_listen = openflow_listen
        # Empty: the switches keep the controller targets enlistment gave them.
        self.switch_targets = switch_targets or []
        self.bridge = bridge
        self.startup_grace = startup_grace
        self.topology = Topology()
        self.compiler = FabricCompiler(self.topology)
        self.bindings_table = BindingTable(self.topology)
        self.mobility = Mobility(self)
        self.installation = PortInstallation()
        self.flow_mods_sent = 0  # flow adds and deletes sent to switches since start
        self._compiled_epoch = 0
        self.switches: dict[str, SwitchState] = {}
        self._by_dpid: dict[int, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._kick = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started_at = time.monotonic()
        self._startup_done = False
        self._of_server = OpenFlowServer(self._on_switch)
        # HA: `store` is the shared (etcd) store; it also holds the election term. Until this
        # controller wins a term its service may read but not write.
        self.ha = ha
        self.store = store
        self.election: Election | None = None
        self._stop_watch: Callable[[], None] | None = None
        if ha is not None:
            self.election = Election(store, ha, on_active=self._became_active,  # type: ignore[arg-type]
                                     on_standby=self._became_standby)
            service_store: Any = StandbyStore(store, store.leader)  # type: ignore[attr-defined]
        else:
            service_store = store
        self.service = FabricService(service_store, on_change=self._on_intent_change)
        self.intent: Intent = self.service.intent

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._kick = asyncio.Event()
        self._apply_intent(self.service.intent)
        for target in self.openflow_listen:
            await self._of_server.listen(target)
        self._spawn(self._worker(), "reconcile-worker")
        self._spawn(self._startup_gate(), "startup-gate")
        self._spawn(self.mobility.watch_failures(), "failure-watch")
        if self.election is not None:
            loop = self._loop
            self._stop_watch = self.store.watch(  # type: ignore[attr-defined]
                lambda: loop.call_soon_threadsafe(self._refresh_intent))
            self._spawn(self.election.run(), "election")

    async def stop(self) -> None:
        if self._stop_watch is not None:
            self._stop_watch()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._of_server.close()
        for st in self.switches.values():
            if st.ovsdb is not None:
                await st.ovsdb.stop()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    # -- high availability ---------------------------------------------------------------------
    @property
    def is_active(self) -> bool:
        return self.election is None or self.election.role is Role.ACTIVE

    @property
    def may_program(self) -> bool:
        """Active and within its lease (see HaConfig.lease): only then do switches hear from us."""
        return self.election is None or self.election.holds_lease()

    def _refresh_intent(self) -> None:
        """Another controller (or our own fenced write) changed the shared store."""
        old = self.service.intent
        before = self.service.revision
        self.service.reload()
        if self.service.revision != before:
            self._on_intent_change(old, self.service.intent)

    async def _became_active(self, term: int) -> None:
        self.service.store = self.store.fenced(term)  # type: ignore[attr-defined]
        await asyncio.to_thread(self._refresh_intent)
        # Take every switch: MASTER with our term as generation id demotes any other master
        # and makes older generations stale; then re-read what is installed (the old active
        # may have changed it) and program only the difference.
        await asyncio.gather(*(self._take_switch(st, term) for st in self.switches.values()))
        self._kick.set()

    async def _take_switch(self, st: SwitchState, term: int) -> None:
        channel, reconciler = st.channel, st.reconciler
        if channel is None or reconciler is None:
            return
        try:
            await channel.set_role("MASTER", term)
            await reconciler.resync()
        except Exception as e:
            st.last_error = f"takeover: {e}"
            log.error("%s: takeover failed: %s", st.hypervisor, e)
        st.pending = True

    async def _became_standby(self, term: int) -> None:
        assert self.election is not None
        self.service.store = StandbyStore(self.store, self.store.leader)  # type: ignore[attr-defined]
        for st in self.switches.values():
            if st.channel is not None:
                try:
                    await st.channel.set_role("SLAVE", term)
                except Exception as e:  # a newer generation exists: we are SLAVE anyway
                    log.info("%s: SLAVE role request: %s", st.hypervisor, e)

    async def failover(self) -> dict[str, Any]:
        if self.election is None:
            raise NotActive("this controller runs without a standby (no --ha)")
        await self.election.step_down()
        return self.election.describe()

    # -- intent ----------------------------------------------------------------------------
    def _on_intent_change(self, old: Intent, new: Intent) -> None:
        # The service may be called from an API worker thread: hop onto the loop.
        if self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._apply_intent(new)
        else:
            self._loop.call_soon_threadsafe(self._apply_intent, new)

    def _apply_intent(self, intent: Intent) -> None:
        self.intent = intent
        self.installation.changed()
        sync_topology(self.topology, intent)
        self.bindings_table.set_intent({vm_id(t.name, v.name): v.hypervisor
                                        for t in intent.tenants for v in t.vms if v.hypervisor})
        wanted = {h.name: h for h in intent.hypervisors}
        for name in [n for n in self.switches if n not in wanted]:
            self._forget_switch(name)
        for hv in intent.hypervisors:
            st = self.switches.get(hv.name)
            if st is None:
                st = self.switches[hv.name] = SwitchState(hv.name)
                self._by_dpid[datapath_id_for(hv.name)] = hv.name
            if st.endpoint != hv.ovsdb:
                self._connect_ovsdb(st, hv.ovsdb)
        self._kick.set()

    def _forget_switch(self, name: str) -> None:
        st = self.switches.pop(name)
        self.installation.forget(name)
        self._by_dpid.pop(datapath_id_for(name), None)
        self.bindings_table.forget(name)
        if st.ovsdb is not None:
            self._spawn(st.ovsdb.stop(), f"ovsdb-stop-{name}")
        if st.channel is not None:
            self._spawn(st.channel.close(), f"of-close-{name}")

    def _connect_ovsdb(self, st: SwitchState, endpoint: str | None) -> None:
        if st.ovsdb is not None:
            self._spawn(st.ovsdb.stop(), f"ovsdb-stop-{st.hypervisor}")
        st.endpoint, st.ovsdb, st.observation = endpoint, None, None
        if endpoint is None:
            return
        hv = st.hypervisor
        client = OvsdbClient(hv, endpoint, bridge=self.bridge,
                             on_change=lambda obs: self._on_observation(hv, obs),
                             on_connection=lambda up: self._on_ovsdb_connection(hv, up))
        st.ovsdb = client
        self._spawn(self._start_ovsdb(st, client), f"ovsdb-{hv}")

    async def _start_ovsdb(self, st: SwitchState, client: OvsdbClient) -> None:
        while st.ovsdb is client:
            try:
                await client.start(timeout=10.0)
                break
            except Exception as e:  # keep trying: a hypervisor may come up after us
                st.last_error = f"ovsdb: {e}"
                log.warning("%s: OVSDB not reachable yet: %s", st.hypervisor, e)
        if st.ovsdb is not client:
            return
        try:
            hv = self.intent.hypervisor(st.hypervisor)
            await client.ensure_bridge(datapath_type=(hv and hv.datapath_type) or "system",
                                       controller_targets=self.switch_targets,
                                       datapath_id=datapath_id_for(st.hypervisor))
        except Exception as e:
            st.last_error = f"ensure_bridge: {e}"
            log.error("%s: cannot configure %s: %s", st.hypervisor, self.bridge, e)
        obs = client.observation
        if obs is not None:
            self._on_observation(st.hypervisor, obs)

    # -- observations ------------------------------------------------------------------------
    def _on_ovsdb_connection(self, hv: str, up: bool) -> None:
        st = self.switches.get(hv)
        if st is not None and not up:
            st.last_error = "ovsdb: connection lost"

    def _on_observation(self, hv: str, obs: SwitchObservation) -> None:
        st = self.switches.get(hv)
        if st is None:
            return
        st.observation = obs
        bindings = obs.bindings()
        self.installation.changed()
        for vid, port in bindings.items():
            if not port.installed:
                self.installation.bound(hv, port.name, vid)
        self.bindings_table.observe(hv, set(bindings))
        st.bound = set(bindings)
        ofports = {name: p.ofport for name, p in obs.ports.items() if p.ofport > 0}
        self.compiler.set_ports(hv, ofports, {vid: p.ofport for vid, p in bindings.items()})
        st.pending = True
        self._kick.set()

    async def _on_switch(self, channel: SwitchChannel) -> None:
        dpid = channel.datapath_id
        hv = self._by_dpid.get(dpid) if dpid is not None else None
        st = self.switches.get(hv) if hv else None
        if st is None:
            log.warning("switch %s (dpid %s) is not an enlisted hypervisor", channel.peer, dpid)
            await channel.close()
            return
        if self.election is not None:
            role = "MASTER" if self.is_active else "SLAVE"
            try:
                await channel.set_role(role, self.election.term)
            except Exception as e:
                log.warning("%s: %s role refused (%s): closing", hv, role, e)
                await channel.close()
                return
        reconciler = FlowReconciler(channel)
        await reconciler.resync()
        st.channel, st.reconciler = channel, reconciler
        st.pending = True
        self._kick.set()
        log.info("%s: OpenFlow connected from %s", hv, channel.peer)
        await channel.wait_closed()
        if st.channel is channel:
            st.channel, st.reconciler = None, None
            log.warning("%s: OpenFlow connection lost", hv)

    # -- reconciliation ----------------------------------------------------------------------
    async def _startup_gate(self) -> None:
        """Hold flow and tunnel programming until every enlisted switch's bindings are known (or
        a grace period passed): programming with half the bindings would delete live flows and
        tunnel ports (re-created ports get new ofports, so every flow using them churns)."""
        deadline = self._started_at + self.startup_grace
        while time.monotonic() < deadline:
            if all(st.ovsdb_synced for st in self.switches.values() if st.endpoint):
                break
            await asyncio.sleep(0.05)
        self._startup_done = True
        # Switches reconciled while the gate was shut did nothing: do them all now.
        for st in self.switches.values():
            st.pending = True
        self._kick.set()

    async def _worker(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            self._compiled_epoch = self.installation.epoch
            for hv in self.compiler.recompute():
                if hv in self.switches:
                    self.switches[hv].pending = True
            if self.installation.waiting:
                # Switches the change did not touch hold this compilation already.
                for st in self.switches.values():
                    if not st.pending and not st.lock.locked() and self.switch_converged(st):
                        self.installation.converged(st.hypervisor, self._compiled_epoch)
                self._mark_installed()
            for st in self.switches.values():
                if st.pending and not st.lock.locked():
                    self._spawn(self._reconcile(st), f"reconcile-{st.hypervisor}")

    async def _reconcile(self, st: SwitchState) -> None:
        async with st.lock:
            while st.pending and self.switches.get(st.hypervisor) is st:
                st.pending = False
                try:
                    await self._reconcile_once(st)
                except Exception as e:
                    st.last_error = str(e)
                    log.error("%s: reconcile failed: %s", st.hypervisor, e)
                    st.pending = True
                    await asyncio.sleep(0.5)  # back off before retrying a failing switch

    async def _reconcile_once(self, st: SwitchState) -> None:
        hv = st.hypervisor
        epoch = self._compiled_epoch
        if not self.is_active:
            return  # a standby keeps its tables computed but never touches a switch
        if not self.may_program:
            # Active, but the term is not confirmed (a pause, a slow store): hold the change
            # until it is, or until we learn that we were deposed.
            st.pending = True
            await asyncio.sleep(self.election.config.term_check_interval if self.election
                                else 0.1)
            return
        if not self._startup_done:
            return
        if st.ovsdb is not None and st.observation is not None:
            tunnels = self.compiler.tunnels(hv)
            if tunnels != st.observation.tunnels:
                await st.ovsdb.ensure_tunnels(tunnels)
        if not (st.ovsdb_synced and st.openflow_ready):
            return
        assert st.reconciler is not None
        diff = await st.reconciler.apply(self.compiler.flows(hv))
        self.flow_mods_sent += diff.added + diff.removed + diff.foreign_removed
        if diff.added or diff.removed or diff.foreign_removed:
            st.programmed_generation += 1
            st.last_flow_push = time.time()
            log.info("%s: +%d -%d flows", hv, diff.added, diff.removed + diff.foreign_removed)
        st.last_error = None
        if self.installation.waiting and self.switch_converged(st):
            self.installation.converged(hv, epoch)
            self._mark_installed()

    # -- port installation (compute waits for it before a hot move's switch-over) -------------
    def _switches_for(self, w: WaitingPort) -> set[str]:
        vm = self.topology.vms.get(w.vm)
        if vm is None:
            return set()
        return {hv for hv, vnis in self.topology.networks_on.items() if vm.vni in vnis}

    def _mark_installed(self) -> None:
        by_switch: dict[str, dict[str, str]] = {}
        for w in self.installation.ready(self._switches_for):
            by_switch.setdefault(w.hypervisor, {})[w.port] = w.vm
        for hv, ports in by_switch.items():
            st = self.switches.get(hv)
            if st is not None and st.ovsdb is not None:
                self._spawn(self._write_installed(st, st.ovsdb, ports), f"installed-{hv}")

    async def _write_installed(self, st: SwitchState, client: OvsdbClient,
                               ports: dict[str, str]) -> None:
        try:
            await client.mark_installed(ports)
        except Exception as e:  # compute then waits out its timeout: packets, not the move
            st.last_error = f"mark installed: {e}"
            log.warning("%s: cannot mark %s installed: %s", st.hypervisor, sorted(ports), e)

    # -- views (RuntimeView for the API) ------------------------------------------------------
    def switch_converged(self, st: SwitchState) -> bool:
        if not (st.ovsdb_synced and st.openflow_ready and st.reconciler is not None):
            return False
        assert st.observation is not None
        return (not st.pending
                and st.reconciler.installed == {f.cookie for f in self.compiler.flows(
                    st.hypervisor)}
                and self.compiler.tunnels(st.hypervisor) == st.observation.tunnels)

    def status(self) -> dict[str, Any]:
        switches = []
        for name in sorted(self.switches):
            st = self.switches[name]
            switches.append({
                "hypervisor": name,
                "ovsdb": st.endpoint,
                "ovsdb_connected": bool(st.ovsdb and st.ovsdb.connected),
                "synced": st.ovsdb_synced,
                "openflow_connected": st.openflow_ready,
                "role": (("MASTER" if self.is_active else "SLAVE") if st.openflow_ready
                         else None),
                "flows": self.compiler.flow_count(name),
                "flows_installed": len(st.reconciler.installed) if st.reconciler else 0,
                "tunnels": len(self.compiler.tunnels(name)),
                "vms_bound": len(st.bound),
                "converged": self.switch_converged(st),
                "generation": st.programmed_generation,
                "last_flow_push": st.last_flow_push,
                "last_error": st.last_error,
            })
        wanted = [f"{t.name}/{v.name}" for t in self.intent.tenants for v in t.vms]
        bound = sum(1 for v in wanted if v in self.topology.location)
        enlisted = [s for s in switches if s["ovsdb"]]
        return {
            "controller": {**(self.election.describe() if self.election else
                              {"role": "active", "term": 0}),
                           "startup_done": self._startup_done,
                           "flow_mods_sent": self.flow_mods_sent},
            "switches": switches,
            "vms": {"total": len(wanted), "bound": bound},
            "converged": (self._startup_done and bool(enlisted)
                          and all(s["converged"] for s in enlisted)),
        }

    def overlay(self) -> dict[str, Any]:
        out = []
        topo = self.topology
        for name in sorted(self.switches):
            vnis = sorted(topo.networks_on.get(name, ()))
            out.append({
                "hypervisor": name,
                "tunnels": [{"name": t.name, "remote": t.remote_hypervisor,
                             "remote_ip": t.remote_ip, "encapsulation": t.encapsulation}
                            for t in sorted(self.compiler.tunnels(name))],
                "networks": [{"vni": v, "tenant": topo.networks[v].tenant,
                              "network": topo.networks[v].name,
                              "encapsulation": topo.networks[v].encapsulation,
                              "local_vms": sorted(vid for vid, h in topo.location.items()
                                                  if h == name and vid in topo.vms
                                                  and topo.vms[vid].vni == v)}
                             for v in vnis if v in topo.networks],
                "flows": self.compiler.flow_count(name),
            })
        return {"hypervisors": out}

    def trace(self, src: str, dst: str, kind: str = "ip") -> dict[str, Any]:
        from hypetunnel.controller.tracing import trace

        return trace(self.topology, self.compiler, src, dst, kind)

    def kick(self) -> None:
        self._kick.set()

    @property
    def startup_done(self) -> bool:
        return self._startup_done

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
        return dict(self.topology.location)
