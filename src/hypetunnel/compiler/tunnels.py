"""Tunnel ports: one OVS port per (remote hypervisor, encapsulation), keyed by flow.

The VNI/GRE key is not a port property (options:key=flow); flows set tunnel_id per packet, so
one port carries every network of that encapsulation to that remote hypervisor.

Every tunnel port runs BFD (RFC 5880, OVS's Interface `bfd` column) so that a broken path is
seen by both ends within min_rx x mult = 300 ms (the OVS default is 1 s x 3): the monitor
turns a session that stops forwarding into a `tunnel_down` alarm. The settings are part of the
desired port, so the controller writes them like the remote address, and only when they differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

_PREFIX = {"vxlan": "vx", "gre": "gr", "geneve": "gn"}

# Interface:bfd of every tunnel port, sorted by key (as the snapshot rebuilds it from the row).
BFD_MIN_RX_MS = 100
BFD_MIN_TX_MS = 100
BFD_MULT = 3
BFD: tuple[tuple[str, str], ...] = (("enable", "true"), ("min_rx", str(BFD_MIN_RX_MS)),
                                    ("min_tx", str(BFD_MIN_TX_MS)), ("mult", str(BFD_MULT)))


@dataclass(frozen=True, slots=True, order=True)
class TunnelPort:
    name: str  # OVS port/interface name on br-int, at most 15 characters
    encapsulation: str  # "vxlan" | "gre" | "geneve" (OVS interface type)
    remote_ip: str
    remote_hypervisor: str
    bfd: tuple[tuple[str, str], ...] = BFD  # Interface:bfd, sorted by key

    def __hash__(self) -> int:
        # Equal ports have equal names, and a str caches its hash: a switch's set of ~100-200
        # tunnels is rebuilt after each change of its networks' hosts.
        return hash(self.name)


def tunnel_port_name(encapsulation: str, remote_ip: str) -> str:
    """Deterministic from the remote address, so every controller names ports alike."""
    return f"{_PREFIX[encapsulation]}{int(IPv4Address(remote_ip)):08x}"


def tunnel_port(encapsulation: str, remote_ip: str, remote_hypervisor: str) -> TunnelPort:
    return TunnelPort(tunnel_port_name(encapsulation, remote_ip), encapsulation, remote_ip,
                      remote_hypervisor)
