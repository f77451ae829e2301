"""Primary/secondary election: detection by heartbeat, safety by fencing.

Who is active is decided by a compare-and-swap on the store's term (etcd): a controller that
wins term T+1 is active with OpenFlow role generation id T+1, and its store writes are fenced
on that term. A deposed controller, however slow or partitioned, therefore can neither program
a switch (its role requests carry an older generation id and are refused as stale) nor write
state (its conditional writes name an older term). Timing only decides *when* a standby tries
to take over, never whether two controllers can act at once.

Detection: the standby keeps a TCP connection to the active's peer port, on which the active
sends a heartbeat every `heartbeat_interval`. A killed process closes its sockets, so a kill is
seen at once (no timer); a hung or partitioned active is declared lost after
`heartbeat_timeout` without a heartbeat (long enough not to fire on a busy machine).

With `HaConfig.tls` the channel is mutual TLS between the pair's controllers (peertls.py): the
active drops (and logs) a connection that fails the handshake or whose certificate is not a
controller's; a standby that cannot authenticate the active treats it as unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from hypetunnel.aio import cancel_and_wait
from hypetunnel.controller.peertls import PeerTls
from hypetunnel.errors import Conflict, HypeTunnelError
from hypetunnel.store.base import Store, StoreSnapshot

log = logging.getLogger(__name__)


class Role(enum.Enum):
    STARTING = "starting"
    ACTIVE = "active"
    STANDBY = "standby"


class TermStore(Protocol):
    """The election half of the etcd store (see store/etcd.py)."""

    def term(self) -> int: ...
    def claim_term(self, expected: int, node: str, info: dict[str, Any]) -> bool: ...
    def leader(self) -> dict[str, Any] | None: ...


@dataclass
class HaConfig:
    node: str  # this controller's name, e.g. "ctl1"
    peer_listen: str  # "HOST:PORT" where the active serves heartbeats
    api_url: str | None = None  # advertised to clients (who is active, where)
    heartbeat_interval: float = 0.05
    heartbeat_timeout: float = 1.0
    term_check_interval: float = 0.25
    # The active programs switches only while it confirmed its term less than `lease` ago.
    # Shorter than heartbeat_timeout: an active that was frozen (SIGSTOP, a stalled VM) or cut
    # off long enough for the standby to take over has stopped acting by then, and on resuming
    # it sends nothing until a fresh read of the term tells it where it stands. (None: half
    # the heartbeat timeout.)
    lease: float | None = None
    tls: PeerTls | None = None  # None: the peer channel is plain TCP

    @property
    def lease_s(self) -> float:
        return self.lease if self.lease is not None else self.heartbeat_timeout / 2


class Election:
    def __init__(self, terms: TermStore, config: HaConfig, *,
                 on_active: Callable[[int], Awaitable[None]],
                 on_standby: Callable[[int], Awaitable[None]]) -> None:
        self.terms = terms
        self.config = config
        self.on_active = on_active
        self.on_standby = on_standby
        self.role = Role.STARTING
        self.term = 0
        self.leader: dict[str, Any] | None = None
        self.took_over_at: float | None = None  # time.time() of the last takeover (metrics)
        self._confirmed_at: float | None = None  # monotonic time our term was last confirmed
        self._followers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._yield_requested = asyncio.Event()
        self._stepped_down = asyncio.Event()

    # -- public ------------------------------------------------------------------------------
    async def run(self) -> None:
        host, _, port = self.config.peer_listen.rpartition(":")
        self._server = await asyncio.start_server(self._accept, host or "0.0.0.0", int(port))
        if int(port) == 0:  # an ephemeral port (tests): advertise the one we got
            bound = self._server.sockets[0].getsockname()[1]
            self.config.peer_listen = f"{host}:{bound}"
        try:
            while True:
                if self.role is Role.ACTIVE:
                    await self._lead()
                else:
                    await self._follow()
        finally:
            self._server.close()
            for w in list(self._followers):
                w.close()

    async def step_down(self) -> None:
        """Graceful hand-over (operator command): stop acting first, then let a standby claim."""
        if self.role is not Role.ACTIVE:
            raise NotActive("this controller is not the active one")
        if not self._followers:
            raise NotActive("no standby controller is connected: nobody to hand over to")
        self._yield_requested.set()
        await self._stepped_down.wait()

    def holds_lease(self) -> bool:
        """Active, and the term was confirmed ours recently enough to act on it."""
        return (self.role is Role.ACTIVE and self._confirmed_at is not None
                and time.monotonic() - self._confirmed_at < self.config.lease_s)

    def describe(self) -> dict[str, Any]:
        return {"node": self.config.node, "role": self.role.value, "term": self.term,
                "leader": self.leader, "standbys_connected": len(self._followers),
                "took_over_at": self.took_over_at}

    # -- active side ---------------------------------------------------------------------------
    async def _lead(self) -> None:
        self._yield_requested.clear()
        self._stepped_down.clear()
        beat = asyncio.create_task(self._heartbeats())
        try:
            while True:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can turn our own
                # cancellation into a TimeoutError when its timer fires at the same moment,
                # and this loop would then run on after a shutdown.
                try:
                    async with asyncio.timeout(self.config.term_check_interval):
                        await self._yield_requested.wait()
                    await self._demote(self.term)
                    for w in list(self._followers):  # tell standbys to claim right now
                        with contextlib.suppress(OSError):
                            w.write(f"yield {self.term}\n".encode())
                    self._stepped_down.set()
                    await asyncio.sleep(self.config.heartbeat_interval)
                    return
                except TimeoutError:
                    pass
                asked_at = time.monotonic()
                try:
                    current = await asyncio.to_thread(self.terms.term)
                except HypeTunnelError as e:  # store unreachable: the lease runs out
                    log.warning("cannot read the term: %s", e)
                    continue
                if current == self.term:
                    self._confirmed_at = asked_at  # ours as of when we asked
                if current != self.term:
                    log.warning("term moved to %d (we hold %d): standing down", current, self.term)
                    await self._demote(current)
                    return
        finally:
            await cancel_and_wait(beat)

    async def _heartbeats(self) -> None:
        while True:
            line = f"hb {self.config.node} {self.term}\n".encode()
            for w in list(self._followers):
                try:
                    w.write(line)
                except OSError:
                    self._followers.discard(w)
            await asyncio.sleep(self.config.heartbeat_interval)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.role is not Role.ACTIVE:
            writer.close()  # we are nobody's leader: the caller will look again
            return
        tls = self.config.tls
        if tls is not None:
            peer = writer.get_extra_info("peername")
            try:
                # Bounded: a peer that connects and says nothing must not hold a task forever.
                async with asyncio.timeout(self.config.heartbeat_timeout):
                    await writer.start_tls(tls.server)
            except TimeoutError:
                log.warning("peer channel: no TLS handshake from %s within %.2fs, dropped", peer,
                            self.config.heartbeat_timeout)
                writer.close()
                return
            except OSError as e:  # ssl.SSLError is an OSError
                log.warning("peer channel: TLS handshake with %s failed, dropped: %s", peer,
                            str(e) or type(e).__name__)
                writer.close()
                return
            why = tls.refusal(writer.get_extra_info("ssl_object"))
            if why is not None:
                log.warning("peer channel: %s dropped: %s", peer, why)
                writer.close()
                return
        await self._serve_follower(reader, writer)

    async def _serve_follower(self, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
        self._followers.add(writer)
        try:
            # Followers send nothing: discard whatever comes (bounded reads), until EOF.
            while await reader.read(4096):
                pass
        except OSError:
            pass
        finally:
            self._followers.discard(writer)
            writer.close()

    async def _demote(self, term: int) -> None:
        self.role = Role.STANDBY
        self.term = max(self.term, term)
        for w in list(self._followers):
            w.close()
        await self.on_standby(self.term)

    # -- standby side ----------------------------------------------------------------------------
    async def _follow(self) -> None:
        term = await self._read(self.terms.term)
        leader = await self._read(self.terms.leader)
        self.leader = leader
        if leader is None or leader.get("node") == self.config.node or "peer" not in leader:
            # Nobody leads, or the record is our own from a previous life: claim.
            await self._claim(term)
            return
        if self.role is Role.STARTING:
            self.role = Role.STANDBY
            self.term = term
            await self.on_standby(term)
        host, _, port = str(leader["peer"]).rpartition(":")
        timeout = self.config.heartbeat_timeout
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await self._connect(host, int(port), leader.get("node"))
        except (OSError, TimeoutError, ValueError) as e:
            log.warning("active %s unreachable at %s after %.2fs (%s): claiming term %d",
                        leader.get("node"), leader["peer"], time.monotonic() - started,
                        str(e) or type(e).__name__, term + 1)
            await self._claim(term)
            return
        try:
            while True:
                try:
                    async with asyncio.timeout(timeout):
                        line = await reader.readline()
                except TimeoutError:
                    log.warning("no heartbeat from %s for %.2fs", leader.get("node"), timeout)
                    break
                except ValueError:  # a line longer than the stream limit: not a heartbeat
                    log.warning("oversized line from %s ignored", leader.get("node"))
                    continue
                except OSError as e:  # a reset, or a broken TLS record: the channel is gone
                    log.warning("the connection to active %s failed: %s", leader.get("node"), e)
                    break
                if not line:
                    log.warning("lost the connection to active %s", leader.get("node"))
                    break
                message = parse_peer_line(line)
                if message is None:
                    log.warning("garbage on the peer channel from %s ignored: %r",
                                leader.get("node"), line[:80])
                    continue
                kind, value = message
                if kind == "yield":
                    log.info("%s hands over", leader.get("node"))
                    break
                if kind == "hb" and value > term:
                    return  # a newer leader than we knew: look again
        finally:
            writer.close()
        await self._claim(term)

    async def _connect(self, host: str, port: int, expected: Any
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The standby's connection to the active's peer port, authenticated under TLS."""
        tls = self.config.tls
        if tls is None:
            return await asyncio.open_connection(host, port)
        reader, writer = await asyncio.open_connection(host, port, ssl=tls.client)
        why = tls.refusal(writer.get_extra_info("ssl_object"),
                          expected if isinstance(expected, str) else None)
        if why is not None:
            writer.close()
            raise PeerRefused(f"not the active controller: {why}")
        return reader, writer

    async def _claim(self, expected: int) -> None:
        info = {"peer": self.config.peer_listen, "api": self.config.api_url,
                "since": time.time()}
        try:
            won = await asyncio.to_thread(self.terms.claim_term, expected, self.config.node, info)
        except HypeTunnelError as e:
            log.warning("cannot claim term %d: %s", expected + 1, e)
            await asyncio.sleep(self.config.heartbeat_interval)
            return
        if not won:
            await asyncio.sleep(0)  # someone else won: follow them on the next round
            return
        self.term = expected + 1
        self._confirmed_at = time.monotonic()
        self.role = Role.ACTIVE
        self.took_over_at = time.time()
        self.leader = {"node": self.config.node, "term": self.term, **info}
        log.info("%s is active with term %d", self.config.node, self.term)
        await self.on_active(self.term)

    async def _read(self, fn: Callable[[], Any]) -> Any:
        while True:
            try:
                return await asyncio.to_thread(fn)
            except HypeTunnelError as e:
                log.warning("store unreachable: %s", e)
                await asyncio.sleep(self.config.heartbeat_interval)


