"""How the compiler treats Python's cyclic garbage collector.

The compiled fabric is millions of small objects (flows, match tuples, slices) that live long
and form no reference cycle. Left to the collector, they are scanned again and again: a third of
a full compile's CPU at 100,000 VMs, and every later collection of the old generation walks
them (pauses of 50-300 ms in the middle of single VM changes, measured with gc.callbacks in
benchmarks/compiler_scale.py). Incremental changes keep adding to them: each VM change leaves
~100-300 new long-lived objects, so the young collections and, above all, the full ones grow
with the churn since the last freeze.

So what the compiler builds goes into the permanent generation (gc.freeze), where no collection
looks at it; frozen objects are still freed by reference counting when the compiler drops them.
- A bulk compile runs with the collector paused, then freezes what survives.
- After an incremental recompute, `settle` first collects everything not frozen yet (cheap: only
  what was allocated since the last settle, so a few hundred objects) and then freezes the rest.
  Collecting first means no garbage cycle is ever frozen.
The price: a freeze takes every live object of the process, not only the compiler's. A reference
cycle that is alive at a freeze (an in-flight request, a task with a traceback) and becomes
garbage later would never be collected, and a controller that runs for months would leak a
little at every change. So every RECLAIM_EVERY settles, one full collection runs over
everything (unfreeze, collect, freeze again): a pause as long as one full collection of the
fabric (tens to a few hundred ms at 100,000 VMs), at most once per that many changes, instead
of at random ones.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

BULK_SLICES = 2000  # a recompute of this many slices is a (re)build of a large part of the fabric
RECLAIM_EVERY = 5000  # settles between two full collections of the frozen objects too
_settles = 0


@contextmanager
def long_lived_allocations() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.enable()


def settle() -> None:
    """Collect what is not frozen yet, then freeze what survived (see the module docstring).
    Does nothing while the collector is disabled (inside long_lived_allocations, or when the
    process turned it off)."""
    global _settles
    if not gc.isenabled():
        return
    _settles += 1
    if _settles >= RECLAIM_EVERY:
        _settles = 0
        gc.unfreeze()  # cycles frozen while alive and dead since: collected now
    gc.collect()
    gc.freeze()
