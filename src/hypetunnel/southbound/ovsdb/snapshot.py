"""Turning OVSDB rows into a SwitchObservation: pure code, no connection, no threads.

The builder reads rows through attributes only (name, ports, interfaces, ofport, ...), so the
OVS IDL's Row objects and plain test doubles (SimpleNamespace) are interchangeable. OVSDB
optional columns (min 0, max 1) arrive from the IDL as lists of zero or one element; the
helpers below accept both that and a bare value, so fakes can stay readable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hypetunnel.compiler.tunnels import TunnelPort
from hypetunnel.southbound.observation import (
    BfdStatus,
    PortInfo,
    SwitchObservation,
    UnderlayLink,
)

# external_ids keys on the Interface rows of the tunnel ports HypeTunnel owns.
TUNNEL_MARKER = "hypetunnel-tunnel"
TUNNEL_REMOTE = "hypetunnel-remote"
# external_ids key binding a port to a VM (the OVN/Neutron convention).
IFACE_ID = "iface-id"
# external_ids key the controller sets on a VM's Interface once its network is programmed.
INSTALLED = "hypetunnel-installed"


def optional(value: Any) -> Any:
    """The single value of an optional OVSDB column, or None when it is empty."""
    if isinstance(value, list | tuple | set | frozenset):
        return next(iter(value), None)
    return value


def parse_datapath_id(value: Any) -> int | None:
    """Bridge.datapath_id is 16 hex digits once ovs-vswitchd has assigned it."""
    raw = optional(value)
    if not raw:
        return None
    try:
        return int(str(raw), 16)
    except ValueError:
        return None


def parse_ofport(value: Any) -> int:
    """-1 while unassigned ([]), and also when OVS reports -1 because the port failed."""
    raw = optional(value)
    if raw is None:
        return -1
    try:
        n = int(raw)
    except (TypeError, ValueError):
        return -1
    return n if n > 0 else -1


def is_our_tunnel(external_ids: Mapping[str, str]) -> bool:
    return external_ids.get(TUNNEL_MARKER) == "true"


def tunnel_from_interface(iface: Any) -> TunnelPort | None:
    """Rebuild the TunnelPort we created from its Interface row; None for foreign ports."""
    ext = dict(iface.external_ids)
    if not is_our_tunnel(ext):
        return None
    options = dict(iface.options)
    return TunnelPort(name=iface.name, encapsulation=iface.type,
                      remote_ip=options.get("remote_ip", ""),
                      remote_hypervisor=ext.get(TUNNEL_REMOTE, ""),
                      bfd=tuple(sorted(dict(iface.bfd).items())))


def bfd_status(iface: Any) -> BfdStatus | None:
    """Interface:bfd_status of a port running BFD (None while OVS reports nothing)."""
    status = dict(iface.bfd_status)
    if not status:
        return None
    try:
        flaps = int(status.get("flap_count", "0"))
    except ValueError:
        flaps = 0
    return BfdStatus(state=status.get("state", ""), forwarding=status.get("forwarding") == "true",
                     diagnostic=status.get("diagnostic", ""),
                     remote_state=status.get("remote_state", ""), flap_count=flaps)


def build_bfd(bridge_name: str, bridges: Iterable[Any]) -> dict[str, BfdStatus]:
    """Our tunnel ports' BFD sessions by port name. Kept out of the observation: a BFD state
    change is health, not configuration, and must not start a reconcile round."""
    bridge = find_bridge(bridges, bridge_name)
    if bridge is None:
        return {}
    out: dict[str, BfdStatus] = {}
    for port in bridge.ports:
        for iface in port.interfaces:
            if is_our_tunnel(dict(iface.external_ids)):
                status = bfd_status(iface)
                if status is not None:
                    out[iface.name] = status
    return out


# The bridge that holds the underlay NIC and the tunnel endpoint address, by the fabric's
# convention (the lab and the Ansible collection both build it); a host without it tells
# nothing of its underlay MTU.
UNDERLAY_BRIDGE = "br-phy"


def build_underlay(bridges: Iterable[Any]) -> UnderlayLink | None:
    """The smallest MTU among the underlay bridge's interfaces (its NIC and its internal
    port): what a tunnel frame must fit into. None without that bridge or an MTU yet."""
    bridge = find_bridge(bridges, UNDERLAY_BRIDGE)
    if bridge is None:
        return None
    links = []
    for port in bridge.ports:
        for iface in port.interfaces:
            mtu = optional(iface.mtu)
            if isinstance(mtu, int) and mtu > 0:
                links.append(UnderlayLink(iface.name, mtu))
    return min(links, key=lambda u: (u.mtu, u.interface), default=None)


def port_info(iface: Any) -> PortInfo:
    ext = dict(iface.external_ids)
    return PortInfo(name=iface.name, ofport=parse_ofport(iface.ofport),
                    iface_id=ext.get(IFACE_ID) or None,
                    link_up=optional(iface.link_state) == "up",
                    installed=ext.get(INSTALLED) == "true")


def find_bridge(bridges: Iterable[Any], name: str) -> Any | None:
    return next((b for b in bridges if b.name == name), None)


def build_observation(hypervisor: str, bridge_name: str,
                      bridges: Iterable[Any]) -> SwitchObservation:
    """Snapshot of one bridge; an absent bridge yields an empty observation, not an error."""
    bridge = find_bridge(bridges, bridge_name)
    if bridge is None:
        return SwitchObservation(hypervisor=hypervisor, bridge=bridge_name, datapath_id=None)
    ports: dict[str, PortInfo] = {}
    tunnels: set[TunnelPort] = set()
    for port in bridge.ports:
        for iface in port.interfaces:
            ports[iface.name] = port_info(iface)
            tunnel = tunnel_from_interface(iface)
            if tunnel is not None:
                tunnels.add(tunnel)
    return SwitchObservation(hypervisor=hypervisor, bridge=bridge_name,
                             datapath_id=parse_datapath_id(bridge.datapath_id),
                             ports=dict(sorted(ports.items())), tunnels=frozenset(tunnels))
