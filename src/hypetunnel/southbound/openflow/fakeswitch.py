"""An in-process OpenFlow 1.3 switch for unit tests and the many-switch scale benchmarks.

It speaks just enough of the protocol for the controller: HELLO, FEATURES, ECHO, BARRIER, ROLE,
FlowMod (add, delete by cookie, strict delete), ONF bundles and flow-stats multipart. It parses
with fixed struct layouts rather than os-ken objects and runs as one coroutine per switch, so a
thousand of them fit in one process. Flows are kept as {(table, priority, match bytes): entry}.

MemoryFlowChannel is the wire-less variant: what a reconciler needs of a channel, with the flow
table as a set of cookies, for measuring the controller's own work without any I/O.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp

from hypetunnel.compiler.flows import Flow
from hypetunnel.southbound.openflow.server import parse_target

_HDR = struct.Struct("!BBHI")
_FEATURES = struct.Struct("!QIBB2xII")
_ROLE = struct.Struct("!I4xQ")
_FLOW_MOD = struct.Struct("!QQBBHHHIIIH2x")  # after the header; match follows at offset 48
_MATCH_HDR = struct.Struct("!HH")
_MP_HDR = struct.Struct("!HH4x")
_FLOW_STATS = struct.Struct("!HBxIIHHHH4xQQQ")
_EXP = struct.Struct("!II")
_BUNDLE_CTRL = struct.Struct("!IHH")
_BUNDLE_ADD = struct.Struct("!I2xH")
_ERROR = struct.Struct("!HH")
_ONF = 0x4F4E4600
_MAX_MSG = 0xFFFF
ALL_ONES_64 = 0xFFFF_FFFF_FFFF_FFFF


@dataclass
class FlowEntry:
    cookie: int
    seq: int  # install order: an entry rewritten by an add gets a new seq (like a new duration)


@dataclass
class _Rejection(Exception):
    etype: int
    code: int


@dataclass
class FakeSwitch:
    datapath_id: int
    reject_tables: set[int] = field(default_factory=set)  # adds there fail: FLOW_MOD_FAILED
    answer_echo: bool = True  # False simulates a hung switch
    flows: dict[tuple[int, int, bytes], FlowEntry] = field(default_factory=dict)
    received: Counter[str] = field(default_factory=Counter)
    role: int = ofp.OFPCR_ROLE_EQUAL
    generation_id: int | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _bundles: dict[int, list[tuple[tuple[object, ...], bytes]]] = field(default_factory=dict)

    @property
    def cookies(self) -> list[int]:
        return sorted(e.cookie for e in self.flows.values())

    @property
    def flow_mods(self) -> int:
        """FlowMods received, plain or inside bundles."""
        return self.received["flow_mod"]

    async def connect(self, target: str, ssl_context: ssl.SSLContext | None = None) -> None:
        """Connect to a controller ("tcp:HOST:PORT" / "unix:/path", over TLS with a client
        context) and serve until EOF."""
        kind, where, port = parse_target(target, tls=ssl_context is not None)
        tls: dict[str, Any] = {}
        if ssl_context is not None:
            tls = {"ssl": ssl_context, "server_hostname": "controller"}
        if kind == "unix":
            reader, writer = await asyncio.open_unix_connection(where, **tls)
        else:
            reader, writer = await asyncio.open_connection(where, port, **tls)
        await self.run(reader, writer)

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_HDR.pack(ofp.OFP_VERSION, ofp.OFPT_HELLO, 8, 0))
        self.connected.set()
        try:
            while True:
                header = await reader.readexactly(8)
                _v, msg_type, length, xid = _HDR.unpack(header)
                buf = header + await reader.readexactly(length - 8)
                replies = self._handle(msg_type, xid, buf)
                if replies:
                    writer.write(b"".join(replies))
                    if writer.transport.get_write_buffer_size() > 1 << 20:
                        await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.connected.clear()
            writer.close()

    # -- message handling ------------------------------------------------------------------------

    def _handle(self, msg_type: int, xid: int, buf: bytes) -> list[bytes]:
        if msg_type == ofp.OFPT_HELLO:
            return []
        if msg_type == ofp.OFPT_ECHO_REQUEST:
            self.received["echo"] += 1
            return [_msg(ofp.OFPT_ECHO_REPLY, xid, buf[8:])] if self.answer_echo else []
        if msg_type == ofp.OFPT_ECHO_REPLY:
            return []
        if msg_type == ofp.OFPT_FEATURES_REQUEST:
            return [_msg(ofp.OFPT_FEATURES_REPLY, xid,
                         _FEATURES.pack(self.datapath_id, 0, 254, 0, 0, 0))]
        if msg_type == ofp.OFPT_BARRIER_REQUEST:
            self.received["barrier"] += 1
            return [_msg(ofp.OFPT_BARRIER_REPLY, xid)]
        if msg_type == ofp.OFPT_ROLE_REQUEST:
            return self._role(xid, buf)
        if msg_type == ofp.OFPT_FLOW_MOD:
            return self._guard(xid, buf, lambda: self._flow_mod(buf))
        if msg_type == ofp.OFPT_MULTIPART_REQUEST:
            self.received["multipart"] += 1
            return self._multipart(xid, buf)
        if msg_type == ofp.OFPT_EXPERIMENTER:
            return self._experimenter(xid, buf)
        if msg_type == ofp.OFPT_PACKET_OUT:
            self.received["packet_out"] += 1  # no data path here to send it through
            return []
        return [_error(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_TYPE, xid, buf)]

    @staticmethod
    def _guard(xid: int, buf: bytes, action: object) -> list[bytes]:
        try:
            action()  # type: ignore[operator]
        except _Rejection as r:
            return [_error(r.etype, r.code, xid, buf)]
        return []

    def _check_flow_mod(self, buf: bytes) -> tuple[tuple[object, ...], bytes]:
        fields = _FLOW_MOD.unpack_from(buf, 8)
        _mtype, mlen = _MATCH_HDR.unpack_from(buf, 48)
        match = buf[48:48 + mlen + (-mlen % 8)]
        table, command = fields[2], fields[3]
        if self.role == ofp.OFPCR_ROLE_SLAVE:
            raise _Rejection(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_IS_SLAVE)
        if command == ofp.OFPFC_ADD and table in self.reject_tables:
            raise _Rejection(ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_BAD_TABLE_ID)
        if command not in (ofp.OFPFC_ADD, ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT):
            raise _Rejection(ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_BAD_COMMAND)
        return fields, match

    def _flow_mod(self, buf: bytes) -> None:
        fields, match = self._check_flow_mod(buf)
        self._apply(fields, match)

    def _apply(self, fields: tuple[object, ...], match: bytes) -> None:
        self.received["flow_mod"] += 1
        cookie, mask, table, command, _i, _h, priority = fields[:7]
        assert isinstance(cookie, int) and isinstance(mask, int) and isinstance(table, int)
        if command == ofp.OFPFC_ADD:
            self.flows[(table, priority, match)] = FlowEntry(cookie, next(self._seq))  # type: ignore[index]
            return
        strict = command == ofp.OFPFC_DELETE_STRICT
        empty_match = len(match) <= 8 and match[2:4] == b"\x00\x04"
        doomed = [k for k, e in self.flows.items()
                  if (table == ofp.OFPTT_ALL or k[0] == table)
                  and (e.cookie & mask) == (cookie & mask)
                  and (not strict or k[1] == priority)
                  # non-strict delete with a match: only exact matches (enough for our tests)
                  and ((empty_match and not strict) or k[2] == match)]
        for k in doomed:
            del self.flows[k]

    def _role(self, xid: int, buf: bytes) -> list[bytes]:
        role, generation = _ROLE.unpack_from(buf, 8)
        if role in (ofp.OFPCR_ROLE_MASTER, ofp.OFPCR_ROLE_SLAVE):
            if self.generation_id is not None and \
                    ((generation - self.generation_id) & ALL_ONES_64) >> 63:
                return [_error(ofp.OFPET_ROLE_REQUEST_FAILED, ofp.OFPRRFC_STALE, xid, buf)]
            self.generation_id = generation
        if role != ofp.OFPCR_ROLE_NOCHANGE:
            self.role = role
        gen = self.generation_id if self.generation_id is not None else 0
        return [_msg(ofp.OFPT_ROLE_REPLY, xid, _ROLE.pack(self.role, gen))]

    def _multipart(self, xid: int, buf: bytes) -> list[bytes]:
        mp_type, _flags = _MP_HDR.unpack_from(buf, 8)
        if mp_type != ofp.OFPMP_FLOW:
            return [_error(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_MULTIPART, xid, buf)]
        entries = [_FLOW_STATS.pack(48 + len(m), t, 1, 0, p, 0, 0, 0, e.cookie, 0, 0) + m
                   for (t, p, m), e in self.flows.items()]
        return list(_chunk_multipart(ofp.OFPMP_FLOW, xid, entries))

    def _experimenter(self, xid: int, buf: bytes) -> list[bytes]:
        experimenter, exp_type = _EXP.unpack_from(buf, 8)
        if experimenter != _ONF:
            return [_error(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_EXPERIMENTER, xid, buf)]
        if exp_type == ofp.ONF_ET_BUNDLE_ADD_MESSAGE:
            bundle_id, _flags = _BUNDLE_ADD.unpack_from(buf, 16)
            if bundle_id not in self._bundles:
                return [_error(ofp.OFPET_EXPERIMENTER, ofp.ONFERR_ET_BAD_ID, xid, buf)]
            # Like OVS: a bad message is refused when it is added and the bundle stays open.
            inner_msg = buf[24:]
            if inner_msg[1] != ofp.OFPT_FLOW_MOD:
                return [_error(ofp.OFPET_EXPERIMENTER, ofp.ONFERR_ET_MSG_UNSUP, xid, buf)]
            try:
                self._bundles[bundle_id].append(self._check_flow_mod(inner_msg))
            except _Rejection as r:
                return [_error(r.etype, r.code, xid, buf)]
            return []
        if exp_type != ofp.ONF_ET_BUNDLE_CONTROL:
            return [_error(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_EXP_TYPE, xid, buf)]
        bundle_id, ctrl, flags = _BUNDLE_CTRL.unpack_from(buf, 16)
        reply = [_msg(ofp.OFPT_EXPERIMENTER, xid,
                      _EXP.pack(_ONF, ofp.ONF_ET_BUNDLE_CONTROL)
                      + _BUNDLE_CTRL.pack(bundle_id, ctrl + 1, flags))]
        if ctrl == ofp.ONF_BCT_OPEN_REQUEST:
            self._bundles[bundle_id] = []
            return reply
        inner = self._bundles.pop(bundle_id, None)
        if inner is None:
            return [_error(ofp.OFPET_EXPERIMENTER, ofp.ONFERR_ET_BAD_ID, xid, buf)]
        if ctrl != ofp.ONF_BCT_COMMIT_REQUEST:
            return reply  # discard / close
        self._commit(inner)
        return reply

    def _commit(self, checked: Iterable[tuple[tuple[object, ...], bytes]]) -> None:
        for fields, match in checked:
            self._apply(fields, match)


class MemoryFlowChannel:
    """A reconciler's FlowChannel without a wire: the table is a set of cookies, and each batch
    is recorded as (cookies added, cookies deleted). Its methods never suspend."""

    def __init__(self) -> None:
        self.cookies: set[int] = set()
        self.batches: list[tuple[set[int], set[int]]] = []

    async def dump_flow_cookies(self) -> list[int]:
        return list(self.cookies)

    async def send_flow_batch(self, adds: Sequence[Flow], delete_cookies: Iterable[int],
                              atomic: bool = True) -> None:
        added, deleted = {f.cookie for f in adds}, set(delete_cookies)
        self.batches.append((added, deleted))
        self.cookies -= deleted
        self.cookies |= added

    def is_ready(self) -> bool:
        return True


def _msg(msg_type: int, xid: int, body: bytes = b"") -> bytes:
    return _HDR.pack(ofp.OFP_VERSION, msg_type, 8 + len(body), xid) + body


def _error(etype: int, code: int, xid: int, offending: bytes) -> bytes:
    return _msg(ofp.OFPT_ERROR, xid, _ERROR.pack(etype, code) + offending[:64])


def _chunk_multipart(mp_type: int, xid: int, entries: list[bytes]) -> Iterable[bytes]:
    """Split entries over replies that fit OpenFlow's 16-bit length, MORE set on all but last."""
    chunks: list[list[bytes]] = [[]]
    size = 16
    for entry in entries:
        if size + len(entry) > _MAX_MSG:
            chunks.append([])
            size = 16
        chunks[-1].append(entry)
        size += len(entry)
    for i, chunk in enumerate(chunks):
        more = ofp.OFPMPF_REPLY_MORE if i < len(chunks) - 1 else 0
        yield _msg(ofp.OFPT_MULTIPART_REPLY, xid, _MP_HDR.pack(mp_type, more) + b"".join(chunk))
