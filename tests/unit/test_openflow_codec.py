"""Flow -> OpenFlow 1.3 bytes: parsed back with os-ken, and compared with os-ken's own encoder."""

from __future__ import annotations

import struct

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from hypetunnel.compiler.flows import OFPP_IN_PORT, Flow, Output, RegMove, SetField, match
from hypetunnel.errors import SouthboundError
from hypetunnel.southbound.openflow import codec

ARP_RESPONDER = Flow(
    table=20, priority=200,
    match=match(metadata=7, eth_type=0x0806, arp_op=1, arp_tpa="10.1.0.5", reg0=(1, 0xFF)),
    actions=(RegMove("eth_src", "eth_dst", 48), SetField("eth_src", "02:00:00:00:00:05"),
             SetField("arp_op", 2), RegMove("arp_sha", "arp_tha", 48),
             SetField("arp_sha", "02:00:00:00:00:05"), Output(OFPP_IN_PORT)),
)
CLASSIFIER = Flow(table=0, priority=100, match=match(in_port=3), metadata=42, goto=10)
TUNNEL_OUT = Flow(table=40, priority=100,
                  match=match(metadata=42, eth_dst=("01:00:00:00:00:00", "01:00:00:00:00:00")),
                  actions=(SetField("tunnel_id", 5001), SetField("tun_ipv4_dst", "192.0.2.9"),
                           Output(7)))
IP_MASKED = Flow(table=30, priority=90,
                 match=match(eth_type=0x0800, ipv4_dst=("10.1.0.0", "255.255.0.0"), reg3=9),
                 actions=(Output(2),), goto=40)
UPPER_MAC = Flow(table=30, priority=90, match=match(eth_src="0A:BB:cc:00:00:01", arp_spa="1.2.3.4",
                                                 eth_type=0x0806), actions=(Output(1),))
EXAMPLES = [ARP_RESPONDER, CLASSIFIER, TUNNEL_OUT, IP_MASKED, UPPER_MAC]
IDS = ["arp", "classifier", "tunnel", "masked", "upper-mac"]


def parse(buf: bytes) -> parser.MsgBase:
    msg = codec.parse(buf)
    assert msg is not None
    return msg


@pytest.mark.parametrize("flow", EXAMPLES, ids=IDS)
def test_flow_mod_round_trips_through_os_ken(flow: Flow) -> None:
    msg = parse(codec.flow_mod_bytes(flow))
    assert isinstance(msg, parser.OFPFlowMod)
    assert (msg.cookie, msg.table_id, msg.priority) == (flow.cookie, flow.table, flow.priority)
    assert msg.command == ofp.OFPFC_ADD and msg.xid == 0
    parsed_match = dict(msg.match.items())
    assert set(parsed_match) == {k for k, _ in flow.match}
    by_type = {type(i): i for i in msg.instructions}
    if flow.actions:
        acts = by_type[parser.OFPInstructionActions].actions
        assert len(acts) == len(flow.actions)
        for ours, theirs in zip(flow.actions, acts, strict=True):
            if isinstance(ours, Output):
                assert theirs.port == ours.port
            elif isinstance(ours, SetField):
                assert (theirs.key, theirs.value) == (ours.field, ours.value)
            else:
                assert (theirs.src_field, theirs.dst_field, theirs.n_bits) == (
                    ours.src, ours.dst, ours.n_bits)
    else:
        assert parser.OFPInstructionActions not in by_type
    if flow.metadata is not None:
        wm = by_type[parser.OFPInstructionWriteMetadata]
        assert (wm.metadata, wm.metadata_mask) == (flow.metadata, codec.ALL_ONES_64)
    if flow.goto is not None:
        assert by_type[parser.OFPInstructionGotoTable].table_id == flow.goto


def test_match_values_survive_round_trip() -> None:
    parsed = dict(parse(codec.flow_mod_bytes(ARP_RESPONDER)).match.items())
    assert parsed["arp_tpa"] == "10.1.0.5"
    assert parsed["reg0"] == (1, 0xFF)
    assert parsed["metadata"] == 7
    masked = dict(parse(codec.flow_mod_bytes(IP_MASKED)).match.items())
    assert masked["ipv4_dst"] == ("10.1.0.0", "255.255.0.0")


@pytest.mark.parametrize("flow", EXAMPLES, ids=IDS)
def test_assembled_encoder_equals_os_ken_reference(flow: Flow) -> None:
    assert codec.flow_mod_bytes(flow) == bytes(codec.build_flow_mod(flow).buf)


def test_assembled_encoder_equals_reference_over_many_flows() -> None:
    flows = [Flow(30, 100 + i % 7, match(metadata=i % 13, eth_dst=f"02:00:00:00:{i >> 8:02x}:"
                                               f"{i & 255:02x}"), (Output(i % 5 + 1),))
             for i in range(300)]
    for flow in flows:
        assert codec.flow_mod_bytes(flow) == bytes(codec.build_flow_mod(flow).buf)


