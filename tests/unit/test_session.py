"""One switch's session state machine, driven by a fake OVSDB client."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hypetunnel.controller.session import OvsdbState, SwitchSession
from hypetunnel.southbound.observation import SwitchObservation
from tests.unit.controller_fakes import Fabric, until

pytestmark = pytest.mark.timeout(10)


class Events:
    def __init__(self, session: list[SwitchSession]) -> None:
        self.session = session
        self.ovsdb_states: list[OvsdbState] = []
        self.observations: list[SwitchObservation] = []
        self.health: list[str] = []

    def observed(self, hypervisor: str, obs: SwitchObservation) -> None:
        self.observations.append(obs)

    def health_changed(self, hypervisor: str) -> None:
        self.health.append(hypervisor)

    def changed(self, hypervisor: str) -> None:
        state = self.session[0].ovsdb_state
        if not self.ovsdb_states or self.ovsdb_states[-1] is not state:
            self.ovsdb_states.append(state)


def make(fabric: Fabric) -> tuple[SwitchSession, Events, set[asyncio.Task[Any]]]:
    holder: list[SwitchSession] = []
    events = Events(holder)
    tasks: set[asyncio.Task[Any]] = set()

    def spawn(coro: Any, name: str) -> None:
        tasks.add(asyncio.get_running_loop().create_task(coro, name=name))

    st = SwitchSession("hv1", events, bridge="br-int", ovsdb_factory=fabric.ovsdb,
                       switch_targets=[], spawn=spawn)
    holder.append(st)
    return st, events, tasks


def test_ovsdb_session_walks_its_states_and_reports_observations() -> None:
    fabric = Fabric("hv1")
    hv = fabric.hvs["hv1"]
    hv.reachable = False

    async def body() -> None:
        st, events, tasks = make(fabric)
        connect = st.set_endpoint("unix:/fake/hv1.sock")
        assert connect is not None
        tasks.add(asyncio.get_running_loop().create_task(connect))
        await until(lambda: hv.start_attempts >= 2, "retrying while unreachable")
        assert st.ovsdb_state is OvsdbState.CONNECTING and not st.bindings_known
        hv.reachable = True
        await until(lambda: st.ovsdb_state is OvsdbState.SYNCED, "synced")
        hv.plug("acme/web1")
        await until(lambda: st.bound == {"acme/web1"}, "binding observed")
        assert events.observations[-1].bindings().keys() == {"acme/web1"}
        [client] = hv.clients
        client.on_health()  # a BFD report: passed up as such, no state change
        assert events.health == ["hv1"] and st.ovsdb_state is OvsdbState.SYNCED
        client._on_connection(False)
        assert st.ovsdb_state is OvsdbState.LOST and st.bindings_known  # last snapshot kept
        client._on_connection(True)
        assert events.ovsdb_states == [OvsdbState.CONNECTING, OvsdbState.CONFIGURING,
                                       OvsdbState.SYNCED, OvsdbState.LOST, OvsdbState.SYNCED]
        # A new endpoint: the old client is stopped, its late reports are ignored.
        connect = st.set_endpoint("unix:/fake/hv1-new.sock")
        assert connect is not None
        assert client.stopped is False  # stopping runs as a task
        tasks.add(asyncio.get_running_loop().create_task(connect))
        await until(lambda: client.stopped and st.ovsdb_state is OvsdbState.SYNCED,
                    "reconnected to the new endpoint")
        seen = len(events.observations)
        client._on_change(hv.snapshot())
        assert len(events.observations) == seen
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(body())


def test_an_impossible_transition_is_refused() -> None:
    fabric = Fabric("hv1")

    async def body() -> None:
        st, _, _ = make(fabric)
        with pytest.raises(AssertionError, match="idle -> synced is not a transition"):
            st._ovsdb_to(OvsdbState.SYNCED)

    asyncio.run(body())
