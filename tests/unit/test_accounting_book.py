"""Accounting from the compiled pipeline: which flows meter what (meters.py), the usage book's
arithmetic, stored form and windows (book.py), and the poller's round (poller.py)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp

from hypetunnel.accounting.book import SAMPLE_EVERY, UsageBook, report
from hypetunnel.accounting.flowstats import FlowCount
from hypetunnel.accounting.meters import Meter, SwitchMeters
from hypetunnel.accounting.poller import UsagePoller
from hypetunnel.compiler.flows import Slice
from hypetunnel.compiler.pipeline import network_slice
from hypetunnel.compiler.topology import NetworkView, VmView

NET = NetworkView(100, "acme", "blue", "vxlan")
WEB1 = VmView("acme/web1", 100, "02:00:00:00:00:01", "10.0.0.1")
WEB2 = VmView("acme/web2", 100, "02:00:00:00:00:02", "10.0.0.2")
NETWORK_OF = {100: "acme/blue"}
TUNNEL = 50  # hv1's tunnel port to hv2


def hv1_slice(web2_hosts: tuple[str, ...] = ("hv2",)) -> Slice:
    ports = {"acme/web1": 1, "acme/web2": 2}
    return network_slice(NET, [(WEB1, ("hv1",)), (WEB2, web2_hosts)], "hv1",
                         lambda vm: ports.get(vm), lambda hv, enc: TUNNEL)


SLICE = hv1_slice()


def by_meter(meters: Mapping[int, Meter]) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in meters.values():
        out[m.key] = out.get(m.key, 0) + 1
    return out


def test_a_local_vm_meters_its_sends_and_its_deliveries_and_the_network_its_drops() -> None:
    meters = SwitchMeters({"acme/web1": 1}, NETWORK_OF.get).of(hv1_slice())
    # out: the IP and the ARP port-security flows; in: its delivery flow; the two source drops.
    assert by_meter(meters) == {"vm/acme/web1/out": 2, "vm/acme/web1/in": 1,
                                "network/acme/blue/dropped": 2}
    assert {m.network for m in meters.values()} == {"acme/blue"}


def test_a_remote_vm_is_metered_where_it_is_delivered_not_where_it_is_sent_from() -> None:
    meters = SwitchMeters({"acme/web1": 1}, NETWORK_OF.get).of(hv1_slice())
    assert not any(m.subject == "vm/acme/web2" for m in meters.values())


def test_during_a_move_deliveries_count_at_one_end_only() -> None:
    # web2 is live on hv1 (port 2) and hv2: every frame to it goes to both.
    s = hv1_slice(("hv1", "hv2"))
    ports = {"acme/web1": 1, "acme/web2": 2}
    here = by_meter(SwitchMeters(ports, NETWORK_OF.get).of(s))
    assert here["vm/acme/web2/in"] == 2  # from local senders and from the tunnel
    assert here["vm/acme/web2/out"] == 2
    elsewhere = by_meter(SwitchMeters(ports, NETWORK_OF.get, {"acme/web2"}).of(s))
    assert "vm/acme/web2/in" not in elsewhere
    assert elsewhere["vm/acme/web2/out"] == 2  # each end sends only while it runs


def test_a_network_the_intent_no_longer_has_is_not_metered() -> None:
    assert SwitchMeters({"acme/web1": 1}, {}.get).of(hv1_slice()) == {}


def _counts(meters: Mapping[int, Meter], value: Mapping[str, tuple[int, int]]
            ) -> list[FlowCount]:
    out = []
    for cookie, m in sorted(meters.items()):
        p, b = value.get(m.key, (0, 0))
        out.append(FlowCount(0, cookie, p, b))
    return out


def test_the_book_sums_per_vm_network_and_tenant_and_keeps_drops_apart() -> None:
    meters = SwitchMeters({"acme/web1": 1}, NETWORK_OF.get).of(hv1_slice())
    book = UsageBook()
    book.observe_switch("hv1", _counts(meters, {"vm/acme/web1/out": (3, 300),
                                                "vm/acme/web1/in": (5, 500),
                                                "network/acme/blue/dropped": (1, 60)}),
                        meters)
    totals = book.totals()
    vm_rows = report(totals, "vm")
    # Two "out" flows each read (3, 300): 6 packets.
    assert vm_rows == [{"tenant": "acme", "network": "blue", "vm": "web1", "packets_in": 5,
                        "bytes_in": 500, "packets_out": 6, "bytes_out": 600}]
    net = report(totals, "network")[0]
    assert (net["dropped_packets"], net["dropped_bytes"]) == (2, 120)
    assert report(totals, "tenant")[0]["bytes_out"] == 600
    assert report(totals, "tenant", tenant="globex") == []


def test_the_stored_book_goes_on_without_counting_twice() -> None:
    meters = SwitchMeters({"acme/web1": 1}, NETWORK_OF.get).of(hv1_slice())
    book = UsageBook()
    book.observe_switch("hv1", _counts(meters, {"vm/acme/web1/in": (10, 1000)}), meters)
    puts, deletes = book.pending()
    assert deletes == [] and any(k.startswith("usage/c/vm/acme/web1/in") for k in puts)
    book.written()
    assert book.pending() == ({}, [])
    # A new controller loads what was stored, then reads the same flows further on.
    again = UsageBook()
    again.load(puts)
    again.observe_switch("hv1", _counts(meters, {"vm/acme/web1/in": (12, 1200)}), meters)
    assert report(again.totals(), "vm")[0]["bytes_in"] == 1200
    # A flow gone from the switch (a move away): its count is kept, not lost or doubled.
    again.observe_switch("hv1", [], meters)
    assert report(again.totals(), "vm")[0]["bytes_in"] == 1200


def test_a_window_starts_at_the_newest_sample_before_it() -> None:
    meters = SwitchMeters({"acme/web1": 1}, NETWORK_OF.get).of(hv1_slice())
    book = UsageBook()
    book.observe_switch("hv1", _counts(meters, {"vm/acme/web1/in": (10, 1000)}), meters)
    book.sample(1000.0)
    book.sample(1000.0 + SAMPLE_EVERY / 2)  # too soon: no second sample
    assert list(book.samples) == [1000]
    book.observe_switch("hv1", _counts(meters, {"vm/acme/web1/in": (15, 1500)}), meters)
    assert report(book.totals(since=1001.0), "vm")[0]["bytes_in"] == 500
    assert report(book.totals(since=999.0), "vm")[0]["bytes_in"] == 1500  # before any sample


def test_a_deleted_flow_counts_its_last_traffic_once_whether_or_not_a_poll_saw_it_go() -> None:
    meters = SwitchMeters({"acme/web1": 1}, NETWORK_OF.get).of(hv1_slice())
    delivery = next(c for c, m in meters.items() if m.key == "vm/acme/web1/in")
    book = UsageBook()
    book.observe_switch("hv1", [FlowCount(20, delivery, 4, 400)], meters)
    book.removed("hv1", delivery, 6, 600)  # the final reading: 2 more since the poll
    book.observe_switch("hv1", [], meters)
    book.removed("hv1", delivery, 6, 600)  # reported twice: counted once
    assert report(book.totals(), "vm")[0]["packets_in"] == 6
    # A poll that saw the table without it first (a bundle's removal is told late).
    book.observe_switch("hv1", [FlowCount(20, delivery, 1, 100)], meters)  # reinstalled
    book.observe_switch("hv1", [], meters)  # gone: its 1 banked
    book.removed("hv1", delivery, 3, 300)  # then its final 3: 2 more
    assert report(book.totals(), "vm")[0]["packets_in"] == 9


def test_a_flow_that_lived_between_two_polls_counts_from_its_registration() -> None:
    # A hot move's flows live a second or two: registered when sent, told when removed.
    ctx = SwitchMeters({"acme/web1": 1}, NETWORK_OF.get)
    flows = hv1_slice()
    book = UsageBook()
    book.register("hv1", ctx.of(flows))
    delivery = next(c for c, m in ctx.of(flows).items() if m.key == "vm/acme/web1/in")
    book.removed("hv1", delivery, 5, 500)
    book.removed("hv1", 0x1234, 9, 900)  # not ours, or counting nothing
    assert report(book.totals(), "vm")[0]["packets_in"] == 5


def _body(counts: Iterable[tuple[int, int, int]]) -> bytes:
    """An OFPMP_FLOW reply body: fixed parts only (an empty match, no instructions)."""
    head = struct.Struct(ofp.OFP_FLOW_STATS_0_PACK_STR)
    return b"".join(head.pack(head.size, 0, 0, 0, 100, 0, 0, 0, cookie, p, b)
                    for cookie, p, b in counts)


class FakeReader:
    def __init__(self, body: bytes | None) -> None:
        self.body = body

    async def flow_stats(self) -> list[bytes] | None:
        return None if self.body is None else [self.body]


class FakeStore:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.fail = False

    def side_load(self, prefix: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.docs.items() if k.startswith(prefix)}

    def side_commit(self, puts: Mapping[str, dict[str, Any]], deletes: Iterable[str]) -> None:
        if self.fail:
            raise OSError("store down")
        self.docs.update(puts)
        for k in deletes:
            self.docs.pop(k, None)


class FakePort:
    may_program = True

    def __init__(self, reader: FakeReader) -> None:
        self.reader = reader

    def usage_switches(self) -> list[tuple[str, FakeReader]]:
        return [("hv1", self.reader)]

    def usage_meters(self, hypervisor: str) -> SwitchMeters:
        return SwitchMeters({"acme/web1": 1}, NETWORK_OF.get)

    def usage_slices(self, hypervisor: str) -> list[tuple[int, Slice]]:
        return [(100, SLICE)]


def test_the_poller_reads_stores_and_a_standby_answers_from_the_store() -> None:
    meters = SwitchMeters({"acme/web1": 1}, NETWORK_OF.get).of(SLICE)
    delivery = next(c for c, m in meters.items() if m.key == "vm/acme/web1/in")
    reader = FakeReader(_body([(delivery, 4, 400), (0x1234, 9, 900)]))  # and a foreign flow
    store = FakeStore()

    async def go() -> None:
        clock = iter(range(5000, 10_000, 60))  # each poll a write interval after the last
        active = UsagePoller(FakePort(reader), store, clock=lambda: float(next(clock)))
        active.active = True
        await active.poll()
        store.fail = True  # a write that fails stays pending (run() logs it and goes on)
        reader.body = _body([(delivery, 6, 600)])
        with pytest.raises(OSError):
            await active.poll()
        store.fail = False
        await active.poll()
        # A poll whose write failed did not complete: a reader waiting for the counters of
        # a moment must not take it for one.
        assert active.describe()["polls"] == 2 and active.describe()["active"]
        standby = UsagePoller(FakePort(FakeReader(None)), store)
        assert standby.describe()["polls"] == 0 and not standby.describe()["active"]
        rows = await standby.usage("vm")
        assert rows[0]["bytes_in"] == 600 and rows[0]["packets_in"] == 6
        with pytest.raises(ValueError, match="by: must be one of"):
            await standby.usage("switch")

    asyncio.run(go())


def test_get_usage_answers_a_tenant_with_its_own_rows_and_refuses_bad_input() -> None:
    from tests.unit.policy_world import World

    world = World()
    asked: list[tuple[str, str | None, float | None]] = []

    async def usage(by: str, tenant: str | None, since: float | None
                    ) -> list[dict[str, Any]]:
        asked.append((by, tenant, since))
        return [{"tenant": "acme", "bytes_in": 1}, {"tenant": "globex", "bytes_in": 2}]

    world.runtime.usage = usage  # type: ignore[attr-defined]
    assert len(world.request("operator", "GET", "/api/v1/usage").json()) == 2
    mine = world.request("tenant-reader", "GET", "/api/v1/usage",
                         params={"by": "vm", "since": 3600}).json()
    assert mine == [{"tenant": "acme", "bytes_in": 1}]
    assert asked[-1][0] == "vm" and asked[-1][2] is not None
    bad = world.request("operator", "GET", "/api/v1/usage", params={"by": "switch"})
    assert bad.status_code == 422 and "by" in bad.text


def test_the_meter_cache_maps_a_slice_again_only_when_it_or_the_ports_change() -> None:
    from hypetunnel.accounting.meters import MeterCache

    calls: list[int] = []

    class Counting(SwitchMeters):
        def of(self, flows: Iterable[Any]) -> dict[int, Meter]:
            calls.append(1)
            return super().of(flows)

    cache = MeterCache()
    first = cache.meters("hv1", Counting({"acme/web1": 1}, NETWORK_OF.get), [(100, SLICE)])
    again = cache.meters("hv1", Counting({"acme/web1": 1}, NETWORK_OF.get), [(100, SLICE)])
    assert first == again and len(calls) == 1
    cache.meters("hv1", Counting({"acme/web1": 1}, NETWORK_OF.get), [(100, hv1_slice(("hv3",)))])
    cache.meters("hv1", Counting({"acme/web1": 7}, NETWORK_OF.get), [(100, SLICE)])
    assert len(calls) == 3


def test_counters_are_written_every_30_s_or_at_once_when_a_reading_is_banked() -> None:
    delivery = next(c for c, m in SwitchMeters({"acme/web1": 1}, NETWORK_OF.get).of(SLICE).items()
                    if m.key == "vm/acme/web1/in")
    reader = FakeReader(_body([(delivery, 4, 400)]))
    store = FakeStore()
    now = [1000.0]
    writes: list[int] = []
    commit = store.side_commit

    def counting(puts: Mapping[str, dict[str, Any]], deletes: Iterable[str]) -> None:
        writes.append(len(puts))
        commit(puts, deletes)

    store.side_commit = counting  # type: ignore[method-assign]

    async def go() -> None:
        poller = UsagePoller(FakePort(reader), store, clock=lambda: now[0])
        poller.active = True
        await poller.poll()  # the first poll writes
        reader.body = _body([(delivery, 6, 600)])
        now[0] += 10
        await poller.poll()  # 10 s later: not yet
        assert len(writes) == 1
        now[0] += 25
        await poller.poll()  # 35 s after the first
        assert len(writes) == 2
        reader.body = _body([])  # the flow is gone: its reading banked, written at once
        now[0] += 1
        await poller.poll()
        assert len(writes) == 3

    asyncio.run(go())
