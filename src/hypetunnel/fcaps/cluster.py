"""Pure: the etcd cluster's health as alarms (HA only). `etcd_member_down` for each member that
does not answer (resource `etcd/<member>`); `quorum_at_risk` (resource `etcd/cluster`) when the
cluster lost the failure it could take: exactly a majority answers, so one more loss stops
every write, or fewer than a majority answer. A cluster of one or two members tolerates no
failure by design: while all of them answer, that is no alarm (the README says so).

A member must fail `HOLD_PROBES` probes in a row: one slow answer is no alarm."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

MEMBER_DOWN = "etcd_member_down"
QUORUM = "quorum_at_risk"
CLUSTER = "etcd/cluster"
HOLD_PROBES = 2


class MemberLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def url(self) -> str: ...

    @property
    def up(self) -> bool: ...

    @property
    def problem(self) -> str: ...


class ClusterHealth:
    def __init__(self, hold: int = HOLD_PROBES) -> None:
        self.hold = hold
        self._misses: dict[str, int] = {}  # member -> probes failed in a row

    def judge(self, members: Sequence[MemberLike]) -> dict[tuple[str, str], str]:
        """One probe of every member: (resource, kind) -> text of the alarms to be open."""
        for m in members:
            self._misses[m.name] = 0 if m.up else self._misses.get(m.name, 0) + 1
        for gone in set(self._misses) - {m.name for m in members}:
            del self._misses[gone]  # removed from the cluster
        down = [m for m in members if self._misses[m.name] >= self.hold]
        size, quorum = len(members), len(members) // 2 + 1
        answering = size - len(down)
        out: dict[tuple[str, str], str] = {}
        for m in down:
            out[(f"etcd/{m.name}", MEMBER_DOWN)] = (
                f"etcd member {m.name} ({m.url or 'no client URL'}) does not answer: "
                f"{m.problem or 'no answer'}; {answering} of {size} answer (quorum {quorum})")
        if down and answering < quorum:
            out[(CLUSTER, QUORUM)] = (
                f"quorum lost: {answering} of {size} etcd members answer, {quorum} are needed: "
                "no change can be stored")
        elif down and answering == quorum:
            out[(CLUSTER, QUORUM)] = (
                f"{answering} of {size} etcd members answer, exactly the quorum: one more loss "
                f"stops every write (down: {', '.join(m.name for m in down)})")
        return out
