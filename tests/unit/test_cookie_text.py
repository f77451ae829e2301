"""A flow's cookie is read from texts cached on its parts (flows.cookie_text): it must stay the
blake2b of repr(content) exactly, or every installed flow would change cookie on upgrade."""

from __future__ import annotations

from hypetunnel.compiler import pipeline
from hypetunnel.compiler.flows import Flow, Output, RegMove, SetField, cookie_of, cookie_text, match
from hypetunnel.compiler.topology import VmView

VM = VmView("acme/web1", 100, "02:00:00:00:00:01", "10.0.0.1")


def flows() -> list[Flow]:
    return [
        pipeline.arp_responder_flow(VM), *pipeline.local_port_flows(VM, 7),
        pipeline.remote_vm_flow(VM, 50), *pipeline.flood_flows(100, [7, 8], [50, 51]),
        Flow(0, 1, (("reg0", True),), (SetField("a", "it's \"q\""),)),  # not interned: True
        Flow(10, 0, ()),
        Flow(0, 1, match(reg0=0), (Output(3),)),  # one action, one field: "(x,)"
        Flow(5, 2, match(eth_dst=("01:00:00:00:00:00", "01:00:00:00:00:00")),
             (RegMove("eth_src", "eth_dst", 48),), metadata=3, goto=4),
    ]


def test_cookie_text_is_the_repr_of_the_content() -> None:
    for flow in flows():
        assert cookie_text(flow) == repr(flow._content())
        assert cookie_text(flow) == repr(flow._content())  # and again, from the cached texts
        assert flow.cookie == cookie_of(flow._content())


def test_cookies_are_those_of_earlier_releases() -> None:
    # Computed by the code before cookie_text (repr of the whole content).
    assert [hex(f.cookie) for f in flows()[:10]] == [
        "0x48542d763da0d5e4", "0x485436738e98e790", "0x4854768a20481e9e", "0x48542314d61edcb5",
        "0x48541d44c7a7334c", "0x4854bb563aa39fa5", "0x4854fdcc9daa3f2b", "0x48548520662cf8f5",
        "0x4854a2e66621d47b", "0x4854734e42a87738"]
