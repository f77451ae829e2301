"""Counters from the body of an OFPMP_FLOW reply: (table, cookie, packets, bytes) per entry.

Walks the fixed part of each ofp_flow_stats entry, as codec.flow_stats_cookies does, so a large
dump costs no os-ken objects; only the counters of our own flows are of interest."""

from __future__ import annotations

import struct
from collections.abc import Container
from dataclasses import dataclass

from os_ken.ofproto import ofproto_v1_3 as ofp

from hypetunnel.errors import SouthboundError

_HEAD = struct.Struct(ofp.OFP_FLOW_STATS_0_PACK_STR)
# The fields a poll needs, at their offsets in the fixed part: a switch's reply holds every flow
# (1,500 per switch at scale) and a few in four are metered, so the others cost two reads.
_LENGTH = struct.Struct("!H")  # at 0
_TABLE = 2
_COUNTERS = struct.Struct("!QQQ")  # cookie, packet_count, byte_count at 24
_COUNTERS_AT = 24


@dataclass(frozen=True)
class FlowCount:
    table: int
    cookie: int
    packets: int
    bytes: int


def flow_counts(body: bytes, wanted: Container[int] | None = None) -> list[FlowCount]:
    """Every entry's counters, or (`wanted`) only those of these cookies."""
    if wanted is not None:
        return _wanted_counts(body, wanted)
    out: list[FlowCount] = []
    offset, end = 0, len(body)
    while offset + _HEAD.size <= end:
        f = _HEAD.unpack_from(body, offset)
        length = f[0]
        if length < _HEAD.size:
            raise SouthboundError(f"malformed flow stats entry of length {length}")
        # Unpacked (pads skipped): length, table_id, duration_sec, duration_nsec, priority,
        # idle_timeout, hard_timeout, flags, cookie, packet_count, byte_count.
        out.append(FlowCount(table=f[1], cookie=f[8], packets=f[9], bytes=f[10]))
        offset += length
    return out


def _wanted_counts(body: bytes, wanted: Container[int]) -> list[FlowCount]:
    out: list[FlowCount] = []
    offset, end, head = 0, len(body), _HEAD.size
    length_of, counters_of = _LENGTH.unpack_from, _COUNTERS.unpack_from
    while offset + head <= end:
        (length,) = length_of(body, offset)
        if length < head:
            raise SouthboundError(f"malformed flow stats entry of length {length}")
        cookie, packets, nbytes = counters_of(body, offset + _COUNTERS_AT)
        if cookie in wanted:
            out.append(FlowCount(body[offset + _TABLE], cookie, packets, nbytes))
        offset += length
    return out
