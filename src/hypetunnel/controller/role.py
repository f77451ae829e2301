"""This controller's role: who may write the store and program switches.

Without HA the controller is always active and writes the store directly. With HA the Election
decides; the role then also says which store the service must write through: the store fenced
on our term while active, a refusing StandbyStore otherwise. The role knows neither switches nor
the fabric: the runtime is told of every change through `on_active` / `on_standby`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from hypetunnel.controller.ha import Election, HaConfig, NotActive, Role, StandbyStore
from hypetunnel.store.base import HaStore, Store


class ControllerRole:
    def __init__(self, store: Store, ha: HaConfig | None, *,
                 on_active: Callable[[int], Awaitable[None]],
                 on_standby: Callable[[int], Awaitable[None]]) -> None:
        self._store = store
        self._ha_store: HaStore | None = None
        self.election: Election | None = None
        if ha is not None:
            if not isinstance(store, HaStore):
                raise ValueError(f"a controller pair needs a store with an election (etcd), "
                                 f"not {type(store).__name__}")
            self._ha_store = store
            self.election = Election(store, ha, on_active=on_active, on_standby=on_standby)

    @property
    def is_active(self) -> bool:
        return self.election is None or self.election.role is Role.ACTIVE

    @property
    def known(self) -> bool:
        """The election has decided (a starting HA controller is neither active nor standby)."""
        return self.election is None or self.election.role is not Role.STARTING

    @property
    def term(self) -> int:
        return 0 if self.election is None else self.election.term

    def openflow_role(self) -> tuple[str, int] | None:
        """The role request for a newly connected switch; None without HA (no request)."""
        if self.election is None:
            return None
        return ("MASTER" if self.is_active else "SLAVE"), self.election.term

    def writable_store(self) -> Store:
        """The store the service must write through in the current role."""
        if self._ha_store is None:
            return self._store
        if self.is_active:
            return self._ha_store.fenced(self.term)
        return StandbyStore(self._ha_store, self._ha_store.leader)

    def watch(self, on_change: Callable[[], None]) -> Callable[[], None] | None:
        """With HA, call on_change (from another thread) when the shared store changed."""
        return None if self._ha_store is None else self._ha_store.watch(on_change)

    async def run(self) -> None:
        if self.election is not None:
            await self.election.run()

    async def failover(self) -> dict[str, Any]:
        if self.election is None:
            raise NotActive("this controller runs without a standby (no --ha)")
        await self.election.step_down()
        return self.election.describe()

    def describe(self) -> dict[str, Any]:
        if self.election is None:
            return {"role": "active", "term": 0}
        return self.election.describe()
