"""Pure: what snapshots of the fabric say. `changes` gives the state changes between two
snapshots (the state log); `Faults` tells which standing faults hold now (the alarms to be
open), with a hold time so that a blip raises nothing.

A snapshot is taken on the event loop from the sessions and the intent (monitor.py) and holds
plain values only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hypetunnel.fcaps.events import tenant_of

HOLD = 1.0  # seconds a fault must hold before its alarm is raised


@dataclass(frozen=True, slots=True)
class TunnelEnd:
    """One tunnel port's BFD session, as its hypervisor reports it."""

    remote: str  # the hypervisor at the other end
    encapsulation: str
    forwarding: bool
    established: bool  # the session was up once (OVS's flap_count > 0, or up now)
    state: str = ""
    diagnostic: str = ""


@dataclass(frozen=True, slots=True)
class SwitchView:
    openflow: bool  # the OpenFlow channel is ready
    ovsdb: bool  # OVSDB answers
    ports: frozenset[str] = frozenset()  # VM ids with a port on it (OVSDB's report)
    tunnels: frozenset[str] = frozenset()  # remote hypervisors it has a tunnel port to
    converged: bool = False
    bfd: frozenset[TunnelEnd] = frozenset()  # its tunnel ports' BFD sessions (reported)
    underlay: tuple[str, int] | None = None  # its narrowest underlay interface and MTU

    @property
    def up(self) -> bool:
        return self.openflow or self.ovsdb

    @property
    def healthy(self) -> bool:
        return self.openflow and self.ovsdb


@dataclass(frozen=True, slots=True)
class FabricView:
    switches: Mapping[str, SwitchView] = field(default_factory=dict)
    placement: Mapping[str, str | None] = field(default_factory=dict)  # VM id -> intent's host
    networks: frozenset[str] = frozenset()  # tenant/network
    underlay_mtu: int = 0  # what the fabric's tunnel frames need (the intent's underlay_mtu)


@dataclass(frozen=True, slots=True)
class Change:
    resource: str
    state: str
    cause: str


def _bound(view: FabricView) -> dict[str, str]:
    out: dict[str, str] = {}
    for hv in sorted(view.switches):
        for vm in view.switches[hv].ports:
            out.setdefault(vm, hv)
    return out


def changes(old: FabricView, new: FabricView) -> list[Change]:
    """Every change of state from `old` to `new`, with its cause as far as the snapshots
    tell it."""
    out: list[Change] = []
    for hv in sorted(set(old.switches) | set(new.switches)):
        a, b = old.switches.get(hv), new.switches.get(hv)
        if b is None:
            out.append(Change(f"hypervisor/{hv}", "retired", "left the intent"))
            continue
        if a is None:
            out.append(Change(f"hypervisor/{hv}", "up" if b.up else "down", "enlisted"))
            continue
        if a.up != b.up:
            out.append(Change(f"hypervisor/{hv}", "up" if b.up else "lost",
                              "a session answers again" if b.up
                              else "neither OVSDB nor OpenFlow answers"))
        if a.openflow != b.openflow:
            out.append(Change(f"switch/{hv}", "openflow connected" if b.openflow
                              else "openflow disconnected",
                              "OpenFlow channel ready" if b.openflow
                              else "OpenFlow channel lost"))
        if a.ovsdb != b.ovsdb:
            out.append(Change(f"switch/{hv}", "ovsdb connected" if b.ovsdb
                              else "ovsdb unreachable",
                              "OVSDB answers" if b.ovsdb else "OVSDB connection lost"))
        for remote in sorted(b.tunnels - a.tunnels):
            out.append(Change(f"tunnel/{hv}/{remote}", "up", "tunnel port created"))
        for remote in sorted(a.tunnels - b.tunnels):
            out.append(Change(f"tunnel/{hv}/{remote}", "removed", "tunnel port removed"))
        out += _bfd_changes(hv, a, b)
    for net in sorted(new.networks - old.networks):
        out.append(Change(f"network/{net}", "created", "intent"))
    for net in sorted(old.networks - new.networks):
        out.append(Change(f"network/{net}", "deleted", "intent"))
    was, now = _bound(old), _bound(new)
    for vm in sorted(set(was) | set(now)):
        before, after = was.get(vm), now.get(vm)
        if before == after:
            continue
        if after is not None:
            moved = before is not None
            out.append(Change(f"vm/{vm}", f"bound on {after}",
                              f"moved from {before}" if moved else "port plugged"))
        else:
            placed = new.placement.get(vm, "-")
            cause = ("deleted from the intent" if placed == "-"
                     else f"moving to {placed}" if placed != before
                     else "port gone without a move")
            out.append(Change(f"vm/{vm}", f"unbound from {before}", cause))
    for vm in sorted(set(new.placement) - set(old.placement)):
        out.append(Change(f"vm/{vm}", "created", f"intent places it on {new.placement[vm]}"))
    for vm in sorted(set(old.placement) - set(new.placement)):
        out.append(Change(f"vm/{vm}", "deleted", "intent"))
    return out


