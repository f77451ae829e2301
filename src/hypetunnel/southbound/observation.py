"""What a hypervisor's OVSDB tells the controller: observed state, flowing back north."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hypetunnel.compiler.tunnels import TunnelPort


@dataclass(frozen=True, slots=True)
class PortInfo:
    name: str
    ofport: int  # -1 while OVS has not assigned one (or the port failed)
    iface_id: str | None = None  # external_ids:iface-id: the VM id bound to this port
    link_up: bool = True
    # external_ids:hypetunnel-installed: the controller has programmed this port's network on
    # every switch that needs it (OVN's ovn-installed). Compute waits for it before switching
    # a migrating VM over, as Nova waits for network-vif-plugged.
    installed: bool = False


@dataclass(frozen=True, slots=True)
class BfdStatus:
    """Interface:bfd_status of a tunnel port: the BFD session's view of the path."""

    state: str  # admin_down | down | init | up
    forwarding: bool  # the session says the port may carry traffic
    diagnostic: str = ""  # why the local end is not up (e.g. "Control Detection Time Expired")
    remote_state: str = ""
    flap_count: int = 0  # forwarding changes since the session started (>0: it was up once)


@dataclass(frozen=True, slots=True)
class UnderlayLink:
    """The hypervisor's narrowest underlay interface (health, like BFD: no reconcile)."""

    interface: str
    mtu: int


@dataclass(frozen=True, slots=True)
class SwitchObservation:
    """A consistent snapshot of one hypervisor's integration bridge, taken from OVSDB."""

    hypervisor: str
    bridge: str
    datapath_id: int | None
    ports: Mapping[str, PortInfo] = field(default_factory=dict)
    tunnels: frozenset[TunnelPort] = frozenset()  # tunnel ports HypeTunnel created (external_ids)

    def ofport(self, name: str) -> int | None:
        p = self.ports.get(name)
        return p.ofport if p is not None and p.ofport > 0 else None

    def bindings(self) -> dict[str, PortInfo]:
        """VM id -> port, for ports that carry an iface-id and have an OpenFlow port number."""
        return {p.iface_id: p for p in self.ports.values() if p.iface_id and p.ofport > 0}
