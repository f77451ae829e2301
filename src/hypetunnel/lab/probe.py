"""Real-packet probes between lab VMs: who reaches whom, and who must not.

A pair in the same network must answer pings (ARP through the controller's responder). A pair
across networks or tenants must not: the prober pins the target's real MAC in the source's
neighbour table, so even where the source's own network has a VM with the very same IP, the
frame is aimed at the other tenant's VM, and isolation is what is being tested.

A probe that could not be set up proves nothing: a missing route makes ping fail at once
("Network is unreachable"), which would read as "isolated". So every command a probe runs
is checked, and a set-up or tool failure raises ProbeError instead of giving a verdict.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypetunnel.errors import HypeTunnelError
from hypetunnel.lab.state import LabVM

# ping's exit status: 0 an answer came, 1 none came; anything else (2: it could not send,
# 255: `ip netns exec` failed) means the probe did not run.
PING_ANSWERED, PING_SILENT = 0, 1


class ProbeError(HypeTunnelError):
    """A probe's own set-up or tool failed: no verdict can be given."""


@dataclass(frozen=True)
class ProbeResult:
    src: str
    dst: str
    expected: bool  # True: must reach
    reached: bool | None  # None: not probeable (the target has the source's own address)

    @property
    def ok(self) -> bool:
        return self.reached is None or self.expected == self.reached


async def _run(netns: str, *argv: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of argv run in netns."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns, *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    rc = proc.returncode if proc.returncode is not None else -1
    return rc, out.decode(errors="replace"), err.decode(errors="replace").strip()


async def _must(netns: str, *argv: str) -> str:
    rc, out, err = await _run(netns, *argv)
    if rc != 0:
        raise ProbeError(f"in {netns}: `{' '.join(argv)}` exited {rc}: {err}")
    return out


async def _ping(src: LabVM, dst_ip: str, count: int) -> bool:
    argv = ("ping", "-c", str(count), "-i", "0.2", "-W", "1", "-q", dst_ip)
    rc, _, err = await _run(src.netns, *argv)
    if rc not in (PING_ANSWERED, PING_SILENT):
        raise ProbeError(f"in {src.netns}: `{' '.join(argv)}` could not probe (exit {rc}): "
                         f"{err}")
    return rc == PING_ANSWERED


async def _probe(src: LabVM, dst: LabVM, same_network: bool) -> ProbeResult:
    if same_network:
        # Any of the three answered is success: the first may wait for ARP.
        return ProbeResult(src.vm_id, dst.vm_id, True, await _ping(src, dst.ip, 3))
    if dst.ip == src.ip:
        # A host never sends to its own address: the kernel answers locally. Same-IP isolation
        # is proven by the other pairs, where the source's own network holds the same address.
        return ProbeResult(src.vm_id, dst.vm_id, False, None)
    route = ("ip", "route", "replace", f"{dst.ip}/32", "dev", src.ifname)
    pinned = ("ip", "neigh", "replace", dst.ip, "lladdr", dst.mac, "dev", src.ifname,
              "nud", "permanent")
    try:
        await _must(src.netns, *route)
        await _must(src.netns, *pinned)
        reached = await _ping(src, dst.ip, 2)
    finally:
        # Left behind, either entry would aim this source's later probes at the wrong VM.
        await _cleanup(src, dst)
    return ProbeResult(src.vm_id, dst.vm_id, False, reached)


async def _cleanup(src: LabVM, dst: LabVM) -> None:
    """Remove the probe's route and neighbour entry, and check that they are gone."""
    neigh = (dst.ip, "dev", src.ifname)
    route = (f"{dst.ip}/32", "dev", src.ifname)
    await _run(src.netns, "ip", "neigh", "del", *neigh)  # may be absent: checked below
    await _run(src.netns, "ip", "route", "del", *route)
    # Only a permanent entry is ours: a learned one for the same address (a VM of the
    # source's own network that has it) may come back at any time and is harmless.
    left = ((await _must(src.netns, "ip", "neigh", "show", "nud", "permanent", *neigh)).strip()
            + (await _must(src.netns, "ip", "route", "show", *route)).strip())
    if left:
        raise ProbeError(f"in {src.netns}: the probe's entries for {dst.ip} could not be "
                         f"removed: {left}")


async def probe_matrix(vms: list[LabVM], network_of: dict[str, str]) -> list[ProbeResult]:
    """Probe every ordered pair. Probes from one source run one at a time (they share its
    neighbour table); different sources run in parallel. Raises ProbeError (every failed
    source named) once all sources are done, so no probe is left half set up."""

    async def from_source(src: LabVM) -> list[ProbeResult]:
        out = []
        for dst in vms:
            if dst.vm_id != src.vm_id:
                same = network_of[src.vm_id] == network_of[dst.vm_id]
                out.append(await _probe(src, dst, same))
        return out

    rows = await asyncio.gather(*(from_source(v) for v in vms), return_exceptions=True)
    errors = [r for r in rows if isinstance(r, BaseException)]
    if errors:
        if not all(isinstance(e, ProbeError) for e in errors):
            raise next(e for e in errors if not isinstance(e, ProbeError))
        raise ProbeError("; ".join(str(e) for e in errors))
    return [r for row in rows if not isinstance(row, BaseException) for r in row]
