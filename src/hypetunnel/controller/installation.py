"""When is a newly bound port's network ready? (OVN's `ovn-installed`, Nova's vif-plugged.)

A VM port that appears on a switch is *installed* once every switch that carries its network
has been reconciled, to convergence, with a desired state compiled after the port was seen:
its own switch (classification, local delivery, ARP answers) and every peer hosting the VNI
(unicast and flood towards it). The controller then marks the port in that hypervisor's OVSDB,
and compute switches a migrating VM over only after the mark: the VM never sends into a
switch that does not know it yet, and nobody sends to the old copy alone.

Epochs order the two facts: every change of observed or intended state bumps the epoch; a
reconcile records the epoch its compilation reflected; a port seen at epoch E is installed when
all its switches have converged at an epoch >= E.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WaitingPort:
    hypervisor: str
    port: str
    vm: str  # the VM id bound to the port (its iface-id)
    seen_at: int  # epoch of the observation that reported it


class PortInstallation:
    def __init__(self) -> None:
        self.epoch = 0
        self._waiting: dict[tuple[str, str], WaitingPort] = {}
        self._converged_at: dict[str, int] = {}

    def changed(self) -> None:
        """Observed or intended state changed: later compilations reflect it."""
        self.epoch += 1

    def bound(self, hypervisor: str, port: str, vm: str) -> None:
        key = (hypervisor, port)
        current = self._waiting.get(key)
        if current is None or current.vm != vm:
            self._waiting[key] = WaitingPort(hypervisor, port, vm, self.epoch)

    def forget(self, hypervisor: str) -> None:
        self._converged_at.pop(hypervisor, None)
        for key in [k for k in self._waiting if k[0] == hypervisor]:
            del self._waiting[key]

    @property
    def waiting(self) -> bool:
        return bool(self._waiting)

    def converged(self, hypervisor: str, compiled_epoch: int) -> None:
        """`hypervisor` holds exactly the desired state compiled at `compiled_epoch`."""
        if compiled_epoch > self._converged_at.get(hypervisor, -1):
            self._converged_at[hypervisor] = compiled_epoch

    def ready(self, switches_for: Callable[[WaitingPort], Iterable[str]]) -> list[WaitingPort]:
        """Ports whose every switch has converged since the port was seen; they stop waiting."""
        done = [w for w in self._waiting.values()
                if all(self._converged_at.get(hv, -1) >= w.seen_at
                       for hv in {w.hypervisor, *switches_for(w)})]
        for w in done:
            del self._waiting[(w.hypervisor, w.port)]
        return done
