"""Moves, drain and restart-after-failure, run by the active controller.

The controller decides and records; the compute side moves the VM; the controller follows the
VM's bindings to the end of each move and measures the interruption of its network
(moves.SwitchoverClock).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from hypetunnel.controller import moves
from hypetunnel.errors import FieldError, IntentInvalid

if TYPE_CHECKING:
    from hypetunnel.controller.runtime import Controller

log = logging.getLogger(__name__)


class Mobility:
    def __init__(self, controller: Controller, failure_grace: float = 3.0,
                 move_timeout: float = 120.0) -> None:
        self.ctl = controller
        self.failure_grace = failure_grace
        self.move_timeout = move_timeout
        self._down_since: dict[str, float] = {}
        self._evacuated: set[str] = set()

    # -- requests -------------------------------------------------------------------------------
    async def move(self, vm: str, to: str, cold: bool = False) -> dict[str, Any]:
        [rec] = moves.start_moves(self.ctl.service, [(vm, to)], "cold" if cold else "hot")
        self._follow(rec)
        return rec

    async def drain(self, hypervisor: str) -> list[dict[str, Any]]:
        """Mark the hypervisor unschedulable and move every VM away (hot), within capacity."""
        intent = self._set_schedulable(hypervisor, False)
        return self._evacuate(intent, hypervisor, "hot", exclude={hypervisor})

    async def undrain(self, hypervisor: str) -> dict[str, Any]:
        self._set_schedulable(hypervisor, True)
        return {"hypervisor": hypervisor, "schedulable": True}

    def _set_schedulable(self, hypervisor: str, value: bool) -> Any:
        svc = self.ctl.service
        hv = svc.intent.hypervisor(hypervisor)
        if hv is None:
            raise IntentInvalid([FieldError("hypervisor", f"unknown hypervisor {hypervisor!r}")])
        svc.upsert_hypervisor(hv.model_copy(update={"schedulable": value}))
        return svc.intent

    def _evacuate(self, intent: Any, hypervisor: str, kind: moves.MoveKind,
                  exclude: set[str]) -> list[dict[str, Any]]:
        from hypetunnel.model.placement import evacuate

        # Every choice counts the ones before it: no destination is ever overfilled.
        plan = sorted(evacuate(intent, hypervisor, exclude=exclude).items())
        if not plan:
            return []
        recs = moves.start_moves(self.ctl.service, plan, kind, intent=intent)
        for rec in recs:
            self._follow(rec)
        return recs

    # -- following a move ------------------------------------------------------------------------
    def _follow(self, rec: dict[str, Any]) -> None:
        self.ctl._spawn(self._watch(rec), f"move-{rec['vm']}-{rec['seq']}")

    async def _watch(self, rec: dict[str, Any]) -> None:
        vid, src, dst = rec["vm"], rec["from"], rec["to"]
        table = self.ctl.bindings_table
        # The interruption measurement: moves.SwitchoverClock says why every host of the
        # VM's network counts, not only the destination.
        clock = moves.SwitchoverClock(src, dst)
        deadline = time.monotonic() + self.move_timeout
        while time.monotonic() < deadline:
            clock.observe(time.time(), table.seen.get(vid, set()),
                          all(self._settled(hv) for hv in self._network_hosts(vid, src, dst)))
            if clock.complete and self._settled(src):
                break
            await asyncio.sleep(0.005)
        rec.update(end=time.time(), result="ok" if clock.complete else "timeout",
                   interruption_ms=clock.interruption_ms(),
                   fabric_ready_lead_ms=clock.lead_ms())
        log.info("move %s #%s %s -> %s (%s): %s, network interruption %s ms (fabric ready "
                 "%s ms before the old port went)", vid, rec["seq"], src, dst, rec["kind"],
                 rec["result"], rec["interruption_ms"], rec["fabric_ready_lead_ms"])
        if self.ctl.is_active:
            try:
                moves.finish(self.ctl.service, rec)
            except Exception as e:
                log.error("cannot record the end of move %s: %s", vid, e)

    def _network_hosts(self, vid: str, src: str, dst: str) -> set[str]:
        """The switches that must know where the VM is: every host of its network."""
        topo = self.ctl.bindings_table.topology
        vm = topo.vms.get(vid)
        return {src, dst, *(topo.hosts_of(vm.vni) if vm is not None else ())}

    def _settled(self, hv: str | None) -> bool:
        st = self.ctl.switches.get(hv or "")
        return (st is None or st.endpoint is None or hv in self._evacuated
                or self.ctl.switch_converged(st))

    # -- restart after a hypervisor failure -----------------------------------------------------
    async def watch_failures(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if not self.ctl.may_program or not self.ctl.startup_done:
                continue
            now = time.monotonic()
            dead = set()
            for name, st in list(self.ctl.switches.items()):
                if st.endpoint is None:
                    continue
                up = (st.ovsdb is not None and st.ovsdb.connected) or st.openflow_ready
                if up:
                    self._down_since.pop(name, None)
                    self._evacuated.discard(name)
                    continue
                since = self._down_since.setdefault(name, now)
                if now - since >= self.failure_grace:
                    dead.add(name)
            for name in sorted(dead - self._evacuated):
                # Its VMs are not there any more, whatever its last report said.
                self.ctl.bindings_table.forget(name)
                self.ctl.kick()
                try:
                    recs = self._evacuate(self.ctl.service.intent, name, "restart", exclude=dead)
                except Exception as e:
                    log.error("%s lost, and its VMs cannot be restarted elsewhere: %s", name, e)
                    continue
                self._evacuated.add(name)
                for rec in recs:
                    log.warning("hypervisor %s lost: restarting %s on %s (move #%s)", name,
                                rec["vm"], rec["to"], rec["seq"])