def _bfd_changes(hv: str, a: SwitchView, b: SwitchView) -> list[Change]:
    """A session that starts or stops forwarding (a session never up is not "down" yet)."""
    if a.bfd == b.bfd:
        return []
    before = {(e.remote, e.encapsulation): e for e in a.bfd}
    out = []
    for e in sorted(b.bfd, key=lambda e: (e.remote, e.encapsulation)):
        old = before.get((e.remote, e.encapsulation))
        if (old.forwarding if old is not None else False) == e.forwarding:
            continue
        if e.forwarding:
            out.append(Change(f"tunnel/{hv}/{e.remote}", "bfd up",
                              f"{e.encapsulation}: BFD session up"))
        elif old is not None:
            out.append(Change(f"tunnel/{hv}/{e.remote}", "bfd down",
                              f"{e.encapsulation}: {e.diagnostic or 'state ' + e.state}"))
    return out


@dataclass(frozen=True, slots=True)
class Fault:
    resource: str
    kind: str
    text: str
    tenant: str | None = None


class Faults:
    """The standing faults of the latest snapshot that held for `hold` seconds. A VM crash
    needs a memory: the VM's port was seen on the host the intent places it on, and is gone
    from it while that host is healthy (a move changes the intent first; a lost host is the
    hypervisor's alarm, not its VMs')."""

    def __init__(self, hold: float = HOLD) -> None:
        self.hold = hold
        self._since: dict[tuple[str, str], float] = {}
        self._seen_on: dict[str, str] = {}  # VM id -> host its port was last seen on
        self.present: set[tuple[str, str]] = set()  # (resource, kind) found, held or not

    def remember(self, vm: str, host: str) -> None:
        """A crash alarm open from before (another controller's): its port was on `host`."""
        self._seen_on.setdefault(vm, host)

    def update(self, view: FabricView, now: float) -> list[Fault]:
        found: list[Fault] = []
        for hv, sw in sorted(view.switches.items()):
            # Each session's alarm stands for as long as that session is down; losing both
            # adds the hypervisor's (folding them in would clear an alarm whose fault holds).
            if not sw.up:
                found.append(Fault(f"hypervisor/{hv}", "hypervisor_lost",
                                   f"{hv}: neither OVSDB nor OpenFlow answers"))
            if not sw.openflow:
                found.append(Fault(f"switch/{hv}", "switch_disconnected",
                                   f"{hv}: the OpenFlow channel is lost"))
            if not sw.ovsdb:
                found.append(Fault(f"switch/{hv}", "ovsdb_unreachable",
                                   f"{hv}: OVSDB does not answer"))
            elif sw.underlay is not None and sw.underlay[1] < view.underlay_mtu:
                name, mtu = sw.underlay
                found.append(Fault(f"hypervisor/{hv}", "underlay_mtu", (
                    f"{hv}: underlay interface {name} has MTU {mtu}, the fabric needs "
                    f"{view.underlay_mtu} (underlay_mtu): a VM packet within "
                    f"{view.underlay_mtu - mtu} bytes of its MTU does not fit its tunnel and "
                    "is dropped")))
        bound = _bound(view)
        for vm, hv in bound.items():
            self._seen_on[vm] = hv
        for vm in [v for v in self._seen_on if v not in view.placement]:
            del self._seen_on[vm]
        for vm, host in sorted(self._seen_on.items()):
            there = view.switches.get(host)
            if (vm not in bound and view.placement.get(vm) == host and there is not None
                    and there.healthy):
                found.append(Fault(f"vm/{vm}", "vm_crash",
                                   f"{vm}: its port is gone from its hypervisor without a "
                                   "move", tenant_of(f"vm/{vm}")))
        keys = self.present = {(f.resource, f.kind) for f in found}
        for key in [k for k in self._since if k not in keys]:
            del self._since[key]
        for key in keys:
            self._since.setdefault(key, now)
        return [f for f in found if now - self._since[(f.resource, f.kind)] >= self.hold]
