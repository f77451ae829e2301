"""OVSDB southbound: one OvsdbClient per hypervisor (observe br-int, keep tunnels and bridge)."""

from hypetunnel.southbound.ovsdb.client import OvsdbClient
from hypetunnel.southbound.ovsdb.snapshot import IFACE_ID, TUNNEL_MARKER, TUNNEL_REMOTE

__all__ = ["IFACE_ID", "TUNNEL_MARKER", "TUNNEL_REMOTE", "OvsdbClient"]
