"""Moves, drain and restart-after-failure, run by the active controller.

The controller decides and records; the compute side moves the VM; the controller follows the
VM's bindings to the end of each move and measures the interruption of its network
(moves.SwitchoverClock).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from hypetunnel.controller import moves
from hypetunnel.controller.service import FabricService
from hypetunnel.errors import FieldError, IntentInvalid
from hypetunnel.model.intent import Intent

log = logging.getLogger(__name__)


class MobilityPort(Protocol):
    """What mobility needs from the running controller, and nothing more."""

    @property
    def is_active(self) -> bool: ...

    @property
    def startup_done(self) -> bool: ...

    @property
    def may_program(self) -> bool:
        """Active and within its lease: only then does it act on what it sees."""
        ...

    def seen(self, vm: str) -> set[str]:
        """Hypervisors reporting a port of `vm` now."""
        ...

    def network_hosts(self, vm: str) -> set[str]:
        """Hypervisors hosting the VM's network: every one must know where the VM is."""
        ...

    def settled(self, hypervisor: str | None) -> bool:
        """The switch holds its desired state (or is not one the controller programs)."""
        ...

    def reachability(self) -> dict[str, bool]:
        """Hypervisors with an OVSDB endpoint -> whether either session answers."""
        ...

    def lose(self, hypervisor: str) -> None:
        """The hypervisor is dead: its VMs are not there any more, whatever it last said."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> object: ...


class Mobility:
    """Store writes (start a move, record its end, drain) run in a thread: the event loop that
    also carries the heartbeats and the switch connections never waits on the store."""

    def __init__(self, service: FabricService, port: MobilityPort, failure_grace: float = 3.0,
                 move_timeout: float = 120.0) -> None:
        self.service = service
        self.port = port
        self.failure_grace = failure_grace
        self.move_timeout = move_timeout
        self._down_since: dict[str, float] = {}
        self._evacuated: set[str] = set()
        self.on_finished: Callable[[dict[str, Any]], None] | None = None  # every move's end

    # -- requests -------------------------------------------------------------------------------
    async def move(self, vm: str, to: str, cold: bool = False) -> dict[str, Any]:
        [rec] = await asyncio.to_thread(moves.start_moves, self.service, [(vm, to)],
                                        "cold" if cold else "hot")
        self._follow(rec)
        return rec

    async def drain(self, hypervisor: str) -> list[dict[str, Any]]:
        """Mark the hypervisor unschedulable and move every VM away (hot), within capacity."""
        def drain() -> list[dict[str, Any]]:
            intent = self._set_schedulable(hypervisor, False)
            return self._evacuate(intent, hypervisor, "hot", exclude={hypervisor})

        recs = await asyncio.to_thread(drain)
        for rec in recs:
            self._follow(rec)
        return recs

    async def undrain(self, hypervisor: str) -> dict[str, Any]:
        await asyncio.to_thread(self._set_schedulable, hypervisor, True)
        return {"hypervisor": hypervisor, "schedulable": True}

    def _set_schedulable(self, hypervisor: str, value: bool) -> Intent:
        svc = self.service
        hv = svc.intent.hypervisor(hypervisor)
        if hv is None:
            raise IntentInvalid([FieldError("hypervisor", f"unknown hypervisor {hypervisor!r}")])
        svc.upsert_hypervisor(hv.model_copy(update={"schedulable": value}))
        return svc.intent

    async def restart_in_place(self, vm: str) -> dict[str, Any] | None:
        """A crashed VM started again where the intent places it: a `restart` record whose
        source and destination are its hypervisor, for the compute side to carry out (cold).
        A restart of it still running is followed, not asked again (after a failover)."""
        try:
            rec = await asyncio.to_thread(moves.start_restart_in_place, self.service, vm)
        except Exception as e:  # deleted meanwhile, or the store: the alarm stays open
            log.error("VM %s crashed and cannot be restarted: %s", vm, e)
            return None
        if rec is not None:
            self._follow(rec)
            log.warning("VM %s crashed: restarting it on %s (move #%s)", vm, rec["to"],
                        rec["seq"])
        return rec

    async def drain_vms(self, hypervisor: str, vms: list[str],
                        avoid: set[str]) -> list[dict[str, Any]]:
        """Move these VMs off the hypervisor (hot) onto none of `avoid` (a partition drain:
        their policy asked for it). The hypervisor is also made unschedulable when the
        fabric's own policy says drain (undrain it once repaired)."""
        from hypetunnel.model.policy import fabric_fault_policy

        def start() -> list[dict[str, Any]]:
            intent = self.service.intent
            if fabric_fault_policy(intent).partition == "drain":
                intent = self._set_schedulable(hypervisor, False)
            return self._evacuate(intent, hypervisor, "hot", exclude={hypervisor, *avoid},
                                  only=set(vms))

        try:
            recs = await asyncio.to_thread(start)
        except Exception as e:
            log.error("%s: its VMs cannot be moved away: %s", hypervisor, e)
            return []
        for rec in recs:
            self._follow(rec)
        return recs

    def _evacuate(self, intent: Intent, hypervisor: str, kind: moves.MoveKind,
                  exclude: set[str], only: set[str] | None = None) -> list[dict[str, Any]]:
        """Start the moves (in the calling thread: it writes the store); the caller follows."""
        from hypetunnel.model.placement import evacuate

        # Every choice counts the ones before it: no destination is ever overfilled.
        plan = sorted(evacuate(intent, hypervisor, exclude=exclude, only=only).items())
        if not plan:
            return []
        return moves.start_moves(self.service, plan, kind, intent=intent)

    # -- following a move ------------------------------------------------------------------------
    def _follow(self, rec: dict[str, Any]) -> None:
        self.port.spawn(self._watch(rec), f"move-{rec['vm']}-{rec['seq']}")

    async def _watch(self, rec: dict[str, Any]) -> None:
        vid, src, dst = rec["vm"], rec["from"], rec["to"]
        # The interruption measurement: moves.SwitchoverClock says why every host of the
        # VM's network counts, not only the destination.
        clock = moves.SwitchoverClock(src, dst)
        if src == dst:  # a restart in place: the port was gone when it was asked for (and
            clock.src_gone = float(rec["start"])  # compute may start it before we look)
        deadline = time.monotonic() + self.move_timeout
        while time.monotonic() < deadline:
            clock.observe(time.time(), self.port.seen(vid),
                          all(self._settled(hv) for hv in self._network_hosts(vid, src, dst)))
            if clock.complete and self._settled(src):
                break
            await asyncio.sleep(0.005)
        rec.update(end=time.time(), result="ok" if clock.complete else "timeout",
                   interruption_ms=clock.interruption_ms(),
                   fabric_ready_lead_ms=clock.lead_ms())
        if self.on_finished is not None:
            self.on_finished(rec)
        log.info("move %s #%s %s -> %s (%s): %s, network interruption %s ms (fabric ready "
                 "%s ms before the old port went)", vid, rec["seq"], src, dst, rec["kind"],
                 rec["result"], rec["interruption_ms"], rec["fabric_ready_lead_ms"])
        if self.port.is_active:
            try:
                await asyncio.to_thread(moves.finish, self.service, rec)
            except Exception as e:
                log.error("cannot record the end of move %s: %s", vid, e)

    def _network_hosts(self, vid: str, src: str, dst: str) -> set[str]:
        """The switches that must know where the VM is: every host of its network."""
        return {src, dst, *self.port.network_hosts(vid)}

    def _settled(self, hv: str | None) -> bool:
        return hv in self._evacuated or self.port.settled(hv)

    # -- restart after a hypervisor failure -----------------------------------------------------
    async def watch_failures(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if not self.port.may_program or not self.port.startup_done:
                continue
            now = time.monotonic()
            dead = set()
            for name, up in self.port.reachability().items():
                if up:
                    self._down_since.pop(name, None)
                    self._evacuated.discard(name)
                    continue
                since = self._down_since.setdefault(name, now)
                if now - since >= self.failure_grace:
                    dead.add(name)
            for name in sorted(dead - self._evacuated):
                self.port.lose(name)
                try:
                    recs = await asyncio.to_thread(self._evacuate, self.service.intent, name,
                                                   "restart", dead)
                except Exception as e:
                    log.error("%s lost, and its VMs cannot be restarted elsewhere: %s", name, e)
                    continue
                self._evacuated.add(name)
                for rec in recs:
                    self._follow(rec)
                    log.warning("hypervisor %s lost: restarting %s on %s (move #%s)", name,
                                rec["vm"], rec["to"], rec["seq"])
