"""Bring one switch's flow table to a desired set of flows, sending only the difference.

Flow cookies are content hashes (see compiler.flows), so the installed state of a switch is just a
set of cookies: a desired flow whose cookie is installed is already there, byte for byte. After a
reconnect, `resync` re-reads that set from the switch, and an unchanged desired set then costs
zero flow mods: no churn, no reset of flow durations or counters.

Two ways in: `apply(flows)` diffs a whole desired set (O(flows of the switch)); `apply_slices`
takes the compiler's sliced view and, once a first full diff has made the switch equal to the
desired state, diffs only the slices that changed since (O(the change)).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from hypetunnel.compiler.flows import COOKIE_PREFIX, COOKIE_SHIFT, Flow
from hypetunnel.compiler.gcpolicy import long_lived_allocations
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


class SlicedFlows(Protocol):
    """A switch's desired flows as slices plus a change journal (compiler.SwitchSlices). A
    slice holds distinct flows (a tuple or a set)."""

    @property
    def source(self) -> object: ...

    @property
    def generation(self) -> int: ...

    def changed_since(self, generation: int) -> Iterable[int]: ...

    def slice(self, key: int) -> Collection[Flow]: ...

    def items(self) -> Iterable[tuple[int, Collection[Flow]]]: ...


FlowKey = tuple[int, int, tuple[object, ...]]


class DesiredIndex:
    """The union of a switch's desired slices, kept by cookie, updated slice by slice.

    Refcounted, so a flow in two slices stays desired until both drop it, and keyed by OpenFlow
    identity, so two contents for one (table, priority, match) are refused as plan_flows does.
    Only what the diff needs is kept (cookie -> references, identity -> cookie): the flows
    themselves stay in the slices.
    """

    def __init__(self) -> None:
        self.slices: dict[int, Collection[Flow]] = {}  # the compiler's own, never copied
        self.refs: dict[int, int] = {}  # cookie -> number of slices that want it
        self._keys: dict[FlowKey, int] = {}  # flow identity -> cookie

    @classmethod
    def of(cls, slices: Iterable[tuple[int, Collection[Flow]]]) -> DesiredIndex:
        index = cls()
        # Built once per switch (start, takeover, resync) and kept: like the compiled slices,
        # long-lived and acyclic, so the cyclic GC need not scan it (see compiler.gcpolicy).
        with long_lived_allocations():
            index.update(dict(slices))
        return index

    def flows(self) -> Iterator[Flow]:
        """Every desired flow once."""
        seen: set[int] = set()
        for flows in self.slices.values():
            for f in flows:
                if f.cookie not in seen:
                    seen.add(f.cookie)
                    yield f

    def update(self, changes: Mapping[int, Collection[Flow]]) -> tuple[list[Flow], list[int]]:
        """Replace these slices (empty = gone). Returns (flows that became desired, cookies that
        stopped being desired). On SouthboundError the index is unusable: build a new one."""
        gone: list[Flow] = []
        came: list[Flow] = []
        for key, new in changes.items():
            old = self.slices.get(key, ())
            if old is new:
                continue
            if not old:  # a first slice (index built from scratch, or a new network here)
                came.extend(new)
            elif not new:
                gone.extend(old)
            else:  # by cookie (cached on the flow), not by the flow's hash (its whole content)
                olds = {f.cookie: f for f in old}
                news = {f.cookie: f for f in new}
                gone.extend(f for c, f in olds.items() if c not in news)
                came.extend(f for c, f in news.items() if c not in olds)
            if new:
                self.slices[key] = new
            else:
                self.slices.pop(key, None)
        # Drops first, so a flow replaced in place (same identity, new content) frees its key.
        dropped = [c for f in gone if (c := self._drop(f)) is not None]
        added = [f for f in came if self._add(f)]
        # A flow that moved between slices was dropped and re-added: for the switch, no change.
        was_there = set(dropped)
        return ([f for f in added if f.cookie not in was_there],
                [c for c in dropped if c not in self.refs])

    def _add(self, flow: Flow) -> bool:
        c = flow.cookie
        n = self.refs.get(c)
        if n is not None:
            self.refs[c] = n + 1
            return False
        key = flow.key
        other = self._keys.get(key)
        if other is not None:
            them = next(f for f in self.flows() if f.cookie == other)
            raise SouthboundError(
                f"two desired flows share table={flow.table} priority={flow.priority} "
                f"match={dict(flow.match)}: {them} vs {flow}")
        self._keys[key] = c
        self.refs[c] = 1
        return True

    def _drop(self, flow: Flow) -> int | None:
        c = flow.cookie
        n = self.refs[c] - 1
        if n:
            self.refs[c] = n
            return None
        del self.refs[c], self._keys[flow.key]
        return c


class FlowReconciler:
    """Installed-cookie bookkeeping for one switch connection.

    On any failure the bookkeeping is marked stale, so the next `apply` re-reads the switch
    first. A reconciler dies with its channel: create a new one on reconnect.
    """

    def __init__(self, channel: FlowChannel, *, atomic: bool = True,
                 on_added: Callable[[Sequence[Flow]], None] | None = None) -> None:
        """on_added: told the flows of every batch before it is sent (the accounting learns
        what a flow counts before the switch can report it removed)."""
        self.channel = channel
        self.atomic = atomic
        self.on_added = on_added
        self.installed: set[int] = set()
        self.foreign: set[int] = set()
        self.synced = False
        # apply_slices' view of what is installed: set only while installed == its wanted set.
        self._index: DesiredIndex | None = None
        self._source: object = None
        self._generation = 0
        self._resyncs = 0  # a resync during an apply_slices voids what that apply learnt

    def _check_channel(self) -> None:
        if not self.channel.is_ready():
            raise SouthboundError("switch channel is closed; reconnect and create a new reconciler")

    async def resync(self) -> None:
        """Re-read the switch: our cookies become the installed set, others are marked foreign."""
        self._check_channel()
        self.synced = False
        self._index = None
        self._resyncs += 1
        cookies = set(await self.channel.dump_flow_cookies())
        # One pass over tens of thousands of cookies at a takeover: is_ours() inlined.
        self.foreign = {c for c in cookies if c >> COOKIE_SHIFT != COOKIE_PREFIX}
        self.installed = cookies - self.foreign if self.foreign else cookies
        self.synced = True

    async def apply(self, desired: Iterable[Flow]) -> FlowDiff:
        """Send only what differs; an unchanged desired set sends no message at all."""
        self._check_channel()
        if not self.synced:
            await self.resync()
        self._index = None  # the switch now follows this set, not the compiler's slices
        plan = plan_flows(desired, self.installed, self.foreign)
        return await self._send(plan)

    async def apply_slices(self, desired: SlicedFlows) -> FlowDiff:
        """Like apply(all flows of the slices), at the cost of the slices changed since the last
        apply_slices: after a resync, a failure or a plain apply, one full diff comes first."""
        self._check_channel()
        if not self.synced:
            await self.resync()
        generation, resyncs = desired.generation, self._resyncs
        index = self._index
        try:
            if index is None or self._source is not desired.source:
                self._index = None
                index = DesiredIndex.of(desired.items())
                plan = FlowPlan([f for f in index.flows() if f.cookie not in self.installed],
                                sorted(c for c in self.installed if c not in index.refs),
                                sorted(self.foreign))
            else:
                if generation == self._generation:
                    return FlowDiff(0, 0, 0)
                self._index = None  # until the change is on the switch
                adds, stale = index.update({k: desired.slice(k)
                                            for k in desired.changed_since(self._generation)})
                # installed == index.wanted before this change (that is what _index means),
                # so these are already exactly the difference.
                plan = FlowPlan(adds, sorted(stale), sorted(self.foreign))
            diff = await self._send(plan)
        except BaseException:
            self._index = None
            raise
        if resyncs == self._resyncs:
            self._index, self._source, self._generation = index, desired.source, generation
        return diff

    async def drift(self) -> tuple[int, int]:
        """Read the switch's table and compare it with the bookkeeping: (our flows missing,
        flows not installed by us or not ours). A difference marks the bookkeeping stale, so
        the next apply re-reads the switch and repairs it."""
        self._check_channel()
        cookies = set(await self.channel.dump_flow_cookies())
        ours = {c for c in cookies if c >> COOKIE_SHIFT == COOKIE_PREFIX}
        missing = len(self.installed - ours)
        unexpected = len(ours - self.installed) + len(cookies - ours - self.foreign)
        if missing or unexpected:
            self.synced = False
            self._index = None
        return missing, unexpected

    def follows(self, desired: SlicedFlows) -> bool:
        """True if the switch holds exactly these slices as of their current generation (what
        apply_slices would leave as is): an O(1) convergence check."""
        # The generation is the compiler's, bumped by any switch's change: what matters is
        # that none of *this* switch's slices changed since the last apply_slices.
        return (self.synced and self._index is not None and self._source is desired.source
                and not any(True for _ in desired.changed_since(self._generation)))

    async def _send(self, plan: FlowPlan) -> FlowDiff:
        if plan.diff.empty:
            return plan.diff
        self.synced = False  # until the switch confirms the whole batch
        if self.on_added is not None and plan.adds:
            self.on_added(plan.adds)
        await self.channel.send_flow_batch(plan.adds, plan.deletes, atomic=self.atomic)
        self.installed.difference_update(plan.stale)
        self.installed.update(f.cookie for f in plan.adds)
        self.foreign.clear()
        self.synced = True
        return plan.diff
