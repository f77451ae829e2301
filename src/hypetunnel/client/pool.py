"""The members of a controller pair: find the active one fast, even when a member hangs.

A hung controller (SIGSTOPped, swapping, partitioned) accepts TCP connections but never
answers. So every member is asked at once, each with a short timeout, and the pool decides
within PROBE_DEADLINE whatever the slowest does: the active member with the highest term wins
(a controller resumed after a hang may still believe it is active, with an older term). The
last active is remembered (client/cache.py): when it answers active again the pool need not
wait for the others.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from hypetunnel.client.cache import ActiveCache, LastActive
from hypetunnel.client.errors import ApiUnreachable, ClientError
from hypetunnel.client.http import ApiClient

PROBE_TIMEOUT = httpx.Timeout(0.5, connect=0.3)  # one member's answer to GET /controller
PROBE_DEADLINE = 0.6  # seconds: the pool decides by then, whoever has not answered
STATUS_DEADLINE = 1.0  # `controller status` asks every member for its whole status

ClientFactory = Callable[[str], ApiClient]
Report = Callable[[str], None]
T = TypeVar("T")


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


def _ask_all(urls: list[str], ask: Callable[[str], T], deadline: float,
             enough: Callable[[dict[str, T | Exception]], bool] = lambda _: False,
             ) -> dict[str, T | Exception]:
    """ask(url) for every url in parallel; return what came back by `deadline` (seconds),
    or earlier once `enough(answers so far)`. Threads are daemons: a member that never
    answers cannot keep the process alive."""
    answers: queue.Queue[tuple[str, T | Exception]] = queue.Queue()

    def run(url: str) -> None:
        try:
            answers.put((url, ask(url)))
        except Exception as e:  # handed to the caller as this member's answer
            answers.put((url, e))

    for url in urls:
        threading.Thread(target=run, args=(url,), daemon=True, name=f"probe {url}").start()
    got: dict[str, T | Exception] = {}
    end = time.monotonic() + deadline
    while len(got) < len(urls) and not enough(got):
        remaining = end - time.monotonic()
        if remaining <= 0:
            break
        try:
            url, answer = answers.get(timeout=remaining)
        except queue.Empty:
            break
        got[url] = answer
    return got


class ClientPool:
    """The APIs of a controller pair: writes go to the active one, status comes from all."""

    def __init__(self, urls: list[str], factory: ClientFactory = ApiClient, *,
                 cache: ActiveCache | None = None, report: Report | None = None,
                 probe_deadline: float = PROBE_DEADLINE) -> None:
        self.urls = urls
        self.factory = factory
        self.cache = cache
        self.report = report or (lambda _: None)
        self.probe_deadline = probe_deadline

    def _probe_one(self, url: str) -> Probe:
        started = time.monotonic()
        with self.factory(url) as api:
            info = api.controller(timeout=PROBE_TIMEOUT)
        term = info.get("term")
        return Probe(url, time.monotonic() - started, role=info.get("role"),
                     term=term if isinstance(term, int) else 0, node=info.get("node"))

    def probe(self, last: LastActive | None = None) -> list[Probe]:
        """Every member's answer, in the order of `urls`; silent ones as errors."""
        def enough(got: dict[str, Probe | Exception]) -> bool:
            # The last active, or a member elected after it, answers active: no need to wait
            # for a member that may be hung.
            return last is not None and any(
                isinstance(p, Probe) and p.active and (p.url == last.url or p.term > last.term)
                for p in got.values())

        got = _ask_all(self.urls, self._probe_one, self.probe_deadline, enough)
        probes = []
        for url in self.urls:
            answer = got.get(url)
            if isinstance(answer, Probe):
                probes.append(answer)
            elif isinstance(answer, ClientError):
                probes.append(Probe(url, 0.0, error=str(answer)))
            elif answer is None:
                probes.append(Probe(url, self.probe_deadline, error=(
                    f"no answer within {self.probe_deadline * 1000:.0f} ms")))
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

        got = _ask_all(self.urls, ask, STATUS_DEADLINE + 0.1)
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

