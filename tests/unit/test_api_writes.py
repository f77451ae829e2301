"""API writes run off the event loop and within a bound: a hung store answers 503, never hangs,
and the loop keeps its pace meanwhile (it also carries OpenFlow and the HA heartbeats)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import httpx
import pytest

from hypetunnel.api.app import create_app
from hypetunnel.controller.service import FabricService
from hypetunnel.store.memory import MemoryStore
from tests.unit.auth_helpers import bearer, mint, separate_tokens

API = "/api/v1"


class HangingStore(MemoryStore):
    """Commits block until released (a store that stopped answering), and say on which thread
    they ran."""

    def __init__(self) -> None:
        super().__init__()
        self.hang = threading.Event()
        self.release = threading.Event()
        self.commit_threads: list[int] = []

    def commit(self, puts: Mapping[str, dict[str, Any]], deletes: Iterable[str], *,
               expect_revision: int | None = None) -> int:
        self.commit_threads.append(threading.get_ident())
        if self.hang.is_set():
            self.release.wait(10)
        return super().commit(puts, deletes, expect_revision=expect_revision)


@pytest.fixture
def store() -> Iterator[HangingStore]:
    s = HangingStore()
    try:
        yield s
    finally:
        s.release.set()  # let a parked worker thread finish


async def _client(store: HangingStore, timeout: float) -> tuple[httpx.AsyncClient, list[int]]:
    changes: list[int] = []
    service = FabricService(store, on_change=lambda _o, _n: changes.append(threading.get_ident()))
    app = create_app(service, write_timeout=timeout, tokens=separate_tokens())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                             headers=bearer(mint(app))), changes


def test_writes_run_in_a_worker_thread(store: HangingStore) -> None:
    async def go() -> None:
        client, changes = await _client(store, 5.0)
        async with client:
            r = await client.post(f"{API}/tenants", json={"name": "acme"})
            assert r.status_code == 200, r.text
        loop_thread = threading.get_ident()
        assert store.commit_threads and loop_thread not in store.commit_threads
        assert changes and loop_thread not in changes  # the runtime hops back on its own

    asyncio.run(go())


def test_a_hung_store_answers_503_within_the_bound_and_the_loop_keeps_ticking(
        store: HangingStore) -> None:
    async def go() -> None:
        client, _ = await _client(store, 0.5)
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        store.hang.set()
        async with client:
            started = time.monotonic()
            r = await client.post(f"{API}/tenants", json={"name": "acme"})
            took = time.monotonic() - started
        done.set()
        await tick
        assert r.status_code == 503, r.text
        [err] = r.json()["detail"]["errors"]
        assert "did not answer within 0.5 s" in err["reason"] and err["path"] == ""
        assert 0.4 < took < 3.0
        # The loop was free while the commit hung: it ticked all along.
        assert len(gaps) > 10 and max(gaps) < 0.3

    asyncio.run(go())