@pytest.mark.parametrize("flow, why", [
    (Flow(0, 10, match(no_such_field=1), (Output(1),)), "no_such_field"),
    (Flow(0, 10, match(in_port=1), (SetField("nope", 1),)), "nope"),
    (Flow(0, 10, match(in_port=1), (RegMove("reg0", "nope", 8),)), "nope"),
    (Flow(0, 10, match(eth_dst="not-a-mac"), (Output(1),)), "cannot encode"),
    (Flow(0, 10, match(eth_type=0x800, ipv4_dst="10.0.0.300"), (Output(1),)), "cannot encode"),
    (Flow(0, 10, match(in_port=1), (SetField("eth_src", "02:00:00:00:00"),)), "cannot encode"),
    (Flow(20, 10, match(in_port=1), goto=10), "after table 20"),
    (Flow(255, 10, match(in_port=1), (Output(1),)), "table 255"),
    (Flow(0, 70000, match(in_port=1), (Output(1),)), "priority"),
    (Flow(0, 10, match(in_port=1), (Output(-1),)), "port"),
])
def test_malformed_flow_fails_at_build_time(flow: Flow, why: str) -> None:
    with pytest.raises(SouthboundError, match=why):
        codec.flow_mod_bytes(flow)
    with pytest.raises(SouthboundError):
        codec.build_flow_mod(flow)


def test_with_xid_patches_only_the_header() -> None:
    raw = codec.flow_mod_bytes(CLASSIFIER)
    patched = codec.with_xid(raw, 0xDEADBEEF)
    assert parse(patched).xid == 0xDEADBEEF
    assert patched[8:] == raw[8:] and codec.flow_mod_bytes(CLASSIFIER) == raw  # cache untouched


def test_delete_by_cookie() -> None:
    msg = parse(codec.delete_by_cookie_bytes(CLASSIFIER.cookie))
    assert msg.command == ofp.OFPFC_DELETE
    assert msg.table_id == ofp.OFPTT_ALL
    assert (msg.cookie, msg.cookie_mask) == (CLASSIFIER.cookie, codec.ALL_ONES_64)
    assert (msg.out_port, msg.out_group) == (ofp.OFPP_ANY, ofp.OFPG_ANY)
    assert dict(msg.match.items()) == {}


def test_bundle_messages_parse_and_carry_inner_xid() -> None:
    ctrl = parse(codec.bundle_ctrl_bytes(9, ofp.ONF_BCT_COMMIT_REQUEST, 77))
    assert isinstance(ctrl, parser.ONFBundleCtrlMsg)
    assert (ctrl.xid, ctrl.bundle_id, ctrl.type) == (77, 9, ofp.ONF_BCT_COMMIT_REQUEST)
    assert ctrl.flags == ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
    add = codec.bundle_add_bytes(9, codec.flow_mod_bytes(TUNNEL_OUT), 78)
    assert codec.HEADER.unpack_from(add)[2] == len(add)
    inner = add[24:]
    assert parse(inner).xid == 78 and parse(inner).cookie == TUNNEL_OUT.cookie


def test_role_request_and_unknown_role() -> None:
    buf = codec.role_request_bytes("SLAVE", 12, 5)  # os-ken parses only the reply direction
    assert codec.HEADER.unpack_from(buf) == (4, ofp.OFPT_ROLE_REQUEST, 24, 5)
    assert struct.unpack_from("!I4xQ", buf, 8) == (ofp.OFPCR_ROLE_SLAVE, 12)
    with pytest.raises(SouthboundError, match="unknown controller role"):
        codec.role_request_bytes("BOSS", 1, 1)


def test_flow_stats_cookie_walk_matches_os_ken() -> None:
    from hypetunnel.southbound.openflow.fakeswitch import FakeSwitch

    switch = FakeSwitch(1)
    for i, flow in enumerate(EXAMPLES):
        switch._handle(ofp.OFPT_FLOW_MOD, i, codec.flow_mod_bytes(flow))
    (reply,) = switch._handle(ofp.OFPT_MULTIPART_REQUEST, 5, codec.flow_stats_request_bytes(5))
    os_ken_cookies = [s.cookie for s in parse(reply).body]
    assert codec.flow_stats_cookies(reply[16:]) == os_ken_cookies
    assert sorted(os_ken_cookies) == sorted(f.cookie for f in EXAMPLES)


def test_error_description_names_type_and_code() -> None:
    err = parser.OFPErrorMsg(codec.DATAPATH, ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_PREREQ, b"")
    assert codec.describe_error(parse(codec.serialize(err, 3))) == \
        "OFPET_BAD_MATCH/OFPBMC_BAD_PREREQ"
