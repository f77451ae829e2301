"""Pure: tunnel health from the BFD sessions of the tunnel ports (the `tunnel_down` alarm).

A tunnel is the underlay path between two hypervisors, `tunnel/hv1-hv2` (names sorted); each
end has one port per encapsulation, each running BFD. The tunnel is down when an end's session
stops forwarding (BFD detects that in min_rx x mult, 300 ms), judged only while both ends'
hypervisors answer (a lost hypervisor is its own alarm) and only from an end whose OVSDB
answers (otherwise its report is stale). A session that was never up (OVS's flap_count is 0: a
port just created, or an ovs-vswitchd just restarted) has `SETUP_GRACE` to come up first.

Dampening: an alarm stays open at least `DAMPEN` seconds after it was raised, so a flapping
tunnel raises at most one alarm a `DAMPEN`: further downs update it (with their count) and it
clears once forwarding again after that time.

Partition: a hypervisor that answers the controller while every tunnel to its answering peers
is down is cut off from them (`hypervisor_partitioned`). It takes tunnels to two peers at
least: with one, a broken path does not tell which end is cut off.
"""

from __future__ import annotations

from collections.abc import Mapping

from hypetunnel.fcaps.watch import FabricView

KIND = "tunnel_down"
PARTITIONED = "hypervisor_partitioned"
DAMPEN = 60.0  # seconds an alarm stays open at least (one alarm a minute at most)
SETUP_GRACE = 10.0  # seconds a session never up may take to come up


def tunnel_resource(a: str, b: str) -> str:
    x, y = sorted((a, b))
    return f"tunnel/{x}-{y}"


class TunnelHealth:
    def __init__(self, grace: float = SETUP_GRACE) -> None:
        self.grace = grace
        self._unready: dict[tuple[str, str, str], float] = {}  # end never up -> first seen

    def judge(self, view: FabricView, now: float) -> dict[str, str]:
        """The tunnels down now (monotonic `now`): resource -> the alarm's text. Only the
        ends not forwarding cost anything beyond a test (a fabric has many tunnels)."""
        down: dict[str, list[str]] = {}
        seen: set[tuple[str, str, str]] = set()
        for hv, sw in sorted(view.switches.items()):
            if not (sw.ovsdb and sw.up):
                continue
            for end in sw.bfd:
                if end.forwarding:
                    continue
                far = view.switches.get(end.remote)
                if far is None or not far.up:
                    continue
                key = (hv, end.remote, end.encapsulation)
                if not end.established:
                    seen.add(key)
                    if now - self._unready.setdefault(key, now) < self.grace:
                        continue
                why = end.diagnostic or f"state {end.state}"
                down.setdefault(tunnel_resource(hv, end.remote), []).append(
                    f"{hv}->{end.remote} {end.encapsulation} ({why})")
        for key in [k for k in self._unready if k not in seen]:
            del self._unready[key]
        out: dict[str, str] = {}
        for resource, ends in sorted(down.items()):
            text = f"{resource.removeprefix('tunnel/')}: BFD reports the tunnel down: " \
                   f"{', '.join(sorted(ends))}"
            tenants = _tenants_at_both_ends(view.placement, *_ends_of(view, resource))
            if tenants:
                text += f"; tenants with VMs at both ends: {', '.join(tenants)}"
            out[resource] = text
        return out


def reported(view: FabricView, resource: str) -> bool:
    """Whether both ends of the tunnel answer and report its BFD sessions."""
    a, b = _ends_of(view, resource)
    ends = [(view.switches.get(x), y) for x, y in ((a, b), (b, a))]
    return all(sw is not None and sw.up and sw.ovsdb and any(e.remote == y for e in sw.bfd)
               for sw, y in ends)


def _ends_of(view: FabricView, resource: str) -> tuple[str, str]:
    """The two hypervisors of a tunnel (names may hold '-': matched against the view)."""
    name = resource.removeprefix("tunnel/")
    for hv in view.switches:
        rest = name.removeprefix(f"{hv}-")
        if rest != name and rest in view.switches:
            return hv, rest
    return name, name


def _tenants_at_both_ends(placement: Mapping[str, str | None], a: str, b: str) -> list[str]:
    at: dict[str, set[str]] = {a: set(), b: set()}
    for vm, host in placement.items():
        if host in at:
            at[host].add(vm.partition("/")[0])
    return sorted(at[a] & at[b])


def partitioned(view: FabricView, down: Mapping[str, str]) -> dict[str, str]:
    """The hypervisors cut off from every peer (`down`: the tunnels judged down now):
    hypervisor -> the alarm's text."""
    out: dict[str, str] = {}
    for hv, sw in sorted(view.switches.items()):
        if not (sw.up and sw.ovsdb):
            continue
        peers = sorted({e.remote for e in sw.bfd
                        if (far := view.switches.get(e.remote)) is not None and far.up})
        if len(peers) >= 2 and all(tunnel_resource(hv, p) in down for p in peers):
            out[hv] = (f"{hv}: the controller reaches it but none of its {len(peers)} peers "
                       f"does: every tunnel is down by BFD (to {', '.join(peers)})")
    return out
