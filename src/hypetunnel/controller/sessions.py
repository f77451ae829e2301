"""Every enlisted switch's sessions: who exists, which OpenFlow connection is whose, and the
per-switch reconcile and retirement tasks.

The pool is told which hypervisors are enlisted (`enlist`), accepts OpenFlow connections, and
runs a reconcile task per switch marked pending. Hypervisors that left the intent are retired:
cleaned (when this controller may program them) and then forgotten, so they are neither polled
nor left holding stale flows and tunnel ports.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping

from hypetunnel.controller.ports import DesiredState, OvsdbFactory, SessionEvents, real_ovsdb
from hypetunnel.controller.session import Lifecycle, SwitchSession
from hypetunnel.controller.tasks import TaskSet
from hypetunnel.southbound.openflow.channel import SwitchChannel

log = logging.getLogger(__name__)

RETIRE_TIMEOUT = 30.0  # how long a retiring hypervisor may take to let itself be cleaned
# A second connection claims a switch whose channel is up: how long the old one has to prove
# it is alive (answer an echo) before the newcomer may take over.
LIVENESS_PROBE = 1.0


class SwitchSessions:
    def __init__(self, events: SessionEvents, desired: DesiredState, *,
                 may_program: Callable[[], bool],
                 role: Callable[[], tuple[str, int] | None],
                 on_retired: Callable[[str], None],
                 bridge: str = "br-int", switch_targets: list[str] | None = None,
                 ovsdb_factory: OvsdbFactory = real_ovsdb,
                 retire_timeout: float = RETIRE_TIMEOUT, authenticated: bool = False) -> None:
        """may_program: whether switches may be touched now (active, startup over);
        role: the OpenFlow role request for a new connection, None without HA;
        on_retired: a hypervisor is gone for good (its reports must no longer count);
        authenticated: connections carry a certificate identity (TLS), and a switch is
        served only if that identity is the hypervisor its datapath id belongs to."""
        self._events = events
        self._desired = desired
        self._may_program = may_program
        self._role = role
        self._on_retired = on_retired
        self._bridge = bridge
        self._switch_targets = switch_targets or []
        self._factory = ovsdb_factory
        self._retire_timeout = retire_timeout
        self._authenticated = authenticated
        self.impostors = 0  # connections dropped for claiming another switch's datapath id
        self._sessions: dict[str, SwitchSession] = {}
        self._retiring: dict[str, SwitchSession] = {}
        self._refused: set[int | None] = set()  # datapath ids refused since they last served
        self._tasks = TaskSet()

    # -- the set of switches ---------------------------------------------------------------------
    def __getitem__(self, name: str) -> SwitchSession:
        return self._sessions[name]

    def __contains__(self, name: object) -> bool:
        return name in self._sessions

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._sessions))

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, name: str) -> SwitchSession | None:
        return self._sessions.get(name)

    def values(self) -> list[SwitchSession]:
        return [self._sessions[n] for n in sorted(self._sessions)]

    def items(self) -> list[tuple[str, SwitchSession]]:
        return [(n, self._sessions[n]) for n in sorted(self._sessions)]

    @property
    def retiring(self) -> list[str]:
        return sorted(self._retiring)

    def enlist(self, hypervisors: Mapping[str, tuple[str | None, str]]) -> None:
        """The enlisted hypervisors now: name -> (OVSDB endpoint, datapath type)."""
        for name in [n for n in self._sessions if n not in hypervisors]:
            self._retire(name)
        for name, (endpoint, datapath_type) in hypervisors.items():
            st = self._sessions.get(name)
            if st is None:
                st = self._retiring.pop(name, None)
                if st is not None:  # back before it was forgotten: stop retiring it
                    st.serve_again()
                else:
                    st = SwitchSession(name, self._events, bridge=self._bridge,
                                       ovsdb_factory=self._factory,
                                       switch_targets=self._switch_targets,
                                       spawn=self._tasks.spawn)
                self._sessions[name] = st
            st.datapath_type = datapath_type
            if st.endpoint != endpoint or (endpoint is not None and st.ovsdb is None):
                connect = st.set_endpoint(endpoint)
                if connect is not None:
                    self._tasks.spawn(connect, f"ovsdb-{name}")

    def _retire(self, name: str) -> None:
        st = self._sessions.pop(name)
        st.begin_retiring()
        self._retiring[name] = st
        self._tasks.spawn(self._retirement(st), f"retire-{name}")

    async def _retirement(self, st: SwitchSession) -> None:
        cleaned = await st.retire(clean=self._may_program(), timeout=self._retire_timeout)
        if st.lifecycle is Lifecycle.RETIRED and self._retiring.get(st.hypervisor) is st:
            del self._retiring[st.hypervisor]
            self._on_retired(st.hypervisor)
            log.info("%s: forgotten%s", st.hypervisor, " (cleaned)" if cleaned else "")
        else:  # re-enlisted meanwhile: whatever it missed is reconciled now
            self._events.changed(st.hypervisor)

    # -- OpenFlow connections --------------------------------------------------------------------
    def _by_dpid(self, dpid: int | None) -> SwitchSession | None:
        if dpid is None:
            return None
        for st in (*self._sessions.values(), *self._retiring.values()):
            if st.datapath_id == dpid:
                return st
        return None

    async def accept(self, channel: SwitchChannel) -> None:
        """A switch connected (OpenFlowServer's on_switch): serve it until it goes away."""
        st = self._by_dpid(channel.datapath_id)
        if st is None or st.lifecycle is Lifecycle.RETIRED:
            # A retired switch keeps reconnecting (its bridge still names us): say it once.
            first = channel.datapath_id not in self._refused
            self._refused.add(channel.datapath_id)
            log.log(logging.WARNING if first else logging.DEBUG,
                    "switch %s (dpid %s) is not an enlisted hypervisor: refused", channel.peer,
                    channel.datapath_id)
            await channel.close()
            return
        self._refused.discard(channel.datapath_id)
        if not await self._may_bind(st, channel):
            self.impostors += 1
            await channel.close()
            return
        try:
            if not await st.attach(channel, self._role()):
                return
            await channel.wait_closed()
        finally:
            st.detach(channel)

    async def _may_bind(self, st: SwitchSession, channel: SwitchChannel) -> bool:
        """May this connection become st's channel? With TLS only if its certificate names
        st's hypervisor. Unauthenticated, a newcomer never silently replaces a channel that
        still answers (only one whose switch is gone, as after a reconnection)."""
        if self._authenticated:
            if channel.identity == st.hypervisor:
                return True
            log.warning("switch %s with certificate CN=%s claims datapath id %016x of "
                        "hypervisor %s: dropped", channel.peer, channel.identity,
                        st.datapath_id, st.hypervisor)
            return False
        current = st.live_channel()
        if current is None or current is channel or not await current.alive(LIVENESS_PROBE):
            return True
        log.warning("switch %s claims datapath id %016x of hypervisor %s, whose connection "
                    "from %s still answers: dropped", channel.peer, st.datapath_id,
                    st.hypervisor, current.peer)
        return False

    # -- roles -----------------------------------------------------------------------------------
    async def take_all(self, term: int) -> None:
        await asyncio.gather(*(st.take(term) for st in self._sessions.values()))

    async def yield_all(self, term: int) -> None:
        for st in list(self._sessions.values()):
            await st.yield_role(term)

    # -- reconciling -----------------------------------------------------------------------------
    def mark(self, names: Iterable[str] | None = None) -> None:
        """These switches (None: all) may differ from their desired state."""
        for name in (self._sessions if names is None else names):
            st = self._sessions.get(name)
            if st is not None:
                st.pending = True

    def resume_deferred(self) -> bool:
        """Rounds skipped while programming was not allowed become pending again; True if
        there were any (the caller runs them)."""
        deferred = [st for st in self._sessions.values() if st.deferred]
        for st in deferred:
            st.deferred, st.pending = False, True
        return bool(deferred)

    def run_pending(self) -> None:
        for st in self._sessions.values():
            if st.pending and not st.lock.locked():
                self._tasks.spawn(st.reconcile(self._desired, self._may_program),
                                  f"reconcile-{st.hypervisor}")

    def busy(self) -> bool:
        """Work is pending or running on some switch."""
        return any(st.pending or st.lock.locked() for st in self._sessions.values())

    async def close(self) -> None:
        await self._tasks.cancel_all()
        for st in [*self._sessions.values(), *self._retiring.values()]:
            if st.ovsdb is not None:
                try:
                    await st.ovsdb.stop()
                except Exception as e:
                    log.warning("%s: stopping OVSDB: %s", st.hypervisor, e)
