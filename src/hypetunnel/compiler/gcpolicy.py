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
The price: a reference cycle that is alive at a freeze and becomes garbage later is freed only
if something breaks the cycle; the compiler makes none, and no collection pause grows with the
fabric or with the churn.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

BULK_SLICES = 2000  # a recompute of this many slices is a (re)build of a large part of the fabric


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
    if gc.isenabled():
        gc.collect()
        gc.freeze()
