# -*- coding: utf-8 -*-
# Copyright: HypeTunnel developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Following VM moves to their end through the move log (GET /api/v1/moves).

A move record is written when the move starts (result "running", end null) and again when the
controller has followed it to its end: result "ok" (the VM's network is whole again at the
destination) or "timeout" (the controller gave up following it).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from urllib.parse import urlencode

POLL_INTERVAL = 0.2  # seconds between looks at the move log


def vm_moves(api, vm):
    """The move log of one VM ("tenant/name"), oldest first."""
    return sorted(api.get("/moves?" + urlencode({"vm": vm})) or [], key=lambda r: r["seq"])


def running(api, vm):
    """The VM's newest move if it has not ended, else None."""
    log = vm_moves(api, vm)
    return log[-1] if log and log[-1].get("end") is None else None


def wait(api, records, timeout):
    """The records again once each has ended, or at `timeout` seconds (some may not have)."""
    deadline = time.monotonic() + timeout
    pending = dict(((r["vm"], r["seq"]), r) for r in records)
    done = {}
    while True:
        for vm in sorted(set(k[0] for k in pending)):
            for rec in vm_moves(api, vm):
                key = (vm, rec["seq"])
                if key in pending and rec.get("end") is not None:
                    done[key] = rec
                    del pending[key]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(POLL_INTERVAL)
    return [done.get((r["vm"], r["seq"]), pending.get((r["vm"], r["seq"]), r)) for r in records]


def unfinished(records):
    return [r for r in records if r.get("end") is None]


def failed(records):
    return [r for r in records if r.get("end") is not None and r.get("result") != "ok"]


def describe(rec):
    return "%s %s -> %s (%s): %s" % (rec.get("vm"), rec.get("from"), rec.get("to"),
                                     rec.get("kind"), rec.get("result"))
