"""The daemon loads every heavy module before its event loop runs."""

from __future__ import annotations

import subprocess
import sys


def test_the_ovsdb_client_is_loaded_with_the_daemon_not_on_the_loop() -> None:
    # Imported lazily at the first enlisted switch, python-ovs (and the eventlet it imports)
    # blocked the active's loop long enough to miss heartbeats: the standby took over.
    probe = ("import sys, hypetunnel.daemon\n"
             "print('hypetunnel.southbound.ovsdb.client' in sys.modules, 'ovs.db.idl' in "
             "sys.modules)")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", probe], capture_output=True,
                         text=True, check=True, timeout=25).stdout.split()
    assert out == ["True", "True"]
