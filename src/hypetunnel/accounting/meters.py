"""Which of a switch's desired flows count what: cookie -> meter, pure.

The pipeline (compiler/pipeline.py) already has one flow per thing worth counting, so the
counters come from the flows themselves and no extra table or port-stats read is needed:

- `out` of a VM: its port-security flows in table CLASSIFY (in_port = its port): everything it
  sent that the fabric admitted;
- `in` of a VM: its delivery flows in table L2 (its MAC, output to its port on this switch):
  every unicast frame handed to it. Floods (broadcast, multicast) are shared by a network's
  ports, so they are not any one VM's;
- `dropped` of a network: its source-drop flows (an ARP request for an address nobody in the
  network owns, a frame to an unknown MAC). A frame a VM sends to another tenant's address ends
  there: counted as the sender's network's drop, never as anyone's traffic.

During a hot move a VM has a live port on both hypervisors, and the fabric hands every frame to
both (the switchover loses nothing): its `in` is counted at the destination only, so a frame
counts once; its `out` adds both ends (each sends only while it runs).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass

from hypetunnel.compiler.flows import Flow, Output, Slice
from hypetunnel.compiler.pipeline import P_UNKNOWN_DST, P_UNOWNED_ARP, T_ARP, T_CLASSIFY, T_L2

VM_PRIORITY = 100


@dataclass(frozen=True, slots=True)
class Meter:
    subject: str  # "vm/acme/web1" or "network/acme/blue"
    direction: str  # "in", "out" or "dropped"
    network: str  # "acme/blue": the network the flow serves

    @property
    def key(self) -> str:
        return f"{self.subject}/{self.direction}"


class SwitchMeters:
    """What one switch's flows count, given its VMs' ports and the fabric's networks."""

    def __init__(self, vm_ports: Mapping[str, int], network_of: Callable[[int], str | None],
                 delivered_elsewhere: Container[str] = ()) -> None:
        """vm_ports: VM id -> its OpenFlow port on this switch; network_of: VNI ->
        "tenant/network"; delivered_elsewhere: VMs whose `in` is counted on another switch
        (a move's source end)."""
        self.vm_at = {port: vm for vm, port in vm_ports.items()}
        self.deliver_at = {port: vm for port, vm in self.vm_at.items()
                           if vm not in delivered_elsewhere}
        self.network_of = network_of

    @property
    def key(self) -> tuple[object, ...]:
        """Equal keys, equal meters for the same flows (MeterCache)."""
        return (tuple(sorted(self.vm_at.items())), tuple(sorted(self.deliver_at)))

    def of(self, flows: Iterable[Flow]) -> dict[int, Meter]:
        """cookie -> meter of the flows that count something."""
        out = {}
        for flow in flows:
            meter = self.meter(flow)
            if meter is not None:
                out[flow.cookie] = meter
        return out

    def meter(self, flow: Flow) -> Meter | None:
        if flow.priority not in (VM_PRIORITY, P_UNOWNED_ARP, P_UNKNOWN_DST):
            return None
        match = dict(flow.match)
        vni = flow.metadata if flow.table == T_CLASSIFY else match.get("metadata")
        network = self.network_of(vni) if isinstance(vni, int) else None
        if network is None:
            return None  # a tunnel's ingress, or a network the intent no longer has
        if flow.table == T_CLASSIFY and flow.priority == VM_PRIORITY:
            port = match.get("in_port")
            vm = self.vm_at.get(port) if isinstance(port, int) else None
            if vm is not None and "eth_src" in match:
                return Meter(f"vm/{vm}", "out", network)
            return None
        if flow.table == T_L2 and flow.priority == VM_PRIORITY:
            if not isinstance(match.get("eth_dst"), str):
                return None
            for action in flow.actions:
                if isinstance(action, Output) and action.port in self.deliver_at:
                    return Meter(f"vm/{self.deliver_at[action.port]}", "in", network)
            return None  # to a VM on another hypervisor: counted where it is delivered
        if ((flow.table, flow.priority) in ((T_ARP, P_UNOWNED_ARP), (T_L2, P_UNKNOWN_DST))
                and not flow.actions and flow.goto is None):
            return Meter(f"network/{network}", "dropped", network)
        return None


class MeterCache:
    """Meters per switch and slice, kept while the slice is the same object and the switch's
    VM ports are the same: the compiler rebuilds only the slices a change touches, so a poll
    of a fabric at rest maps nothing again (1.5 million flows at 1,000 switches)."""

    def __init__(self) -> None:
        self._switches: dict[str, tuple[tuple[object, ...],
                                        dict[int, tuple[Slice, dict[int, Meter]]]]] = {}

    def meters(self, switch: str, ctx: SwitchMeters,
               slices: Iterable[tuple[int, Slice]]) -> dict[int, Meter]:
        key = ctx.key
        cached = self._switches.get(switch)
        before = cached[1] if cached is not None and cached[0] == key else {}
        now: dict[int, tuple[Slice, dict[int, Meter]]] = {}
        out: dict[int, Meter] = {}
        for vni, flows in slices:
            hit = before.get(vni)
            m = hit[1] if hit is not None and hit[0] is flows else ctx.of(flows)
            now[vni] = (flows, m)
            out.update(m)
        self._switches[switch] = (key, now)
        return out

    def forget(self, switch: str) -> None:
        self._switches.pop(switch, None)
