"""The slice of the Open_vSwitch schema we replicate, and fetching the schema from the server.

The schema comes from the server itself (get_schema), not from a local .ovsschema file: the
controller may run on a host without Open vSwitch installed, and the server knows best which
columns it has. Fetching goes through a reconnecting JSON-RPC session so a server that is not
up yet is simply waited for (with backoff) instead of failing.
"""

from __future__ import annotations

import os
from typing import Any

import ovs.jsonrpc
import ovs.poller
from ovs.db.idl import SchemaHelper

from hypetunnel.errors import SouthboundError

DATABASE = "Open_vSwitch"

# Only what snapshots read and ensure_* write; everything else stays on the server.
MONITORED: dict[str, list[str]] = {
    "Open_vSwitch": ["bridges"],
    "Bridge": ["name", "datapath_id", "datapath_type", "ports", "fail_mode", "protocols",
               "controller", "other_config"],
    "Port": ["name", "interfaces"],
    "Interface": ["name", "type", "options", "ofport", "external_ids", "link_state", "bfd",
                  "bfd_status", "mtu"],
    "Controller": ["target", "max_backoff", "inactivity_probe"],
}

# Reconnect backoff of our sessions (ms): short, so a restarted server is found within ~1 s.
MIN_BACKOFF_MS = 250
MAX_BACKOFF_MS = 1000
# Idle this long, the session sends an echo; no answer for as long again, it is dead. The
# library's 5 s made a silent hypervisor (its OVS killed: the management overlay through it
# goes too, so no FIN arrives) count as lost only after ~10 s: 2 s finds it in 2-4 s, for one
# small echo per idle hypervisor every 2 s.
PROBE_INTERVAL_MS = 2000


def tune_session(session: ovs.jsonrpc.Session) -> None:
    session.reconnect.set_backoff(MIN_BACKOFF_MS, MAX_BACKOFF_MS)
    session.reconnect.set_probe_interval(PROBE_INTERVAL_MS)


def schema_helper(schema_json: dict[str, Any]) -> SchemaHelper:
    """A helper registering only MONITORED; a server lacking one of them is an error."""
    tables = schema_json.get("tables", {})
    for table, columns in MONITORED.items():
        missing = [c for c in columns if c not in tables.get(table, {}).get("columns", {})]
        if table not in tables or missing:
            raise SouthboundError(f"OVSDB schema lacks {table} {missing or ''}".rstrip())
    helper = SchemaHelper(schema_json=schema_json)
    for table, columns in MONITORED.items():
        helper.register_columns(table, columns)
    return helper


class SchemaFetcher:
    """Asks the server for the Open_vSwitch schema until it answers, without ever blocking.

    Driven by the IDL thread's poll loop (poll() then wait(poller)), so queued writes keep
    their deadlines and stop() stays prompt while the server is not up yet.
    """

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._session = ovs.jsonrpc.Session.open(endpoint)
        tune_session(self._session)
        self._request_id: Any = None
        self._sent_on_seqno: int | None = None

    def poll(self) -> dict[str, Any] | None:
        """The schema once the server has answered, else None (call again after wait())."""
        session = self._session
        session.run()
        if session.is_connected() and self._sent_on_seqno != session.get_seqno():
            # A new connection: (re)send the request on it.
            request = ovs.jsonrpc.Message.create_request("get_schema", [DATABASE])
            self._request_id = request.id
            self._sent_on_seqno = session.get_seqno()
            session.send(request)
        while (msg := session.recv()) is not None:
            if msg.id != self._request_id:
                continue
            if msg.type == ovs.jsonrpc.Message.T_REPLY:
                result: dict[str, Any] = msg.result  # the schema, a JSON object
                return result
            if msg.type == ovs.jsonrpc.Message.T_ERROR:
                raise SouthboundError(f"{self.endpoint}: get_schema failed: {msg.error}")
        return None

    def wait(self, poller: ovs.poller.Poller) -> None:
        self._session.wait(poller)
        self._session.recv_wait(poller)

    def close(self) -> None:
        self._session.close()


def drain(fd: int) -> None:
    """Empty a non-blocking wake-up pipe."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        return
