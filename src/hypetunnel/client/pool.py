"""The members of a controller pair: find the active one fast, even when a member hangs.

A hung controller (SIGSTOPped, swapping, partitioned) accepts TCP connections but never
answers. So every member is asked at once, and once PROBE_DEADLINE has passed the pool takes
the best answer it has rather than wait for the silent: the active member with the highest
term (a controller resumed after a hang may still believe it is active, with an older term).
Only when no member has answered active yet does it wait longer, up to PROBE_PATIENCE, so a
slow but healthy controller (a loaded machine) is still found. The last active is remembered
(client/cache.py): when it answers active again the pool stops at once; should that be a stale
claim, its writes are refused by the store's fencing (term) anyway.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from hypetunnel.client.cache import ActiveCache, LastActive
from hypetunnel.client.errors import ApiUnreachable, ClientError
from hypetunnel.client.http import ApiClient

PROBE_DEADLINE = 0.6  # seconds: with an active answer in hand, stop waiting for the others
PROBE_PATIENCE = 5.0  # seconds: the longest the pool waits for any active answer
PROBE_TIMEOUT = httpx.Timeout(PROBE_PATIENCE, connect=1.0)  # one member's GET /controller
STATUS_DEADLINE = 1.5  # `controller status` shows a member silent this long as unreachable

ClientFactory = Callable[[str], ApiClient]
Report = Callable[[str], None]
T = TypeVar("T")
Answers = Mapping[str, T | Exception]


@dataclass(frozen=True, slots=True)
class Probe:
    """One member's answer (or silence) to the probe."""

    url: str
    seconds: float
    role: str | None = None  # "active", "standby"...; None: a controller without HA
    term: int = 0
    node: str | None = None
    error: str | None = None

    @property
    def active(self) -> bool:
        return self.error is None and self.role in ("active", None)

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.url}: {self.error}"
        who = f" ({self.node})" if self.node else ""
        return (f"{self.url}{who}: {self.role or 'no HA'}, term {self.term}, "
                f"answered in {self.seconds * 1000:.0f} ms")


def _ask_all(urls: list[str], ask: Callable[[str], T], done: Callable[[Answers[T], float], bool],
             limit: float) -> dict[str, T | Exception]:
    """ask(url) for every url in parallel; return the answers so far once all are in, once
    done(answers, seconds elapsed), or after `limit` seconds. Threads are daemons: a member
    that never answers cannot keep the process alive."""
    answers: queue.Queue[tuple[str, T | Exception]] = queue.Queue()

    def run(url: str) -> None:
        try:
            answers.put((url, ask(url)))
        except Exception as e:  # handed to the caller as this member's answer
            answers.put((url, e))

    for url in urls:
        threading.Thread(target=run, args=(url,), daemon=True, name=f"probe {url}").start()
    got: dict[str, T | Exception] = {}
    started = time.monotonic()
    while len(got) < len(urls):
        elapsed = time.monotonic() - started
        if elapsed >= limit or done(got, elapsed):
            break
        try:
            # Wake up at least every 50 ms: `done` may turn true with time alone.
            url, answer = answers.get(timeout=min(limit - elapsed, 0.05))
        except queue.Empty:
            continue
        got[url] = answer
    return got


class ClientPool:
    """The APIs of a controller pair: writes go to the active one, status comes from all."""

    def __init__(self, urls: list[str], factory: ClientFactory | None = None, *,
                 cache: ActiveCache | None = None, report: Report | None = None,
                 deadline: float = PROBE_DEADLINE, patience: float = PROBE_PATIENCE,
                 token: str | None = None) -> None:
        """`token`: for the default factory (an ApiClient per member sending it); a given
        factory makes clients with their own token."""
        self.urls = urls
        self.factory: ClientFactory = factory or (lambda url: ApiClient(url, token=token))
        self.cache = cache
        self.report = report or (lambda _: None)
        self.deadline = deadline
        self.patience = patience

    def _probe_one(self, url: str) -> Probe:
        started = time.monotonic()
        with self.factory(url) as api:
            info = api.controller(timeout=PROBE_TIMEOUT)
        term = info.get("term")
        return Probe(url, time.monotonic() - started, role=info.get("role"),
                     term=term if isinstance(term, int) else 0, node=info.get("node"))

    def probe(self, last: LastActive | None = None) -> list[Probe]:
        """Every member's answer, in the order of `urls`; silent ones as errors."""
        def done(got: Answers[Probe], elapsed: float) -> bool:
            actives = [p for p in got.values() if isinstance(p, Probe) and p.active]
            if last is not None and any(p.url == last.url or p.term > last.term
                                        for p in actives):
                return True  # the last active, or one elected after it: no need to wait
            return bool(actives) and elapsed >= self.deadline

        started = time.monotonic()
        got = _ask_all(self.urls, self._probe_one, done, self.patience)
        waited = time.monotonic() - started
        probes = []
        for url in self.urls:
            answer = got.get(url)
            if isinstance(answer, Probe):
                probes.append(answer)
            elif isinstance(answer, ClientError):
                probes.append(Probe(url, 0.0, error=str(answer)))
            elif answer is None:
                probes.append(Probe(url, waited, error=f"no answer within {waited * 1000:.0f} ms"))
            else:
                probes.append(Probe(url, 0.0, error=f"probe failed: {answer}"))
        return probes

    def active(self) -> ApiClient:
        """A client of the active member (the highest term among those answering active)."""
        last = self.cache.get(self.urls) if self.cache else None
        probes = self.probe(last)
        for p in probes:
            self.report(f"probe {p.describe()}")
        candidates = [p for p in probes if p.active]
        if not candidates:
            reasons = "; ".join(p.describe() for p in probes)
            raise ApiUnreachable(",".join(self.urls),
                                 f"no active controller among {len(self.urls)}: {reasons}")
        best = max(candidates, key=lambda p: (p.term, last is not None and p.url == last.url,
                                              -self.urls.index(p.url)))
        if self.cache:
            self.cache.put(self.urls, LastActive(best.url, best.term))
        self.report(f"using {best.url}" + (f" ({best.node}, term {best.term})"
                                           if best.node else ""))
        return self.factory(best.url)

    def status_all(self) -> list[tuple[str, dict[str, Any]]]:
        """Every member's /status, asked in parallel; a silent member is marked unreachable."""
        def ask(url: str) -> dict[str, Any]:
            with self.factory(url) as api:
                data: dict[str, Any] = api.status(timeout=httpx.Timeout(STATUS_DEADLINE))
                return data

        got = _ask_all(self.urls, ask, lambda _got, _elapsed: False, STATUS_DEADLINE)
        out = []
        for url in self.urls:
            answer = got.get(url)
            if isinstance(answer, dict):
                self.report(f"{url}: answered")
                out.append((url, answer))
                continue
            why = (str(answer) if isinstance(answer, ClientError) else
                   f"no answer within {STATUS_DEADLINE:g} s" if answer is None else
                   f"failed: {answer}")
            self.report(f"{url}: {why}")
            out.append((url, {"controller": {"role": f"unreachable ({why})"}}))
        return out
