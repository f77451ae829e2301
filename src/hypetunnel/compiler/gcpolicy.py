"""How a bulk compile treats Python's cyclic garbage collector.

A full compile allocates millions of small objects (flows, match tuples, slices) that all live
on, and none of them is part of a reference cycle. The cyclic GC would scan them again and again
while they are being built (a third of the compile's CPU at 100,000 VMs) and then walk them on
every later full collection (pauses of 100-400 ms in the middle of single VM changes). So a bulk
compile runs with the collector paused and then moves what survives into the permanent
generation (gc.freeze): those objects are still freed by reference counting when the compiler
drops them; only a cycle among them would never be collected, and the compiler makes none.
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
