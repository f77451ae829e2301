"""A snapshot of the fabric for the monitor, taken on the event loop: plain values only, from
the switch sessions (what they see) and the intent (where VMs belong)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, TypeVar

from hypetunnel.compiler.tunnels import TunnelPort
from hypetunnel.fcaps.watch import FabricView, SwitchView, TunnelEnd
from hypetunnel.model.intent import Intent


class ObservationLike(Protocol):
    @property
    def tunnels(self) -> frozenset[TunnelPort]: ...


class BfdLike(Protocol):
    @property
    def state(self) -> str: ...

    @property
    def forwarding(self) -> bool: ...

    @property
    def diagnostic(self) -> str: ...

    @property
    def flap_count(self) -> int: ...


class UnderlayLike(Protocol):
    @property
    def interface(self) -> str: ...

    @property
    def mtu(self) -> int: ...


class SessionView(Protocol):
    bound: set[str]

    @property
    def openflow_ready(self) -> bool: ...

    @property
    def ovsdb_connected(self) -> bool: ...

    @property
    def observation(self) -> ObservationLike | None: ...

    @property
    def bfd(self) -> Mapping[str, BfdLike]: ...

    @property
    def underlay(self) -> UnderlayLike | None: ...


S = TypeVar("S", bound=SessionView)


def _ends(obs: ObservationLike | None, bfd: Mapping[str, BfdLike]) -> frozenset[TunnelEnd]:
    if obs is None or not bfd:
        return frozenset()
    out = []
    for t in obs.tunnels:
        b = bfd.get(t.name)
        if b is not None:
            out.append(TunnelEnd(t.remote_hypervisor, t.encapsulation, b.forwarding,
                                 b.forwarding or b.flap_count > 0, b.state, b.diagnostic))
    return frozenset(out)


def fabric_view(sessions: Iterable[tuple[str, S]], intent: Intent,
                converged: Callable[[S], bool]) -> FabricView:
    switches = {}
    for name, st in sessions:
        obs = st.observation
        tunnels = frozenset(t.remote_hypervisor for t in obs.tunnels) if obs else frozenset()
        link = st.underlay
        switches[name] = SwitchView(st.openflow_ready, st.ovsdb_connected, frozenset(st.bound),
                                    tunnels, converged(st), _ends(obs, st.bfd),
                                    (link.interface, link.mtu) if link is not None else None)
    return FabricView(
        underlay_mtu=intent.fabric.underlay_mtu,
        switches=switches,
        placement={f"{t.name}/{v.name}": v.hypervisor for t in intent.tenants for v in t.vms},
        networks=frozenset(f"{t.name}/{n.name}" for t in intent.tenants for n in t.networks))
