"""Tunnel latency probes: the flows that answer them (compiler), the packet-out and packet-in
encoding (codec), and the prober's bookkeeping against a fake switch that answers some."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from hypetunnel.compiler.flows import OFPP_IN_PORT, Output, SetField
from hypetunnel.compiler.pipeline import (
    OFPP_CONTROLLER,
    P_PROBE,
    PROBE_ANSWER,
    PROBE_ETH_TYPE,
    PROBE_KEY,
    PROBE_REQUEST,
    T_CLASSIFY,
    base_flows,
)
from hypetunnel.fcaps.latency import (
    STALE_AFTER,
    ProbeChannel,
    Tunnel,
    TunnelProber,
    answered_seq,
    probe_frame,
)
from hypetunnel.model.intent import MANAGEMENT_VNI, PROBE_VNI
from hypetunnel.southbound.openflow import codec

pytestmark = pytest.mark.timeout(20)


def test_every_switch_answers_probes_from_tunnels_only_and_hands_answers_up() -> None:
    probes = {dict(f.match)["eth_dst"]: f for f in base_flows() if f.priority == P_PROBE}
    assert set(probes) == {PROBE_REQUEST, PROBE_ANSWER}
    for f in probes.values():
        m = dict(f.match)
        assert f.table == T_CLASSIFY
        # The key no tenant network may have: a VM's frame carries no tunnel key at all.
        assert m["tunnel_id"] == PROBE_KEY == PROBE_VNI != MANAGEMENT_VNI
        assert m["eth_type"] == PROBE_ETH_TYPE
    assert probes[PROBE_REQUEST].actions == (SetField("eth_dst", PROBE_ANSWER),
                                             Output(OFPP_IN_PORT))
    assert probes[PROBE_ANSWER].actions == (Output(OFPP_CONTROLLER),)


_PACKET_OUT = struct.Struct("!IIH6x")  # buffer_id, in_port, actions_len


def packet_out(buf: bytes) -> tuple[int, int, list[Any], bytes]:
    """(buffer_id, in_port, actions, frame) of a PACKET_OUT (os-ken parses only what a switch
    sends, so the actions are read one by one with its action parser)."""
    _version, msg_type, length, _xid = codec.HEADER.unpack_from(buf)
    assert msg_type == ofp.OFPT_PACKET_OUT and length == len(buf)
    buffer_id, in_port, actions_len = _PACKET_OUT.unpack_from(buf, codec.HEADER_SIZE)
    offset = codec.HEADER_SIZE + _PACKET_OUT.size
    end, actions = offset + actions_len, []
    while offset < end:
        action = parser.OFPAction.parser(buf, offset)
        actions.append(action)
        offset += action.len
    return buffer_id, in_port, actions, buf[end:]


def test_a_probe_goes_out_of_its_tunnel_port_with_the_probe_key() -> None:
    out = codec.packet_out_bytes(probe_frame(7), (SetField("tunnel_id", PROBE_KEY), Output(5)))
    buffer_id, in_port, [set_key, output], frame = packet_out(out)
    assert in_port == ofp.OFPP_CONTROLLER and buffer_id == ofp.OFP_NO_BUFFER
    assert set_key.key == "tunnel_id" and set_key.value == PROBE_KEY and output.port == 5
    assert frame == probe_frame(7)
    assert answered_seq(frame) is None  # a request, not an answer


def answer(frame: bytes) -> bytes:
    """What the far switch's flow makes of a request: the destination MAC rewritten."""
    return bytes.fromhex(PROBE_ANSWER.replace(":", "")) + frame[6:]


def packet_in_bytes(in_port: int, frame: bytes) -> bytes:
    """A PACKET_IN as Open vSwitch sends it (os-ken only parses this message)."""
    match = parser.OFPMatch(in_port=in_port)
    buf = bytearray()
    match_len = match.serialize(buf, 0)
    body = struct.pack("!IHBBQ", ofp.OFP_NO_BUFFER, len(frame), ofp.OFPR_ACTION, 0, 0)
    body += bytes(buf[:match_len]) + b"\0" * ((8 - match_len % 8) % 8) + b"\0\0" + frame
    return codec.HEADER.pack(ofp.OFP_VERSION, ofp.OFPT_PACKET_IN,
                             codec.HEADER_SIZE + len(body), 0) + body


def test_an_answer_is_read_back_from_the_packet_in() -> None:
    got = codec.packet_in(packet_in_bytes(9, answer(probe_frame(42))))
    assert got is not None
    in_port, frame = got
    assert in_port == 9 and answered_seq(frame) == 42
    assert answered_seq(b"\xff" * 64) is None and answered_seq(b"short") is None


class Switch:
    """Answers every probe except those out of `lost` ports, `delay` after the echo."""

    def __init__(self, prober: list[TunnelProber], delay: float, lost: set[int]) -> None:
        self.prober, self.delay, self.lost = prober, delay, lost
        self.sent: list[int] = []

    async def send_probes(self, packet_outs: Sequence[bytes], timeout: float) -> float | None:
        loop = asyncio.get_running_loop()
        echoed = loop.time()
        for out in packet_outs:
            _, _, actions, frame = packet_out(out)
            port = actions[-1].port
            self.sent.append(port)
            if port not in self.lost:
                loop.call_later(self.delay, self.prober[0].received, answer(frame),
                                echoed + self.delay)
        return echoed


class Port:
    def __init__(self, targets: list[tuple[ProbeChannel, list[Tunnel]]]) -> None:
        self.targets = targets
        self.may_program = True

    def probe_targets(self) -> Iterable[tuple[ProbeChannel, list[Tunnel]]]:
        return self.targets


def test_each_answered_tunnel_gets_its_round_trip_and_a_lost_one_nothing() -> None:
    async def body() -> None:
        holder: list[TunnelProber] = []
        sw1, sw2 = Switch(holder, 0.004, lost=set()), Switch(holder, 0.001, lost={7})
        port = Port([(sw1, [Tunnel("hv1", "hv2", "vxlan", 5), Tunnel("hv1", "hv3", "gre", 6)]),
                     (sw2, [Tunnel("hv2", "hv1", "vxlan", 7)])])
        clock = [100.0]
        prober = TunnelProber(port, answer_timeout=0.3, clock=lambda: clock[0])
        holder.append(prober)
        await prober.probe_all()
        assert sw1.sent == [5, 6] and sw2.sent == [7]
        got = {(hv, remote): s for hv, remote, _, s in prober.latencies()}
        assert set(got) == {("hv1", "hv2"), ("hv1", "hv3")}
        assert got[("hv1", "hv2")] == pytest.approx(0.004)
        assert not prober._waiting  # nothing left behind, answered or not
        prober.received(answer(probe_frame(999)), 0.0)  # a late or stray answer: ignored
        sw1.lost = {6}  # hv1's tunnel to hv3 stops answering: its figure goes
        await prober.probe_all()
        assert {(hv, remote) for hv, remote, _, _ in prober.latencies()} == {("hv1", "hv2")}
        port.targets = []  # no tunnel forwards any more: no figure is kept
        await prober.probe_all()
        assert prober.latencies() == []
        port.targets = [(sw1, [Tunnel("hv1", "hv2", "vxlan", 5)])]
        await prober.probe_all()
        clock[0] += STALE_AFTER + 1  # the probes stopped (the task stuck): figures too old
        assert prober.latencies() == []

    asyncio.run(body())
