"""VM moves as a managed workflow: validated, recorded, followed to the end, measured.

A move changes where the intent places a VM and writes a move record in the same commit
(sequence number per VM: the newest move wins). The compute side (Nova; in the lab, the lab
agent) then moves the VM: hot = the running VM's port is plugged at the destination before the
old one goes; cold = stopped, moved, started. The controller follows the VM's bindings and
records the end and the measured interruption of its network: the time from the old port going
to the destination's flows being installed (0 when both ends were live during the switchover).
"""

from __future__ import annotations

import time
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
               "end": None, "interruption_ms": None, "result": "running"}
        records[record_key(vm, seq)] = rec
        out.append(rec)
    try:
        service.apply(plan_moves(base, moves), records=records)
    except IntentInvalid as e:  # e.g. the destination is full: say it about the move
        raise IntentInvalid([FieldError("to", f"{err.path}: {err.reason}")
                             for err in e.errors]) from e
    return out


def finish(service: FabricService, rec: dict[str, Any]) -> None:
    service.put_records({record_key(rec["vm"], int(rec["seq"])): rec})
