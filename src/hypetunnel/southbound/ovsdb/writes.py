"""Desired state -> OVSDB edits, composed inside one IDL transaction.

Every edit here is conditional: a column is written only when it differs from what the IDL
replica holds, so a second call with the same desire leaves the transaction empty and nothing
is sent to ovsdb-server. Set/map columns that other clients also edit (Bridge.ports,
other_config, external_ids) are changed with mutations, never rewritten whole, so a concurrent
`ovs-vsctl add-port` is never lost.

These functions run on the IDL thread only (they read and write the IDL replica).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hypetunnel.compiler.tunnels import TunnelPort
from hypetunnel.errors import SouthboundError
from hypetunnel.southbound.ovsdb.snapshot import (
    IFACE_ID,
    INSTALLED,
    TUNNEL_MARKER,
    TUNNEL_REMOTE,
    find_bridge,
    is_our_tunnel,
    optional,
)

ENCAPSULATIONS = frozenset({"vxlan", "gre", "geneve"})
CONTROLLER_MAX_BACKOFF_MS = 1000
CONTROLLER_INACTIVITY_PROBE_MS = 5000


def tunnel_options(t: TunnelPort) -> dict[str, str]:
    # key=flow: the VNI / GRE key is set per packet by flows, one port serves every network.
    return {"remote_ip": t.remote_ip, "key": "flow"}


def tunnel_external_ids(t: TunnelPort) -> dict[str, str]:
    return {TUNNEL_MARKER: "true", TUNNEL_REMOTE: t.remote_hypervisor}


@dataclass(frozen=True, slots=True)
class TunnelDiff:
    add: tuple[TunnelPort, ...] = ()
    fix: tuple[TunnelPort, ...] = ()
    remove: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.add or self.fix or self.remove)


def tunnel_matches(iface: Any, t: TunnelPort) -> bool:
    ext = dict(iface.external_ids)
    return (iface.type == t.encapsulation and dict(iface.options) == tunnel_options(t)
            and dict(iface.bfd) == dict(t.bfd)
            and all(ext.get(k) == v for k, v in tunnel_external_ids(t).items()))


def diff_tunnels(interfaces: Iterable[Any], desired: Iterable[TunnelPort]) -> TunnelDiff:
    """Compare the bridge's interfaces (ours and foreign) with the desired tunnel ports.

    Raises SouthboundError for an unknown encapsulation, two desires for one name, or a
    desired name already used by a port we do not own (we never take a foreign port over).
    """
    wanted: dict[str, TunnelPort] = {}
    for t in desired:
        if t.encapsulation not in ENCAPSULATIONS:
            raise SouthboundError(f"tunnel {t.name}: unknown encapsulation {t.encapsulation!r}")
        if wanted.setdefault(t.name, t) != t:
            raise SouthboundError(f"tunnel {t.name} desired twice with different settings")
    ours = {i.name: i for i in interfaces if is_our_tunnel(dict(i.external_ids))}
    foreign = {i.name for i in interfaces} - ours.keys()
    clash = sorted(foreign & wanted.keys())
    if clash:
        raise SouthboundError(f"tunnel ports {clash} clash with ports HypeTunnel does not own")
    add = tuple(t for n, t in sorted(wanted.items()) if n not in ours)
    fix = tuple(t for n, t in sorted(wanted.items())
                if n in ours and not tunnel_matches(ours[n], t))
    remove = tuple(sorted(ours.keys() - wanted.keys()))
    return TunnelDiff(add=add, fix=fix, remove=remove)


def _bridge_or_fail(idl: Any, bridge_name: str) -> Any:
    bridge = find_bridge(idl.tables["Bridge"].rows.values(), bridge_name)
    if bridge is None:
        raise SouthboundError(f"bridge {bridge_name} does not exist (call ensure_bridge first)")
    return bridge


def _write_tunnel(iface: Any, t: TunnelPort) -> None:
    if iface.type != t.encapsulation:
        iface.type = t.encapsulation
    if dict(iface.options) != tunnel_options(t):
        iface.options = tunnel_options(t)
    if dict(iface.bfd) != dict(t.bfd):
        iface.bfd = dict(t.bfd)
    ext = dict(iface.external_ids)
    for k, v in tunnel_external_ids(t).items():
        if ext.get(k) != v:
            iface.setkey("external_ids", k, v)


def apply_tunnels(idl: Any, txn: Any, bridge_name: str, desired: Iterable[TunnelPort]) -> bool:
    """Stage the edits making our tunnel ports equal to `desired`; True if any were staged."""
    bridge = _bridge_or_fail(idl, bridge_name)
    port_of = {i.name: p for p in bridge.ports for i in p.interfaces}
    iface_of = {i.name: i for p in bridge.ports for i in p.interfaces}
    diff = diff_tunnels(iface_of.values(), desired)
    for t in diff.add:
        # A freshly inserted row has no readable columns yet: write every column outright.
        iface = txn.insert(idl.tables["Interface"])
        iface.name = t.name
        iface.type = t.encapsulation
        iface.options = tunnel_options(t)
        iface.bfd = dict(t.bfd)
        iface.external_ids = tunnel_external_ids(t)
        port = txn.insert(idl.tables["Port"])
        port.name = t.name
        port.interfaces = [iface]
        bridge.addvalue("ports", port)
    for t in diff.fix:
        _write_tunnel(iface_of[t.name], t)
    for name in diff.remove:
        # Port and Interface are not root tables: dropping the reference garbage-collects both.
        bridge.delvalue("ports", port_of[name])
    return not diff.empty


@dataclass(frozen=True, slots=True)
class BridgeSpec:
    name: str
    datapath_type: str
    controller_targets: tuple[str, ...]
    datapath_id: int | None = None

    def other_config(self) -> dict[str, str]:
        wanted = {"disable-in-band": "true"}
        if self.datapath_id is not None:
            if not 0 <= self.datapath_id < 1 << 64:
                raise SouthboundError(f"datapath_id {self.datapath_id:#x} is not 64-bit")
            wanted["datapath-id"] = f"{self.datapath_id:016x}"
        return wanted


def _new_controller(idl: Any, txn: Any, target: str) -> Any:
    ctl = txn.insert(idl.tables["Controller"])
    ctl.target = target
    ctl.max_backoff = [CONTROLLER_MAX_BACKOFF_MS]
    ctl.inactivity_probe = [CONTROLLER_INACTIVITY_PROBE_MS]
    return ctl


def _create_bridge(idl: Any, txn: Any, spec: BridgeSpec) -> None:
    """A bridge as `ovs-vsctl add-br` makes it (with its own internal port of the same name),
    every column written outright since a freshly inserted row has nothing to compare with."""
    name = spec.name
    iface = txn.insert(idl.tables["Interface"])
    iface.name = name
    iface.type = "internal"
    port = txn.insert(idl.tables["Port"])
    port.name = name
    port.interfaces = [iface]
    bridge = txn.insert(idl.tables["Bridge"])
    bridge.name = name
    bridge.ports = [port]
    bridge.datapath_type = spec.datapath_type
    bridge.fail_mode = ["secure"]
    bridge.protocols = ["OpenFlow13"]
    bridge.controller = [_new_controller(idl, txn, t) for t in spec.controller_targets]
    bridge.other_config = spec.other_config()
    root = next(iter(idl.tables["Open_vSwitch"].rows.values()), None)
    if root is None:  # database never initialised (no `ovs-vsctl init`)
        root = txn.insert(idl.tables["Open_vSwitch"])
        root.bridges = [bridge]
    else:
        root.addvalue("bridges", bridge)


def _ensure_controllers(idl: Any, txn: Any, bridge: Any, targets: tuple[str, ...]) -> bool:
    current = {c.target: c for c in bridge.controller}
    changed = False
    for target in targets:
        ctl = current.get(target)
        if ctl is None:
            bridge.addvalue("controller", _new_controller(idl, txn, target))
            changed = True
            continue
        if optional(ctl.max_backoff) != CONTROLLER_MAX_BACKOFF_MS:
            ctl.max_backoff = [CONTROLLER_MAX_BACKOFF_MS]
            changed = True
        if optional(ctl.inactivity_probe) != CONTROLLER_INACTIVITY_PROBE_MS:
            ctl.inactivity_probe = [CONTROLLER_INACTIVITY_PROBE_MS]
            changed = True
    for target, ctl in current.items():
        if target not in targets:
            bridge.delvalue("controller", ctl)
            changed = True
    return changed


def _ensure_map_keys(row: Any, column: str, wanted: Mapping[str, str]) -> bool:
    current = dict(getattr(row, column))
    stale = {k: v for k, v in wanted.items() if current.get(k) != v}
    for k, v in stale.items():
        row.setkey(column, k, v)
    return bool(stale)


def apply_bridge(idl: Any, txn: Any, spec: BridgeSpec) -> bool:
    """Stage the edits making the bridge match `spec`; ports are left alone. True if any."""
    other_config = spec.other_config()
    bridge = find_bridge(idl.tables["Bridge"].rows.values(), spec.name)
    if bridge is None:
        _create_bridge(idl, txn, spec)
        return True
    changed = False
    if bridge.datapath_type != spec.datapath_type:
        bridge.datapath_type = spec.datapath_type
        changed = True
    if optional(bridge.fail_mode) != "secure":
        bridge.fail_mode = ["secure"]
        changed = True
    if set(bridge.protocols) != {"OpenFlow13"}:
        bridge.protocols = ["OpenFlow13"]
        changed = True
    if spec.controller_targets:  # none given: keep what enlistment configured
        changed |= _ensure_controllers(idl, txn, bridge, spec.controller_targets)
    changed |= _ensure_map_keys(bridge, "other_config", other_config)
    return changed


def mark_installed(idl: Any, ports: Mapping[str, str]) -> bool:
    """Set external_ids:hypetunnel-installed=true on each port (name -> the VM id bound to it)
    that still carries that binding; a port deleted or re-bound meanwhile is left alone.
    True if any edit was staged."""
    changed = False
    for iface in idl.tables["Interface"].rows.values():
        vm = ports.get(iface.name)
        if vm is None or dict(iface.external_ids).get(IFACE_ID) != vm:
            continue
        changed |= _ensure_map_keys(iface, "external_ids", {INSTALLED: "true"})
    return changed
