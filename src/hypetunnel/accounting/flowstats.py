"""Counters from the body of an OFPMP_FLOW reply: (table, cookie, packets, bytes) per entry.

Walks the fixed part of each ofp_flow_stats entry, as codec.flow_stats_cookies does, so a large
dump costs no os-ken objects; only the counters of our own flows are of interest."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from os_ken.ofproto import ofproto_v1_3 as ofp

from hypetunnel.errors import SouthboundError

_HEAD = struct.Struct(ofp.OFP_FLOW_STATS_0_PACK_STR)


@dataclass(frozen=True)
class FlowCount:
    table: int
    cookie: int
    packets: int
    bytes: int


def flow_counts(body: bytes) -> list[FlowCount]:
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
