"""Monotonic usage from flow counters that restart: the baseline arithmetic, pure.

A counter (a VM's bytes in, say) is read from one or more sources: a flow on a switch, named
(switch, cookie). A source's reading restarts at 0 when its flow is reinstalled, and a VM move
gives it a new source on another switch whose reading starts at 0. So per counter we keep
`banked` (what sources that reset or vanished had counted) plus, per live source, its last
reading; the total is banked + sum of last readings, and never goes down.

- a reading below the last one: the flow was reinstalled; the old reading is banked and the
  new one counted from 0 (traffic between the last poll and the reset is lost, never doubled);
- a new source: counted from 0, because a flow we installed started at 0 (so a move counts the
  new switch's traffic once);
- a source not seen in a full poll of its switch: banked and forgotten.

The state (`to_doc` / `from_doc`) is what is kept in the store, so a controller restart or a
failover continues from the last stored readings: a reading at or above the stored one adds
only the difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Source = tuple[str, int]  # (switch, cookie)


@dataclass
class Counter:
    banked_packets: int = 0
    banked_bytes: int = 0
    last: dict[Source, tuple[int, int]] = field(default_factory=dict)  # source -> (pkts, bytes)

    @property
    def packets(self) -> int:
        return self.banked_packets + sum(p for p, _ in self.last.values())

    @property
    def bytes(self) -> int:
        return self.banked_bytes + sum(b for _, b in self.last.values())

    def observe(self, source: Source, packets: int, nbytes: int) -> None:
        if packets < 0 or nbytes < 0:
            raise ValueError("flow counters are unsigned")
        old = self.last.get(source)
        if old is not None and (packets < old[0] or nbytes < old[1]):
            self._bank(old)  # reinstalled: the flow restarted at 0
        self.last[source] = (packets, nbytes)

    def retire(self, source: Source) -> None:
        old = self.last.pop(source, None)
        if old is not None:
            self._bank(old)

    def retire_switch(self, switch: str, seen: set[Source]) -> None:
        """After a full poll of `switch`: its sources not in `seen` are gone."""
        for src in [s for s in self.last if s[0] == switch and s not in seen]:
            self.retire(src)

    def bank(self, packets: int, nbytes: int) -> None:
        """Counted by a source that is gone already (its late final reading's difference)."""
        self._bank((packets, nbytes))

    def _bank(self, reading: tuple[int, int]) -> None:
        self.banked_packets += reading[0]
        self.banked_bytes += reading[1]

    def to_doc(self) -> dict[str, Any]:
        return {"banked": [self.banked_packets, self.banked_bytes],
                "last": [[sw, ck, p, b] for (sw, ck), (p, b) in sorted(self.last.items())]}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Counter:
        bp, bb = doc.get("banked", [0, 0])
        last = {(str(sw), int(ck)): (int(p), int(b)) for sw, ck, p, b in doc.get("last", [])}
        return cls(int(bp), int(bb), last)
