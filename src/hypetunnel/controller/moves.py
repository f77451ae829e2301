"""VM moves as a managed workflow: validated, recorded, followed to the end, measured.

A move changes where the intent places a VM and writes a move record in the same commit
(sequence number per VM: the newest move wins). The compute side (Nova; in the lab, the lab
agent) then moves the VM: hot = the running VM's port is plugged at the destination before the
old one goes; cold = stopped, moved, started. The controller follows the VM's bindings and
records the end and the measured interruption of its network (SwitchoverClock).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from hypetunnel.controller.service import FabricService, ObjectNotFound
from hypetunnel.errors import FieldError, IntentInvalid
from hypetunnel.model.intent import Intent
from hypetunnel.model.placement import check_destination

MoveKind = Literal["hot", "cold", "restart"]
PREFIX = "move/"


def record_key(vm: str, seq: int) -> str:
    return f"{PREFIX}{vm}/{seq:06d}"


def all_moves(service: FabricService) -> list[dict[str, Any]]:
    return sorted(service.records(PREFIX).values(), key=lambda r: (r["start"], r["vm"]))


def next_seq(service: FabricService, vm: str) -> int:
    seqs = [int(r["seq"]) for r in service.records(f"{PREFIX}{vm}/").values()]
    return max(seqs, default=0) + 1


def plan_moves(intent: Intent, moves: list[tuple[str, str]]) -> Intent:
    """The intent with each (vm id, destination) applied."""
    dest = dict(moves)
    tenants = []
    for t in intent.tenants:
        vms = [v.model_copy(update={"hypervisor": dest[f"{t.name}/{v.name}"]})
               if f"{t.name}/{v.name}" in dest else v for v in t.vms]
        tenants.append(t.model_copy(update={"vms": vms}))
    return intent.model_copy(update={"tenants": tenants})


def current_host(intent: Intent, vm: str) -> str | None:
    tenant, _, name = vm.partition("/")
    t = intent.tenant(tenant)
    v = next((v for v in t.vms if v.name == name), None) if t else None
    if v is None:
        raise ObjectNotFound(f"tenants/{tenant}/vms/{name}")
    return v.hypervisor


def start_moves(service: FabricService, moves: list[tuple[str, str]], kind: MoveKind,
                intent: Intent | None = None) -> list[dict[str, Any]]:
    """Validate and commit moves (one commit: intent + records). Raises IntentInvalid (bad
    destination, full, same place) or ObjectNotFound; nothing changes then."""
    base = intent or service.intent
    records: dict[str, dict[str, Any]] = {}
    now = time.time()
    out = []
    for vm, to in moves:
        src = current_host(base, vm)
        if kind != "restart" and len(moves) == 1:
            check_destination(vm, base, to)  # a clear error on `to`: unknown, same, drained, full
        if base.hypervisor(to) is None:
            raise IntentInvalid([FieldError("to", f"unknown hypervisor {to!r}")])
        if src == to:
            raise IntentInvalid([FieldError("to", f"{vm} is already on {to}")])
        seq = next_seq(service, vm)
        rec = {"vm": vm, "seq": seq, "from": src, "to": to, "kind": kind, "start": now,
               "end": None, "interruption_ms": None, "fabric_ready_lead_ms": None,
               "result": "running"}
        records[record_key(vm, seq)] = rec
        out.append(rec)
    try:
        service.apply(plan_moves(base, moves), records=records)
    except IntentInvalid as e:  # e.g. the destination is full: say it about the move
        raise IntentInvalid([FieldError("to", f"{err.path}: {err.reason}")
                             for err in e.errors]) from e
    return out


def start_restart_in_place(service: FabricService, vm: str) -> dict[str, Any] | None:
    """Record a restart of `vm` on the hypervisor the intent places it on (the intent does not
    change). None when its newest record is such a restart still running, or it has no
    hypervisor. Raises ObjectNotFound for a VM the intent lacks."""
    host = current_host(service.intent, vm)
    if host is None:
        return None
    mine = service.records(f"{PREFIX}{vm}/")
    newest = max(mine.values(), key=lambda r: int(r["seq"]), default=None)
    if (newest is not None and newest["kind"] == "restart" and newest["from"] == host
            and newest["to"] == host and newest["result"] == "running"):
        return dict(newest)
    seq = max((int(r["seq"]) for r in mine.values()), default=0) + 1
    rec = {"vm": vm, "seq": seq, "from": host, "to": host, "kind": "restart",
           "start": time.time(), "end": None, "interruption_ms": None,
           "fabric_ready_lead_ms": None, "result": "running"}
    service.put_records({record_key(vm, seq): rec})
    return rec


@dataclass
class SwitchoverClock:
    """The part of one move during which the fabric could deliver the VM's frames nowhere.

    The VM can receive at its old port until that port is gone, and at its new one once the
    controller has bound it there AND every switch has installed its flows for that binding
    (a peer whose flows still point at the old hypervisor sends into a void). So:

        interruption = max(0, fabric_ready - src_gone)

    where fabric_ready needs every switch converged, not only the destination's: timing the
    destination alone made the figure 0 by construction under make-before-break, since the
    destination's flows are ready before the old port goes whatever its peers do. It is still
    a control-plane figure: src_gone is when the controller learned of the unplug (OVSDB
    update delay not included) and a frame lost inside a switch is not seen. The lead (how
    long before the old port went the fabric was ready; negative = a gap) is kept alongside,
    so a 0 says by how much it was 0.
    """

    src: str
    dst: str
    src_gone: float | None = None
    fabric_ready: float | None = None

    def observe(self, now: float, seen: set[str], fabric_converged: bool) -> None:
        """One look: where the VM's ports are now, and whether every switch is converged."""
        if self.src_gone is None and self.src not in seen:
            self.src_gone = now
        if self.fabric_ready is None and self.dst in seen and fabric_converged:
            self.fabric_ready = now

    @property
    def complete(self) -> bool:
        return self.src_gone is not None and self.fabric_ready is not None

    def interruption_ms(self) -> float | None:
        if self.src_gone is None or self.fabric_ready is None:
            return None
        return round(max(0.0, self.fabric_ready - self.src_gone) * 1000, 1)

    def lead_ms(self) -> float | None:
        if self.src_gone is None or self.fabric_ready is None:
            return None
        return round((self.src_gone - self.fabric_ready) * 1000, 1)


def finish(service: FabricService, rec: dict[str, Any]) -> None:
    service.put_records({record_key(rec["vm"], int(rec["seq"])): rec})
