"""Election: one active at a time, fast takeover on loss, graceful hand-over, no flapping."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from hypetunnel.controller.ha import Election, HaConfig, NotActive, Role, parse_peer_line


class FakeTerms:
    """The compare-and-swap semantics of the etcd store's term keys, in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._term = 0
        self._leader: dict[str, Any] | None = None
        self.claims: list[tuple[str, int, bool]] = []

    def term(self) -> int:
        return self._term

    def leader(self) -> dict[str, Any] | None:
        return self._leader

    def claim_term(self, expected: int, node: str, info: dict[str, Any]) -> bool:
        with self._lock:
            won = self._term == expected
            if won:
                self._term = expected + 1
                self._leader = {"node": node, "term": self._term, **info}
            self.claims.append((node, expected + 1, won))
            return won


class Node:
    def __init__(self, name: str, terms: FakeTerms, timeout: float = 1.0) -> None:
        self.events: list[tuple[str, int, float]] = []
        self.election = Election(
            terms, HaConfig(name, "127.0.0.1:0", heartbeat_interval=0.02,
                            heartbeat_timeout=timeout, term_check_interval=0.05),
            on_active=self._active, on_standby=self._standby)
        self.task: asyncio.Task[None] | None = None

    async def _active(self, term: int) -> None:
        self.events.append(("active", term, time.monotonic()))

    async def _standby(self, term: int) -> None:
        self.events.append(("standby", term, time.monotonic()))

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.election.run())

    async def kill(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


async def until(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def actives(*nodes: Node) -> list[str]:
    return [n.election.config.node for n in nodes if n.election.role is Role.ACTIVE]


def test_one_active_then_fast_takeover_after_kill() -> None:
    async def main() -> None:
        terms = FakeTerms()
        a, b = Node("a", terms), Node("b", terms)
        a.start()
        b.start()
        await until(lambda: len(actives(a, b)) == 1
                    and {a.election.role, b.election.role} == {Role.ACTIVE, Role.STANDBY})
        first, second = (a, b) if a.election.role is Role.ACTIVE else (b, a)
        await until(lambda: first.election.describe()["standbys_connected"] == 1)
        t0 = time.monotonic()
        await first.kill()
        await until(lambda: second.election.role is Role.ACTIVE)
        took = second.events[-1][2] - t0
        assert second.election.term == 2
        assert took < 0.3, f"takeover took {took * 1000:.0f} ms"
        await second.kill()

    asyncio.run(main())


def test_graceful_failover_hands_over_and_does_not_flap_back() -> None:
    async def main() -> None:
        terms = FakeTerms()
        a, b = Node("a", terms), Node("b", terms)
        a.start()
        await until(lambda: a.election.role is Role.ACTIVE)
        with pytest.raises(NotActive):
            await a.election.step_down()  # nobody to hand over to
        b.start()
        await until(lambda: a.election.describe()["standbys_connected"] == 1)
        await a.election.step_down()
        await until(lambda: b.election.role is Role.ACTIVE)
        assert a.election.role is Role.STANDBY and b.election.term == 2
        await asyncio.sleep(0.3)  # several heartbeat and term-check periods
        assert actives(a, b) == ["b"], "no automatic fail-back"
        await a.kill()
        await b.kill()

    asyncio.run(main())


def test_a_silent_active_is_replaced_after_the_heartbeat_timeout_only() -> None:
    async def main() -> None:
        terms = FakeTerms()
        a, b = Node("a", terms, timeout=0.4), Node("b", terms, timeout=0.4)
        a.start()
        await until(lambda: a.election.role is Role.ACTIVE)
        b.start()
        await until(lambda: b.election.role is Role.STANDBY
                    and a.election.describe()["standbys_connected"] == 1)
        await asyncio.sleep(0.6)  # heartbeats flowing: no takeover
        assert actives(a, b) == ["a"]
        # a hangs: its heartbeats stop, its sockets stay open (no FIN to see).
        a.election.config.heartbeat_interval = 1000.0
        t0 = time.monotonic()
        await until(lambda: b.election.role is Role.ACTIVE, timeout=3)
        assert time.monotonic() - t0 >= 0.3, "took over before the heartbeat timeout"
        assert terms.claims[-1] == ("b", 2, True)
        # a notices the newer term and stands down: never two actives for long.
        await until(lambda: a.election.role is Role.STANDBY, timeout=2)
        await a.kill()
        await b.kill()

    asyncio.run(main())


def test_simultaneous_start_elects_exactly_one() -> None:
    async def main() -> None:
        terms = FakeTerms()
        nodes = [Node(n, terms) for n in "abc"]
        for n in nodes:
            n.start()
        await until(lambda: sum(n.election.role is Role.ACTIVE for n in nodes) == 1
                    and sum(n.election.role is Role.STANDBY for n in nodes) == 2)
        # The first claim won term 1; a loaded machine may add a later, legitimate takeover.
        assert next(c for c in terms.claims if c[2])[1:] == (1, True)
        for n in nodes:
            await n.kill()

    asyncio.run(main())


def test_peer_lines_are_parsed_strictly() -> None:
    assert parse_peer_line(b"hb ctl1 7\n") == ("hb", 7)
    assert parse_peer_line(b"yield 7\n") == ("yield", 7)
    for garbage in (b"hb ctl1 seven\n", b"\xff\xfe\n", b"hb\n", b"yield\n", b"GET / HTTP/1.1\r\n",
                    b"", b"hb a b c\n"):
        assert parse_peer_line(garbage) is None, garbage


def test_garbage_on_the_peer_channel_is_ignored_both_ways(caplog: pytest.LogCaptureFixture) -> None:
    """Garbage sent to the active's peer port, and garbage between the active's heartbeats:
    neither side crashes, nobody takes over while heartbeats flow, and it is logged."""

    async def main() -> None:
        terms = FakeTerms()
        a, b = Node("a", terms, timeout=0.5), Node("b", terms, timeout=0.5)
        a.start()
        await until(lambda: a.election.role is Role.ACTIVE)
        b.start()
        await until(lambda: a.election.describe()["standbys_connected"] == 1)
        (to_b,) = a.election._followers  # the active's writer to b, used by its heartbeats
        host, _, port = a.election.config.peer_listen.rpartition(":")
        _, intruder = await asyncio.open_connection(host, int(port))
        intruder.write(b"\xff\x00 garbage\n" * 1000 + b"hb evil 99\n" + b"x" * 200_000)
        await intruder.drain()
        for junk in (b"hb a notanumber\n", b"\xfe\xfd\n", b"y" * 100_000 + b"\n", b"yield\n"):
            to_b.write(junk)
        await asyncio.sleep(1.0)  # two heartbeat timeouts: heartbeats kept flowing
        assert actives(a, b) == ["a"] and b.election.role is Role.STANDBY
        assert terms.claims == [("a", 1, True)]
        assert not a.task.done() and not b.task.done()  # type: ignore[union-attr]
        intruder.close()
        await a.kill()
        await until(lambda: b.election.role is Role.ACTIVE)  # still follows a real loss
        await b.kill()

    with caplog.at_level("WARNING", logger="hypetunnel.controller.ha"):
        asyncio.run(main())
    assert "garbage on the peer channel" in caplog.text
