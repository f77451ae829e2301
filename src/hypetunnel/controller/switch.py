"""Switch identity: the datapath id the controller gives each hypervisor's integration bridge."""

from __future__ import annotations

import hashlib


def datapath_id_for(hypervisor: str) -> int:
    """A stable 48-bit datapath id per hypervisor name: the controller sets it on br-int, so it
    knows which switch an OpenFlow connection is before the switch says anything else."""
    return int.from_bytes(hashlib.blake2b(hypervisor.encode(), digest_size=6).digest(), "big")
