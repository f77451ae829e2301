"""Real-packet probes between lab VMs: who reaches whom, and who must not.

A pair in the same network must answer pings (ARP through the controller's responder). A pair
across networks or tenants must not: the prober pins the target's real MAC in the source's
neighbour table, so even where the source's own network has a VM with the very same IP, the
frame is aimed at the other tenant's VM, and isolation is what is being tested.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypetunnel.lab.state import LabVM


@dataclass(frozen=True)
class ProbeResult:
    src: str
    dst: str
    expected: bool  # True: must reach
    reached: bool | None  # None: not probeable (the target has the source's own address)

    @property
    def ok(self) -> bool:
        return self.reached is None or self.expected == self.reached


async def _run(netns: str, *argv: str) -> int:
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns, *argv,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    return await proc.wait()


async def _probe(src: LabVM, dst: LabVM, same_network: bool) -> ProbeResult:
    if same_network:
        rc = await _run(src.netns, "ping", "-c", "3", "-i", "0.2", "-W", "1", "-q", dst.ip)
        # Any of the three answered is success: the first may wait for ARP.
        return ProbeResult(src.vm_id, dst.vm_id, True, rc == 0)
    if dst.ip == src.ip:
        # A host never sends to its own address: the kernel answers locally. Same-IP isolation
        # is proven by the other pairs, where the source's own network holds the same address.
        return ProbeResult(src.vm_id, dst.vm_id, False, None)
    pinned = [("ip", "neigh", "replace", dst.ip, "lladdr", dst.mac, "dev", src.ifname,
               "nud", "permanent")]
    route = ("ip", "route", "replace", f"{dst.ip}/32", "dev", src.ifname)
    for argv in (route, *pinned):
        await _run(src.netns, *argv)
    try:
        rc = await _run(src.netns, "ping", "-c", "2", "-i", "0.2", "-W", "1", "-q", dst.ip)
    finally:
        await _run(src.netns, "ip", "neigh", "del", dst.ip, "dev", src.ifname)
        await _run(src.netns, "ip", "route", "del", f"{dst.ip}/32", "dev", src.ifname)
    return ProbeResult(src.vm_id, dst.vm_id, False, rc == 0)


async def probe_matrix(vms: list[LabVM], network_of: dict[str, str]) -> list[ProbeResult]:
    """Probe every ordered pair. Probes from one source run one at a time (they share its
    neighbour table); different sources run in parallel."""

    async def from_source(src: LabVM) -> list[ProbeResult]:
        out = []
        for dst in vms:
            if dst.vm_id != src.vm_id:
                same = network_of[src.vm_id] == network_of[dst.vm_id]
                out.append(await _probe(src, dst, same))
        return out

    rows = await asyncio.gather(*(from_source(v) for v in vms))
    return [r for row in rows for r in row]