def parse_peer_line(line: bytes) -> tuple[str, int] | None:
    """`hb NODE TERM` or `yield TERM` from the active controller; None for anything else."""
    try:
        words = line.decode("ascii").split()
        if len(words) == 3 and words[0] == "hb":
            return "hb", int(words[2])
        if len(words) == 2 and words[0] == "yield":
            return "yield", int(words[1])
    except (UnicodeDecodeError, ValueError):
        pass
    return None


class PeerRefused(ConnectionError):
    """The peer at the active's address did not prove to be that controller."""


class NotActive(Conflict):
    """The request needs the active controller (a standby refuses writes)."""


class StandbyStore:
    """What a standby's service writes through: reads pass, writes are refused, so the only
    controller that ever writes state is the active one (whose writes are fenced by term)."""

    def __init__(self, store: Store, leader: Callable[[], dict[str, Any] | None]) -> None:
        self._store = store
        self._leader = leader

    def load(self) -> StoreSnapshot:
        return self._store.load()

    def revision(self) -> int:
        return self._store.revision()

    def commit(self, puts: Mapping[str, dict[str, Any]], deletes: Iterable[str], *,
               expect_revision: int | None = None) -> int:
        leader = self._leader() or {}
        where = f": the active controller is {leader.get('node')} ({leader.get('api')})" \
            if leader.get("node") else ""
        raise NotActive(f"this controller is the standby{where}")

    def close(self) -> None:
        pass
