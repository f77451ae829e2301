"""Run the API's writes off the event loop, each within a bound.

A write is a FabricService call: validation, compilation-free planning and one store commit,
which is SQLite on disk or etcd over HTTP. On the controller's event loop that would stall the
OpenFlow channels and the HA heartbeats for as long as the store takes, so writes run in a
worker thread. The service serializes them under its own lock and hands on_change back to the
loop itself (call_soon_threadsafe), so nothing else changes for the runtime.

A store that stops answering must not hang the client either: after `timeout` seconds the
request fails with 503 (StoreUnavailable). The thread cannot be interrupted; if the store
answers later the write may still be applied, and the error says so (the revision tells).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from hypetunnel.store.base import StoreUnavailable

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_WRITE_TIMEOUT = 10.0  # seconds; under the CLI's read timeout, above the stores' own


class WriteRunner:
    def __init__(self, timeout: float = DEFAULT_WRITE_TIMEOUT) -> None:
        self.timeout = timeout
        # A pool of its own: a hung store must not starve the loop's default executor, which
        # the runtime uses for its own store reads. Writes queue on the service's lock anyway.
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="api-write")

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        # Run in the request's context, as asyncio.to_thread does: the commit then finds the
        # request it is made for (its audit row commits with it, store/audit.py).
        context = contextvars.copy_context()
        future = loop.run_in_executor(self._pool, functools.partial(context.run, fn, *args,
                                                                    **kwargs))
        try:
            return await asyncio.wait_for(future, self.timeout)
        except TimeoutError as e:
            raise StoreUnavailable(
                f"the store did not answer within {self.timeout:g} s; the write may still be "
                "applied when it does (check the revision before retrying)") from e
