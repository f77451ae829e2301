"""Bring one switch's flow table to a desired set of flows, sending only the difference.

Flow cookies are content hashes (see compiler.flows), so the installed state of a switch is just a
set of cookies: a desired flow whose cookie is installed is already there, byte for byte. After a
reconnect, `resync` re-reads that set from the switch, and an unchanged desired set then costs
zero flow mods: no churn, no reset of flow durations or counters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from hypetunnel.compiler.flows import Flow, is_ours
from hypetunnel.errors import SouthboundError


class FlowChannel(Protocol):
    """What the reconciler needs from a switch connection (SwitchChannel provides it)."""

    async def dump_flow_cookies(self) -> list[int]: ...

    async def send_flow_batch(self, adds: list[Flow], delete_cookies: Iterable[int],
                              atomic: bool = True) -> None: ...

    def is_ready(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class FlowDiff:
    added: int
    removed: int
    foreign_removed: int

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.foreign_removed)


@dataclass(frozen=True, slots=True)
class FlowPlan:
    """What to send: flows to add (in the given order) and cookies to delete."""

    adds: list[Flow]
    stale: list[int]  # ours, no longer desired
    foreign: list[int]  # not ours: somebody else's flow on our bridge

    @property
    def deletes(self) -> list[int]:
        return self.stale + self.foreign

    @property
    def diff(self) -> FlowDiff:
        return FlowDiff(len(self.adds), len(self.stale), len(self.foreign))


def plan_flows(desired: Iterable[Flow], installed: set[int], foreign: set[int]) -> FlowPlan:
    """Pure diff of desired flows against installed cookies.

    Two desired flows with the same OpenFlow identity (table, priority, match) but different
    content would overwrite each other on the switch and flap forever: that is a compiler bug,
    so it is refused here rather than sent.
    """
    wanted: dict[int, Flow] = {}
    keys: dict[tuple[object, ...], Flow] = {}
    for flow in desired:
        if flow.cookie in wanted:
            continue
        other = keys.setdefault(flow.key, flow)
        if other is not flow:
            raise SouthboundError(
                f"two desired flows share table={flow.table} priority={flow.priority} "
                f"match={dict(flow.match)}: {other} vs {flow}")
        wanted[flow.cookie] = flow
    adds = [f for c, f in wanted.items() if c not in installed]
    stale = sorted(c for c in installed if c not in wanted)
    return FlowPlan(adds, stale, sorted(foreign))


class FlowReconciler:
    """Installed-cookie bookkeeping for one switch connection.

    On any failure the bookkeeping is marked stale, so the next `apply` re-reads the switch
    first. A reconciler dies with its channel: create a new one on reconnect.
    """

    def __init__(self, channel: FlowChannel, *, atomic: bool = True) -> None:
        self.channel = channel
        self.atomic = atomic
        self.installed: set[int] = set()
        self.foreign: set[int] = set()
        self.synced = False

    def _check_channel(self) -> None:
        if not self.channel.is_ready():
            raise SouthboundError("switch channel is closed; reconnect and create a new reconciler")

    async def resync(self) -> None:
        """Re-read the switch: our cookies become the installed set, others are marked foreign."""
        self._check_channel()
        self.synced = False
        cookies = await self.channel.dump_flow_cookies()
        self.installed = {c for c in cookies if is_ours(c)}
        self.foreign = {c for c in cookies if not is_ours(c)}
        self.synced = True

    async def apply(self, desired: Iterable[Flow]) -> FlowDiff:
        """Send only what differs; an unchanged desired set sends no message at all."""
        self._check_channel()
        if not self.synced:
            await self.resync()
        plan = plan_flows(desired, self.installed, self.foreign)
        if plan.diff.empty:
            return plan.diff
        self.synced = False  # until the switch confirms the whole batch
        await self.channel.send_flow_batch(plan.adds, plan.deletes, atomic=self.atomic)
        self.installed.difference_update(plan.stale)
        self.installed.update(f.cookie for f in plan.adds)
        self.foreign.clear()
        self.synced = True
        return plan.diff
