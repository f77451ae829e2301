"""The controller's fault monitor: turns what the sessions report into the state log and the
alarm book, audits the switches' flow tables, feeds the webhooks, and acts on faults as the
fault policy says (model/policy.py): a crashed VM restarted after its grace, a partitioned
hypervisor's VMs moved away.

Dependencies point one way: the monitor reads the runtime through `MonitorPort` (snapshots of
plain values, taken on the event loop) and writes only through the recorder (in threads). It
works while this controller may program switches (the active one, after its takeover); when it
becomes active it first loads the book and the log another controller left in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from hypetunnel.fcaps.alarm import Alarm
from hypetunnel.fcaps.cluster import MEMBER_DOWN, QUORUM, ClusterHealth, MemberLike
from hypetunnel.fcaps.events import PREFIX, query
from hypetunnel.fcaps.record import Recorder
from hypetunnel.fcaps.tunnels import DAMPEN, PARTITIONED, TunnelHealth, partitioned, reported
from hypetunnel.fcaps.tunnels import KIND as TUNNEL_DOWN
from hypetunnel.fcaps.watch import HOLD, FabricView, Faults, SwitchView, changes
from hypetunnel.fcaps.webhook import Post, WebhookTarget, http_post
from hypetunnel.model.policy import VmFaultPolicy
from hypetunnel.store.side import SideStore

log = logging.getLogger(__name__)

TICK = 0.25  # seconds between snapshots
# A switch's health report (BFD, underlay) wakes the monitor at once instead of at the next
# tick, but snapshots stay at least this far apart: a storm of reports (an underlay outage
# seen by every switch) costs at most 1/LOOK_GAP snapshots a second.
LOOK_GAP = 0.02
FLOW_AUDIT_INTERVAL = 5.0  # seconds between two reads of every switch's flow table
CLUSTER_INTERVAL = 2.0  # seconds between two probes of every etcd member (HA)
LEVEL_KINDS = ("hypervisor_lost", "switch_disconnected", "ovsdb_unreachable", "vm_crash",
               "underlay_mtu")


class SessionLike(Protocol):
    endpoint: str | None

    @property
    def openflow_ready(self) -> bool: ...

    @property
    def ovsdb_connected(self) -> bool: ...

    async def audit_flows(self) -> tuple[int, int] | None: ...


class MonitorPort(Protocol):
    """What the monitor reads of the runtime (the Controller provides it)."""

    @property
    def may_program(self) -> bool: ...

    def fcaps_view(self) -> FabricView: ...

    def fcaps_sessions(self) -> Iterable[tuple[str, SessionLike]]: ...

    def fcaps_identity(self) -> tuple[str, int, bool]:
        """(this controller's node name, its term, whether it runs as an HA pair)."""
        ...

    def fault_policy(self, vm: str) -> VmFaultPolicy: ...

    async def etcd_members(self) -> Sequence[MemberLike] | None:
        """Every etcd member and whether it answers; None without etcd (nothing to watch)."""
        ...

    def restart_vm(self, vm: str) -> None:
        """Ask the compute side to start the crashed VM again where it is placed (cold); a
        restart already asked for and not finished is not asked again."""
        ...

    def drain_vms(self, hypervisor: str, vms: list[str], avoid: set[str]) -> None:
        """Move these VMs off the hypervisor (hot), onto none of `avoid`."""
        ...


class FaultMonitor:
    def __init__(self, port: MonitorPort, store: SideStore, *, webhooks: Iterable[str] = (),
                 post: Post = http_post, flow_audit_interval: float = FLOW_AUDIT_INTERVAL,
                 tick: float = TICK, hold: float = HOLD, dampen: float = DAMPEN,
                 cluster_interval: float = CLUSTER_INTERVAL,
                 clock: Callable[[], float] = time.time) -> None:
        self.cluster_interval = cluster_interval
        self._port = port
        self._clock = clock
        self.dampen = dampen
        self._store = store
        self.tick = tick
        self.flow_audit_interval = flow_audit_interval
        self.hold = hold
        self.recorder = Recorder(self._write, clock)
        self.recorder.on_alarm_change = self._alarm_changed
        self.webhooks = [WebhookTarget(url, post) for url in webhooks]
        self._wake = asyncio.Event()
        self._look = asyncio.Event()
        self.active = False
        self._view: FabricView | None = None
        self._faults = Faults(hold)
        self._drifted: set[str] = set()  # switches whose drift is being repaired
        self._tunnels = TunnelHealth()
        self._downs: dict[str, int] = {}  # open tunnel alarm -> times it went down
        self._tunnel_down: set[str] = set()  # tunnels judged down at the last snapshot
        self._acted: set[str] = set()  # alarms whose policy action was taken here

    def _write(self, puts: Mapping[str, dict[str, Any]], deletes: Iterable[str]) -> None:
        self._store.side_commit(puts, deletes)

    def _alarm_changed(self) -> None:
        self._wake.set()

    def look_now(self) -> None:
        """A switch reported new health: take the next snapshot now, not at the tick."""
        self._look.set()

    # -- the task ------------------------------------------------------------------------------
    async def run(self) -> None:
        await asyncio.gather(self._watch(), self._audit(), self._cluster(),
                             *(w.run(lambda: self.recorder.events, self._cursor_moved,
                                     self._wake, lambda: self.active)
                               for w in self.webhooks))

    async def _watch(self) -> None:
        while True:
            gap = min(LOOK_GAP, self.tick)
            await asyncio.sleep(gap)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._look.wait(), self.tick - gap)
            self._look.clear()  # what made us look is in the snapshot taken below
            if not self._port.may_program:
                self.active = False
                continue
            if not self.active:
                try:
                    await self._activate()
                except Exception as e:  # the store: try again at the next tick
                    log.warning("cannot load the alarm book: %s", e)
                    continue
            try:
                self.observe(self._port.fcaps_view(), time.monotonic())
            except Exception:  # a bug must not end the monitor: the next tick tries again
                log.exception("fault monitor: a snapshot could not be judged")
            await self.recorder.flush()

    async def _activate(self) -> None:
        records = await asyncio.to_thread(self._store.side_load, PREFIX)
        self.recorder.load(records)
        for w in self.webhooks:
            w.load(records.get(w.key))
        self._view, self._faults = None, Faults(self.hold)
        self._downs = {a.resource: 1 for a in self.recorder.book.open_alarms(TUNNEL_DOWN)}
        self._tunnels, self._tunnel_down = TunnelHealth(), set(self._downs)
        # Drift another controller was repairing clears once the switch converges here.
        self._drifted = {a.resource.removeprefix("switch/")
                         for a in self.recorder.book.open_alarms("flow_drift")}
        view = self._port.fcaps_view()
        for a in self.recorder.book.open_alarms("vm_crash"):
            vm = a.resource.removeprefix("vm/")
            host = view.placement.get(vm)
            if host:
                self._faults.remember(vm, host)
        node, term, ha = self._port.fcaps_identity()
        self.active = True
        self.recorder.state(f"controller/{node}", "active",
                            f"elected for term {term}" if ha else "started")
        if ha and term > 1:
            text = f"{node} took over as the active controller (term {term})"
            self.recorder.raise_alarm(f"controller/{node}", "controller_failover", text)
            self.recorder.clear(f"controller/{node}", "controller_failover", text)
        log.info("fault monitor active: %d alarms open, state log at %d",
                 len(self.recorder.book.open_alarms()), self.recorder.seq)

    def observe(self, view: FabricView, now: float) -> None:
        """One snapshot: its state changes logged, standing faults raised or cleared."""
        rec = self.recorder
        if self._view is not None:
            for c in changes(self._view, view):
                rec.state(c.resource, c.state, c.cause)
        self._view = view
        held = self._faults.update(view, now)
        for f in held:
            rec.raise_alarm(f.resource, f.kind, f.text, f.tenant)
        present = self._faults.present
        for a in rec.book.open_alarms():
            if a.kind in LEVEL_KINDS and (a.resource, a.kind) not in present:
                rec.clear(a.resource, a.kind, _cleared_text(a))
        self._judge_tunnels(view, now)
        self._restart_crashed(view)
        if self._acted:  # only open alarms can be acted on again: forget the cleared ones
            self._acted &= {a.id for a in rec.book.open_alarms()}
        for hv in sorted(self._drifted):
            sw = view.switches.get(hv)
            if sw is None or sw.converged:
                self._drifted.discard(hv)
                alarm = rec.book.open_alarm(f"switch/{hv}", "flow_drift")
                if alarm is not None:
                    rec.clear(alarm.resource, alarm.kind,
                              alarm.text.replace(": repairing", ": repaired"))

    def _judge_tunnels(self, view: FabricView, now: float) -> None:
        """tunnel_down from BFD, dampened: open at least `dampen` seconds, later downs only
        update it (with their count)."""
        rec = self.recorder
        judged = self._tunnels.judge(view, now)
        self._judge_partitions(view, judged)
        for resource, text in judged.items():
            if resource not in self._tunnel_down or resource not in self._downs:
                self._downs[resource] = self._downs.get(resource, 0) + 1
            if self._downs[resource] > 1:
                text += f" (flapping: down {self._downs[resource]} times since raised)"
            rec.raise_alarm(resource, TUNNEL_DOWN, text)
        self._tunnel_down = set(judged)
        wall = self._clock()
        for alarm in rec.book.open_alarms(TUNNEL_DOWN):
            if alarm.resource in judged:
                continue
            name = alarm.resource.removeprefix("tunnel/")
            text = (f"{name}: BFD reports the tunnel forwarding" if reported(view, alarm.resource)
                    else f"{name}: no BFD report (the tunnel was removed, or one of its "
                    "hypervisors does not answer)")
            if wall - alarm.raised >= self.dampen:
                rec.clear(alarm.resource, TUNNEL_DOWN, text)
                self._downs.pop(alarm.resource, None)
            else:
                rec.raise_alarm(alarm.resource, TUNNEL_DOWN,
                                f"{text}; held open (dampening) until {self.dampen:.0f} s "
                                f"after it was raised, down {self._downs.get(alarm.resource, 1)}"
                                " times")

    def _judge_partitions(self, view: FabricView, down: Mapping[str, str]) -> None:
        """hypervisor_partitioned while every tunnel of a hypervisor is down (no dampening:
        it follows the tunnels' BFD judgement), and the drain its VMs' policy asks for."""
        rec = self.recorder
        cut = partitioned(view, down)
        for hv, text in cut.items():
            rec.raise_alarm(f"hypervisor/{hv}", PARTITIONED, text)
        for alarm in rec.book.open_alarms(PARTITIONED):
            hv = alarm.resource.removeprefix("hypervisor/")
            if hv not in cut:
                rec.clear(alarm.resource, PARTITIONED,
                          f"{hv}: no longer cut off from every peer (a tunnel forwards "
                          "again, its VMs left and took its tunnels, or it does not answer)")
                continue
            if alarm.id in self._acted:
                continue
            self._acted.add(alarm.id)
            drain = sorted(vm for vm, host in view.placement.items()
                           if host == hv and self._port.fault_policy(vm).partition == "drain")
            if drain:
                rec.state(alarm.resource, "draining",
                          f"partitioned: {len(drain)} VMs moved away by their fault policy "
                          "(partition: drain)")
                self._port.drain_vms(hv, drain, set(cut))

    def _restart_crashed(self, view: FabricView) -> None:
        """A vm_crash alarm open for its VM's grace: the restart its policy asks for, once
        per alarm (its port coming back clears the alarm)."""
        wall = self._clock()
        for alarm in self.recorder.book.open_alarms("vm_crash"):
            if alarm.id in self._acted:
                continue
            vm = alarm.resource.removeprefix("vm/")
            policy = self._port.fault_policy(vm)
            if policy.vm_crash != "restart" or wall - alarm.raised < policy.restart_grace:
                continue
            if not view.placement.get(vm):
                continue
            self._acted.add(alarm.id)
            self.recorder.state(alarm.resource, "restarting",
                                f"crashed {wall - alarm.raised:.0f} s ago: restarted by its "
                                f"fault policy (vm_crash: restart after "
                                f"{policy.restart_grace} s)")
            self._port.restart_vm(vm)

    async def _audit(self) -> None:
        """Every switch's flow table against what was installed: a difference is drift,
        repaired by the switch's next reconcile round (the alarm clears once converged)."""
        while True:
            await asyncio.sleep(self.flow_audit_interval)
            if not (self.active and self._port.may_program):
                continue
            for hv, st in list(self._port.fcaps_sessions()):
                try:
                    diff = await st.audit_flows()
                except Exception as e:  # the channel went away: its own alarm says so
                    log.debug("%s: flow audit failed: %s", hv, e)
                    continue
                if diff is None or diff == (0, 0):
                    continue
                missing, unexpected = diff
                text = (f"{hv}: {missing} flows missing, {unexpected} unexpected: "
                        "repairing")
                log.warning("%s", text)
                self.recorder.state(f"switch/{hv}", "drifted", text)
                self.recorder.raise_alarm(f"switch/{hv}", "flow_drift", text)
                self._drifted.add(hv)

    async def _cluster(self) -> None:
        """The etcd members' health (fcaps/cluster.py), probed in a thread."""
        health = ClusterHealth()
        while True:
            await asyncio.sleep(self.cluster_interval)
            if not (self.active and self._port.may_program):
                continue
            try:
                members = await self._port.etcd_members()
            except Exception as e:  # no member answers: the store's own alarms say it
                log.debug("etcd members not probed: %s", e)
                continue
            if members is None:
                return  # no etcd: nothing to watch
            self.judge_cluster(health.judge(members))

    def judge_cluster(self, judged: Mapping[tuple[str, str], str]) -> None:
        rec = self.recorder
        for (resource, kind), text in judged.items():
            rec.raise_alarm(resource, kind, text)
        for kind, cleared in ((MEMBER_DOWN, "the member answers again (or left the cluster)"),
                              (QUORUM, "more than a bare majority of the members answer")):
            for alarm in rec.book.open_alarms(kind):
                if (alarm.resource, kind) not in judged:
                    rec.clear(alarm.resource, kind, cleared)

    def _cursor_moved(self, target: WebhookTarget) -> None:
        self.recorder.put(target.key, target.cursor_doc())

    # -- what the API asks ---------------------------------------------------------------------
    async def alarms(self, include_cleared: bool = False) -> list[dict[str, Any]]:
        if self.active:
            alarms = self.recorder.book.all()
        else:  # the standby answers from the store
            records = await asyncio.to_thread(self._store.side_load, PREFIX + "alarm/")
            alarms = sorted((Alarm.from_doc(d) for d in records.values()),
                            key=lambda a: (a.raised, a.id))
        return [a.to_doc() for a in alarms if include_cleared or a.open]

    async def events(self, resource: str | None = None, since: float | None = None,
                     limit: int = 1000) -> list[dict[str, Any]]:
        if self.active:
            events = list(self.recorder.events)
        else:
            events = list((await asyncio.to_thread(self._store.side_load,
                                                   PREFIX + "event/")).values())
        return query(events, resource, since, limit)

    async def ack(self, alarm_id: str) -> dict[str, Any]:
        alarm = self.recorder.ack(alarm_id)
        if not await self.recorder.flush():
            raise OSError("the acknowledgement could not be stored yet (it will be retried)")
        return alarm.to_doc()

    def describe(self) -> dict[str, Any]:
        return {"active": self.active, "open": len(self.recorder.book.open_alarms()),
                "state_log_seq": self.recorder.seq,
                "webhooks": [{"url": w.url, "cursor": w.cursor, "delivered": w.delivered,
                              "failures": w.failures, "last_error": w.last_error}
                             for w in self.webhooks]}


def _cleared_text(alarm: Alarm) -> str:
    return {"hypervisor_lost": "the hypervisor answers again",
            "switch_disconnected": "the OpenFlow channel is back",
            "ovsdb_unreachable": "OVSDB answers again",
            "vm_crash": "the VM's port is back, or the VM moved or was deleted",
            "underlay_mtu": "the underlay MTU fits the fabric again (or OVSDB does not "
                            "answer)"}.get(
                alarm.kind, "")


def switch_view(openflow: bool, ovsdb: bool, ports: Iterable[str], tunnels: Iterable[str],
                converged: bool) -> SwitchView:
    return SwitchView(openflow, ovsdb, frozenset(ports), frozenset(tunnels), converged)
