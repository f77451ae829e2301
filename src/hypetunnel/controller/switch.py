"""Per-hypervisor controller state: its OVSDB session, its OpenFlow channel, what was applied."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hypetunnel.controller.reconciler import FlowReconciler
    from hypetunnel.southbound.observation import SwitchObservation
    from hypetunnel.southbound.openflow.channel import SwitchChannel
    from hypetunnel.southbound.ovsdb.client import OvsdbClient


def datapath_id_for(hypervisor: str) -> int:
    """A stable 48-bit datapath id per hypervisor name: the controller sets it on br-int, so it
    knows which switch an OpenFlow connection is before the switch says anything else."""
    return int.from_bytes(hashlib.blake2b(hypervisor.encode(), digest_size=6).digest(), "big")


@dataclass
class SwitchState:
    hypervisor: str
    endpoint: str | None = None
    ovsdb: OvsdbClient | None = None
    observation: SwitchObservation | None = None
    channel: SwitchChannel | None = None
    reconciler: FlowReconciler | None = None
    bound: set[str] = field(default_factory=set)  # VM ids whose port is on this switch
    pending: bool = True  # desired state may differ from what was last applied
    programmed_generation: int = 0  # bumps at every successful flow push (for tests/status)
    last_flow_push: float | None = None
    last_error: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def ovsdb_synced(self) -> bool:
        return self.observation is not None

    @property
    def openflow_ready(self) -> bool:
        return self.channel is not None and self.reconciler is not None and self.channel.is_ready()
