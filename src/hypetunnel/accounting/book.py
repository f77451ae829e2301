"""The usage book: one monotonic counter per meter, its stored form, and usage over a window.

Kept as side documents (store/side.py), so a restarted or a new active controller continues
from the stored readings (ledger.py says why that neither resets nor counts twice):
  usage/c/<meter key>   the counter (banked + last reading per source) and its network;
  usage/s/<epoch s>     a sample of every counter, every SAMPLE_EVERY seconds, for KEEP.
Usage since T is a counter's value now minus its value at the newest sample at or before T
(0 if it started after T): a window is exact to within one sample interval at its start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hypetunnel.accounting.flowstats import FlowCount
from hypetunnel.accounting.ledger import Counter
from hypetunnel.accounting.meters import Meter

PREFIX = "usage/"
COUNTER_PREFIX = f"{PREFIX}c/"
SAMPLE_PREFIX = f"{PREFIX}s/"
SAMPLE_EVERY = 300.0  # seconds between two samples of every counter
KEEP = 7 * 86400.0  # how far back a window can start
GONE_KEPT = 100_000  # sources a poll found gone, kept for their late FLOW_REMOVED


@dataclass
class Usage:
    meter: Meter
    counter: Counter = field(default_factory=Counter)

    def to_doc(self) -> dict[str, Any]:
        return {"subject": self.meter.subject, "direction": self.meter.direction,
                "network": self.meter.network, **self.counter.to_doc()}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Usage:
        meter = Meter(str(doc["subject"]), str(doc["direction"]), str(doc["network"]))
        return cls(meter, Counter.from_doc(dict(doc)))


class UsageBook:
    def __init__(self) -> None:
        self.usage: dict[str, Usage] = {}
        self.samples: dict[int, dict[str, tuple[int, int]]] = {}  # epoch s -> key -> (p, b)
        self._on: dict[str, set[str]] = {}  # switch -> keys of counters with a source there
        self._where: dict[tuple[str, int], str] = {}  # source -> the key it counts in
        self._cookies: dict[str, set[int]] = {}  # switch -> cookies of its live sources
        self.registered: dict[str, dict[int, Meter]] = {}  # switch -> cookie -> meter
        # Sources a poll found gone, with the reading banked: OVS reports a flow a bundle
        # deleted just after the commit's barrier, so a poll can see the table first.
        self._gone: dict[tuple[str, int], tuple[str, int, int]] = {}
        self._dirty: set[str] = set()
        self.banked = False  # a source was banked since the last write (its reading is gone)
        self._new_samples: set[int] = set()
        self._old_samples: set[int] = set()

    # -- stored form -----------------------------------------------------------------------------
    def load(self, docs: Mapping[str, Mapping[str, Any]]) -> None:
        self.usage, self.samples = {}, {}
        for key, doc in docs.items():
            if key.startswith(COUNTER_PREFIX):
                self.usage[key.removeprefix(COUNTER_PREFIX)] = Usage.from_doc(doc)
            elif key.startswith(SAMPLE_PREFIX):
                t = int(key.removeprefix(SAMPLE_PREFIX))
                self.samples[t] = {k: (int(v[0]), int(v[1])) for k, v in doc.items()}
        self._on, self._where, self.registered, self._cookies = {}, {}, {}, {}
        for key, u in self.usage.items():
            for source in u.counter.last:
                self._on.setdefault(source[0], set()).add(key)
                self._where[source] = key
                self._cookies.setdefault(source[0], set()).add(source[1])
        self._dirty, self._new_samples, self._old_samples = set(), set(), set()

    def pending(self) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """What changed since the last `written()`: (puts, deletes) for side_commit."""
        puts: dict[str, dict[str, Any]] = {
            COUNTER_PREFIX + k: self.usage[k].to_doc() for k in sorted(self._dirty)}
        for t in sorted(self._new_samples):
            if t in self.samples:
                puts[f"{SAMPLE_PREFIX}{t}"] = {k: list(v) for k, v in self.samples[t].items()}
        return puts, [f"{SAMPLE_PREFIX}{t}" for t in sorted(self._old_samples)]

    def written(self) -> None:
        self._dirty, self._new_samples, self._old_samples = set(), set(), set()
        self.banked = False

    # -- readings --------------------------------------------------------------------------------
    def register(self, switch: str, meters: Mapping[int, Meter]) -> None:
        """Flows about to be sent to `switch`: what they count, should the switch report one
        removed before a poll has seen it (a hot move's flows live a second or two)."""
        if meters:
            self.registered.setdefault(switch, {}).update(meters)

    def observe_switch(self, switch: str, counts: Iterable[FlowCount],
                       meters: Mapping[int, Meter]) -> None:
        """One full read of `switch`'s flow table: every metered flow's counters. A source
        keeps the counter it was first counted in, so a flow counts in one place only."""
        extra = self.registered.get(switch, {})
        seen: dict[str, set[tuple[str, int]]] = {}
        for c in counts:
            source = (switch, c.cookie)
            key = self._where.get(source)
            if key is None:
                meter = meters.get(c.cookie) or extra.get(c.cookie)
                if meter is None:
                    continue
                key = meter.key
                if key not in self.usage:
                    self.usage[key] = Usage(meter)
                self._where[source] = key
            u = self.usage[key]
            if u.counter.last.get(source) != (c.packets, c.bytes):
                u.counter.observe(source, c.packets, c.bytes)
                self._dirty.add(key)
            seen.setdefault(key, set()).add(source)
        for key in self._on.get(switch, set()):
            sources = seen.get(key, set())
            u = self.usage[key]
            for gone in [s for s in u.counter.last if s[0] == switch and s not in sources]:
                self._gone[gone] = (key, *u.counter.last[gone])
                u.counter.retire(gone)
                self.banked = True
                self._where.pop(gone, None)
                self._dirty.add(key)
        while len(self._gone) > GONE_KEPT:
            del self._gone[next(iter(self._gone))]
        self._on[switch] = set(seen)
        self._cookies[switch] = {ck for sources in seen.values() for _, ck in sources}
        for cookie in [ck for ck in extra if (switch, ck) in self._where]:
            del extra[cookie]

    def wanted(self, switch: str, meters: Mapping[int, Meter]) -> set[int]:
        """The cookies of `switch` a poll reads: metered now, sent since the last poll, or
        already counting somewhere (a flow still there that the intent no longer has)."""
        out = set(meters)
        out.update(self.registered.get(switch, ()))
        out.update(self._cookies.get(switch, ()))
        return out

    def removed(self, switch: str, cookie: int, packets: int, nbytes: int) -> None:
        """The switch deleted a flow and told its final counters: counted, then banked."""
        source = (switch, cookie)
        key = self._where.pop(source, None)
        self._cookies.get(switch, set()).discard(cookie)
        if key is None and source in self._gone:  # a poll banked it already: the rest
            key, p0, b0 = self._gone.pop(source)
            self.usage[key].counter.bank(max(0, packets - p0), max(0, nbytes - b0))
            self._dirty.add(key)
            self.banked = True
            return
        if key is None:
            meter = self.registered.get(switch, {}).pop(cookie, None)
            if meter is None:
                return  # counts nothing (or was never ours)
            key = meter.key
            if key not in self.usage:
                self.usage[key] = Usage(meter)
        u = self.usage[key]
        u.counter.observe(source, packets, nbytes)
        u.counter.retire(source)
        self._dirty.add(key)
        self.banked = True

    def sample(self, now: float) -> None:
        """Every SAMPLE_EVERY seconds: the value of every counter, for windows; older than
        KEEP is forgotten, except the newest such sample (a window of exactly KEEP)."""
        t = int(now)
        if self.samples and t - max(self.samples) < SAMPLE_EVERY:
            return
        self.samples[t] = {k: (u.counter.packets, u.counter.bytes)
                           for k, u in self.usage.items()}
        self._new_samples.add(t)
        old = sorted(s for s in self.samples if s < now - KEEP)
        for s in old[:-1]:
            del self.samples[s]
            self._old_samples.add(s)

    # -- answers ---------------------------------------------------------------------------------
    def totals(self, since: float | None = None) -> dict[str, tuple[Meter, int, int]]:
        """key -> (meter, packets, bytes) counted after `since` (epoch s; None: ever)."""
        base: Mapping[str, tuple[int, int]] = {}
        if since is not None:
            at = [t for t in self.samples if t <= since]
            base = self.samples[max(at)] if at else {}
        out = {}
        for key, u in self.usage.items():
            p0, b0 = base.get(key, (0, 0))
            out[key] = (u.meter, max(0, u.counter.packets - p0), max(0, u.counter.bytes - b0))
        return out


def report(totals: Mapping[str, tuple[Meter, int, int]], by: str,
           tenant: str | None = None) -> list[dict[str, Any]]:
    """Rows of usage per tenant, network or VM (by = "tenant" | "network" | "vm"): packets and
    bytes in and out (unicast delivered to, and sent by, the VMs) and dropped (per network)."""
    rows: dict[tuple[str, ...], dict[str, Any]] = {}
    for meter, packets, nbytes in totals.values():
        owner, _, net = meter.network.partition("/")
        if tenant is not None and owner != tenant:
            continue
        if by == "vm":
            if not meter.subject.startswith("vm/"):
                continue
            vm = meter.subject.removeprefix("vm/").partition("/")[2]
            key: tuple[str, ...] = (owner, net, vm)
            row = rows.setdefault(key, {"tenant": owner, "network": net, "vm": vm})
        elif by == "network":
            key = (owner, net)
            row = rows.setdefault(key, {"tenant": owner, "network": net})
        else:
            key = (owner,)
            row = rows.setdefault(key, {"tenant": owner})
        for field_ in ("packets_in", "bytes_in", "packets_out", "bytes_out"):
            row.setdefault(field_, 0)
        if by != "vm":
            row.setdefault("dropped_packets", 0)
            row.setdefault("dropped_bytes", 0)
        if meter.direction == "dropped":
            if by != "vm":
                row["dropped_packets"] += packets
                row["dropped_bytes"] += nbytes
        else:
            row[f"packets_{meter.direction}"] += packets
            row[f"bytes_{meter.direction}"] += nbytes
    return [rows[k] for k in sorted(rows)]

