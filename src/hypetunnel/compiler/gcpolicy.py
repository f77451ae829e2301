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

A settle collects generations 0 and 1 only, unless something reached generation 2 since the
previous settle (then a full collection, which alone can see it). What is not frozen is the
same either way, but only a full collection untracks the dicts that hold no container (CPython
`untrack_dicts`). After a reclaim has done that to the large memo dicts (functools.lru_cache's,
the interned match fields, the topology's indexes), each new key put one back among the young
objects; a full collection per settle then walked it and untracked it again, change after
change: +2-5 ms per VM move at 1/10 scale from the first reclaim on (a 15,000-entry memo dict
walked at every settle). Collected by a young collection, such a dict stays tracked and is
frozen, so it is walked once per reclaim, not once per change.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

BULK_SLICES = 2000  # a recompute of this many slices is a (re)build of a large part of the fabric
RECLAIM_EVERY = 5000  # settles between two full collections of the frozen objects too
_settles = 0
# gc.get_count()[2] right after the last settle: it counts collections of generation 1 since
# the last full one, so it moves only if one ran (ours, or an automatic one) or a full one did.
_old_count = -1


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
    global _settles, _old_count
    if not gc.isenabled():
        return
    _settles += 1
    if _settles >= RECLAIM_EVERY:
        _settles = 0
        gc.unfreeze()  # cycles frozen while alive and dead since: collected now
        gc.collect()
    elif gc.get_count()[2] != _old_count:
        gc.collect()  # a collection since the last settle may have moved objects to gen 2
    else:
        gc.collect(1)  # generation 2 holds only frozen objects: nothing to look at there
    _old_count = gc.get_count()[2]
    gc.freeze()
