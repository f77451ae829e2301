"""Where each VM's port is: switch reports reconciled with the intent (MAC mobility).

Every switch reports the VM ports it has (external_ids:iface-id). Usually a VM is seen in one
place. During a hot move it is seen in two: the destination port is plugged before the old one
goes (make-before-break), and both are live until then, so frames go to both. A port that
shows up somewhere the intent does not place the VM, while the VM is live where the intent
places it, is a late event from an old location and is ignored: the intent's placement is the
newest move (the revision of the store orders moves, like EVPN's MAC-mobility sequence).
"""

from __future__ import annotations

import logging
from collections import defaultdict

from hypetunnel.compiler.topology import Topology

log = logging.getLogger(__name__)


class BindingTable:
    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.seen: dict[str, set[str]] = defaultdict(set)  # vm id -> hypervisors reporting it
        self.intended: dict[str, str] = {}  # vm id -> hypervisor the intent places it on
        self._at: dict[str, set[str]] = {}  # hypervisor -> vm ids it reports
        self.ignored: dict[str, str] = {}  # vm id -> hypervisor whose report is ignored
        self.moving: set[str] = set()  # running VMs the intent has placed elsewhere since

    def observe(self, hypervisor: str, vm_ids: set[str]) -> None:
        """The full set of VM ports one switch reports now."""
        before = self._at.get(hypervisor, set())
        self._at[hypervisor] = set(vm_ids)
        for vid in before - vm_ids:
            self.seen[vid].discard(hypervisor)
            self._place(vid)
        for vid in vm_ids - before:
            self.seen[vid].add(hypervisor)
            self._place(vid)

    def forget(self, hypervisor: str) -> None:
        self.observe(hypervisor, set())
        self._at.pop(hypervisor, None)

    def set_intent(self, intended: dict[str, str]) -> None:
        for vid in [v for v in self.intended if v not in intended]:
            del self.intended[vid]
            self._place(vid)
        for vid, hv in intended.items():
            if self.intended.get(vid) != hv:
                self.intended[vid] = hv
                if self.seen.get(vid) and hv not in self.seen[vid]:
                    self.moving.add(vid)  # a move was asked for a running VM
                self._place(vid)
        # A VM re-created by the intent lost its location in the topology: restore it.
        for vid, hvs in self.seen.items():
            if hvs and vid not in self.topology.location and vid in self.topology.vms:
                self._place(vid)

    def _place(self, vid: str) -> None:
        seen = self.seen.get(vid, set())
        topo = self.topology
        previous = topo.location.get(vid)
        intended = self.intended.get(vid)
        self.ignored.pop(vid, None)
        # Make-before-break: while a running VM is meant to move, its destination is prepared
        # as a host of its network (tunnels, flood lists) before its port appears there.
        if intended in seen or not seen:
            self.moving.discard(vid)  # arrived (or stopped): the move is over
        topo.expect(vid, intended if vid in self.moving else None)
        if not seen:
            topo.set_secondary(vid, None)
            topo.bind(vid, None)
            return
        secondary = None
        if intended in seen:
            primary = intended
            if previous in seen and previous != intended:
                secondary = previous  # the move's old end, live until its port goes
            elif topo.secondary.get(vid) in seen and topo.secondary.get(vid) != intended:
                secondary = topo.secondary.get(vid)
            for hv in seen - {primary, secondary}:
                self.ignored[vid] = hv
                log.warning("ignoring %s on %s: a late report; the VM lives on %s", vid, hv,
                            primary)
        else:
            primary = previous if previous in seen else min(seen)
        topo.bind(vid, primary)
        topo.set_secondary(vid, secondary)
