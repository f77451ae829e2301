"""What a switch session needs and whom it tells: the ports between it and the rest.

A session drives a hypervisor's OVSDB through `OvsdbPort` (made by an `OvsdbFactory`, so tests
can put a fake behind it), is told what to install through `DesiredState`, and reports upward
through `SessionEvents`. It imports nothing of the fabric state, the role or the runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol

from hypetunnel.compiler.flows import Flow
from hypetunnel.compiler.tunnels import TunnelPort
from hypetunnel.controller.reconciler import SlicedFlows
from hypetunnel.southbound.observation import BfdStatus, SwitchObservation, UnderlayLink


class OvsdbPort(Protocol):
    """What a session needs from a hypervisor's OVSDB (OvsdbClient provides it)."""

    @property
    def connected(self) -> bool: ...

    @property
    def observation(self) -> SwitchObservation | None: ...

    @property
    def bfd(self) -> Mapping[str, BfdStatus]:
        """Our tunnel ports' BFD sessions by port name."""
        ...

    @property
    def underlay(self) -> UnderlayLink | None:
        """The narrowest interface of the underlay bridge, with its MTU (None: unknown)."""
        ...

    async def start(self, timeout: float = 10.0) -> None: ...

    async def stop(self) -> None: ...

    async def ensure_tunnels(self, desired: frozenset[TunnelPort]) -> bool: ...

    async def ensure_bridge(self, *, datapath_type: str, controller_targets: list[str],
                            datapath_id: int | None = None) -> bool: ...

    async def mark_installed(self, ports: dict[str, str]) -> bool:
        """Tell compute these ports' networks are programmed (port name -> VM id)."""
        ...


# (hypervisor, endpoint, bridge, on_change, on_connection, on_health) -> a client, not
# started yet. on_health: the switch's health report (BFD, underlay) changed.
OvsdbFactory = Callable[[str, str, str, Callable[[SwitchObservation], None],
                         Callable[[bool], None], Callable[[], None]], OvsdbPort]


def real_ovsdb(hypervisor: str, endpoint: str, bridge: str,
               on_change: Callable[[SwitchObservation], None],
               on_connection: Callable[[bool], None],
               on_health: Callable[[], None]) -> OvsdbPort:
    from hypetunnel.southbound.ovsdb.client import OvsdbClient

    return OvsdbClient(hypervisor, endpoint, bridge=bridge, on_change=on_change,
                       on_connection=on_connection, on_health=on_health)


Spawn = Callable[[Coroutine[Any, Any, Any], str], object]  # run a coroutine as a named task


class DesiredState(Protocol):
    """What each switch should hold (the fabric state provides it)."""

    def flows(self, hypervisor: str) -> frozenset[Flow]: ...

    def slices(self, hypervisor: str) -> SlicedFlows:
        """The flows by slice, with what changed since a generation (for an O(change) diff)."""
        ...

    def tunnels(self, hypervisor: str) -> frozenset[TunnelPort]: ...

    def flow_count(self, hypervisor: str) -> int: ...


class SessionEvents(Protocol):
    """What a session reports upward; called on the event loop."""

    def observed(self, hypervisor: str, obs: SwitchObservation) -> None:
        """A new OVSDB snapshot of the switch."""
        ...

    def changed(self, hypervisor: str) -> None:
        """The session changed state: the switch may need reconciling."""
        ...

    def health_changed(self, hypervisor: str) -> None:
        """The switch reported new health (a tunnel's BFD state, the underlay's MTU): not a
        reason to reconcile, a reason for the fault monitor to look now."""
        ...

    def reconciled(self, hypervisor: str) -> None:
        """A reconcile round of the switch succeeded (it may hold its desired state now)."""
        ...

    def flows_added(self, hypervisor: str, flows: Sequence[Flow]) -> None:
        """These flows are about to be sent to the switch (for the accounting)."""
        ...

    def flow_removed(self, hypervisor: str, cookie: int, packets: int, nbytes: int) -> None:
        """The switch deleted a flow; its final counters (for the accounting)."""
        ...

    def packet_in(self, hypervisor: str, frame: bytes, at: float) -> None:
        """The switch sent a frame up (a tunnel latency probe's answer); `at`: its arrival
        on the loop's clock."""
        ...
