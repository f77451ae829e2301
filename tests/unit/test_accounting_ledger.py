"""The baseline arithmetic of accounting/ledger.py: resets, moves, restarts, no double count."""

from __future__ import annotations

import struct

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp

from hypetunnel.accounting.flowstats import flow_counts
from hypetunnel.accounting.ledger import Counter
from hypetunnel.errors import SouthboundError

A, B = ("hv1", 7), ("hv2", 9)


def test_steady_readings_count_once() -> None:
    c = Counter()
    for n in (10, 25, 25, 40):
        c.observe(A, n, n * 100)
    assert (c.packets, c.bytes) == (40, 4000)


def test_reinstall_banks_the_old_reading() -> None:
    c = Counter()
    c.observe(A, 50, 5000)
    c.observe(A, 3, 300)  # flow reinstalled, restarted at 0
    assert (c.packets, c.bytes) == (53, 5300)
    c.observe(A, 10, 1000)
    assert (c.packets, c.bytes) == (60, 6000)


def test_move_counts_both_switches_once() -> None:
    c = Counter()
    c.observe(A, 20, 2000)
    c.observe(B, 5, 500)  # VM moved: new flow on hv2 from 0
    c.retire_switch("hv1", seen=set())  # the old flow is gone from hv1
    assert (c.packets, c.bytes) == (25, 2500)
    c.observe(B, 8, 800)
    assert (c.packets, c.bytes) == (28, 2800)


def test_restart_from_stored_doc_neither_resets_nor_doubles() -> None:
    c = Counter()
    c.observe(A, 30, 3000)
    c.observe(B, 1, 100)
    c.retire(B)
    again = Counter.from_doc(c.to_doc())  # new controller (restart or failover)
    assert (again.packets, again.bytes) == (31, 3100)
    again.observe(A, 30, 3000)  # same reading re-read: no double count
    assert again.bytes == 3100
    again.observe(A, 35, 3500)
    assert (again.packets, again.bytes) == (36, 3600)


def test_total_never_decreases() -> None:
    c = Counter()
    seen = []
    for reading in (5, 9, 0, 2, 2, 1, 7):
        c.observe(A, reading, reading)
        seen.append(c.bytes)
    assert seen == sorted(seen)


def test_negative_reading_refused() -> None:
    with pytest.raises(ValueError):
        Counter().observe(A, -1, 0)


def _entry(table: int, cookie: int, pkts: int, nbytes: int) -> bytes:
    head = struct.Struct(ofp.OFP_FLOW_STATS_0_PACK_STR)
    match = b"\x00\x01\x00\x04\x00\x00\x00\x00"  # empty OXM match, padded to 8
    return head.pack(head.size + len(match), table, 0, 0, 100, 0, 0, 0, cookie,
                     pkts, nbytes) + match


def test_flow_counts_walks_entries() -> None:
    body = _entry(1, 0xAB, 3, 294) + _entry(4, 0xCD, 0, 0)
    got = flow_counts(body)
    assert [(f.table, f.cookie, f.packets, f.bytes) for f in got] == [(1, 0xAB, 3, 294),
                                                                      (4, 0xCD, 0, 0)]


def test_flow_counts_refuses_bad_length() -> None:
    head = struct.Struct(ofp.OFP_FLOW_STATS_0_PACK_STR)
    with pytest.raises(SouthboundError):
        flow_counts(head.pack(8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))


def test_the_wanted_cookies_walk_reads_the_same_counters_as_the_full_one() -> None:
    head = struct.Struct(ofp.OFP_FLOW_STATS_0_PACK_STR)
    # Entries longer than the fixed part (a match and instructions follow it on the wire).
    body = b"".join(head.pack(head.size + 16, table, 0, 0, 100, 0, 0, 0, cookie, p, b)
                    + bytes(16)
                    for table, cookie, p, b in ((0, 11, 1, 60), (20, 12, 2, 120),
                                                (30, 13, 3, 180)))
    full = flow_counts(body)
    assert [c.cookie for c in full] == [11, 12, 13]
    assert flow_counts(body, {12, 13}) == full[1:]
    assert flow_counts(body, set()) == []
