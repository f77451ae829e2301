"""The pure parts of the OVSDB client: snapshots from rows, and tunnel-port diffs."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from hypetunnel.compiler.tunnels import tunnel_port
from hypetunnel.errors import SouthboundError
from hypetunnel.southbound.observation import BfdStatus
from hypetunnel.southbound.ovsdb.snapshot import (
    build_bfd,
    build_observation,
    parse_datapath_id,
    parse_ofport,
)
from hypetunnel.southbound.ovsdb.writes import BridgeSpec, diff_tunnels, tunnel_options

VX = tunnel_port("vxlan", "10.0.0.2", "hv2")
GR = tunnel_port("gre", "10.0.0.3", "hv3")
GN = tunnel_port("geneve", "10.0.0.4", "hv4")


def iface(name: str, ofport: Any = (), *, type: str = "", options: dict[str, str] | None = None,
          external_ids: dict[str, str] | None = None, link_state: Any = (),
          bfd: dict[str, str] | None = None,
          bfd_status: dict[str, str] | None = None) -> SimpleNamespace:
    """An Interface row as the IDL shows it: optional columns are lists of 0 or 1 element."""
    return SimpleNamespace(name=name, ofport=list(ofport), type=type, options=options or {},
                           external_ids=external_ids or {}, link_state=list(link_state),
                           bfd=bfd or {}, bfd_status=bfd_status or {})


def ours(t: Any, ofport: Any = (5,), bfd_status: dict[str, str] | None = None
         ) -> SimpleNamespace:
    return iface(t.name, ofport, type=t.encapsulation, options=tunnel_options(t),
                 external_ids={"hypetunnel-tunnel": "true",
                               "hypetunnel-remote": t.remote_hypervisor},
                 bfd=dict(t.bfd), bfd_status=bfd_status)


def bridge(name: str, *ifaces: SimpleNamespace, dpid: Any = ()) -> SimpleNamespace:
    ports = [SimpleNamespace(name=i.name, interfaces=[i]) for i in ifaces]
    return SimpleNamespace(name=name, datapath_id=list(dpid), ports=ports)


def test_bindings_come_from_iface_id_and_need_an_ofport() -> None:
    br = bridge("br-int",
                iface("br-int", [65534], type="internal"),
                iface("tap1", [7], external_ids={"iface-id": "acme/web1"}, link_state=["up"]),
                iface("tap2", [], external_ids={"iface-id": "acme/db1"}),  # no ofport yet
                iface("tap3", [8]),  # unbound
                dpid=["00000000000000a1"])
    obs = build_observation("hv1", "br-int", [br])
    assert obs.datapath_id == 0xA1
    assert set(obs.ports) == {"br-int", "tap1", "tap2", "tap3"}
    assert obs.bindings() == {"acme/web1": obs.ports["tap1"]}
    assert obs.ports["tap1"].ofport == 7 and obs.ports["tap1"].link_up
    assert obs.ports["tap2"].ofport == -1 and obs.ports["tap2"].iface_id == "acme/db1"
    assert not obs.ports["tap2"].link_up
    assert obs.ofport("tap2") is None and obs.ofport("tap3") == 8


def test_ofport_minus_one_and_unset_both_mean_no_port() -> None:
    assert parse_ofport([]) == -1
    assert parse_ofport([-1]) == -1  # OVS could not create the port
    assert parse_ofport([0]) == -1
    assert parse_ofport([3]) == 3
    assert parse_ofport(4) == 4  # a bare value (not list) is accepted too


def test_datapath_id_parsing() -> None:
    assert parse_datapath_id([]) is None
    assert parse_datapath_id([""]) is None
    assert parse_datapath_id(["0000000000000042"]) == 0x42
    assert parse_datapath_id(["not-hex"]) is None


def test_tunnels_are_only_the_ports_we_marked() -> None:
    foreign_vxlan = iface("vxforeign", [3], type="vxlan", options={"remote_ip": "10.9.9.9"})
    marked_false = iface("vxold", [4], type="vxlan", options={"remote_ip": "10.9.9.8"},
                         external_ids={"hypetunnel-tunnel": "false"})
    br = bridge("br-int", ours(VX, [1]), ours(GN, []), foreign_vxlan, marked_false)
    obs = build_observation("hv1", "br-int", [br])
    assert obs.tunnels == frozenset({VX, GN})
    assert obs.ofport(VX.name) == 1 and obs.ofport(GN.name) is None
    assert obs.bindings() == {}


def test_other_bridges_are_ignored_and_a_missing_bridge_is_empty() -> None:
    other = bridge("br-ex", iface("eth0", [1], external_ids={"iface-id": "x/y"}), dpid=["1"])
    assert build_observation("hv1", "br-int", [other]).ports == {}
    missing = build_observation("hv1", "br-int", [])
    assert missing.datapath_id is None and missing.tunnels == frozenset()
    mine = build_observation("hv1", "br-int", [other, bridge("br-int", ours(GR))])
    assert mine.tunnels == frozenset({GR})


def test_identical_rows_give_equal_snapshots() -> None:
    # on_change fires only when the snapshot differs: equality must be by value.
    rows = [bridge("br-int", ours(VX), iface("tap1", [2], external_ids={"iface-id": "a/b"}))]
    assert build_observation("hv1", "br-int", rows) == build_observation("hv1", "br-int", rows)


def test_diff_adds_fixes_and_removes_only_our_ports() -> None:
    stale_gre = ours(GR)
    stale_gre.options = {"remote_ip": "10.0.0.99", "key": "flow"}
    old = tunnel_port("vxlan", "10.0.0.50", "hv50")
    foreign = iface("tap1", [2])
    diff = diff_tunnels([ours(VX), stale_gre, ours(old), foreign], [VX, GR, GN])
    assert diff.add == (GN,)
    assert diff.fix == (GR,)
    assert diff.remove == (old.name,)


def test_diff_of_matching_state_is_empty() -> None:
    assert diff_tunnels([ours(VX), ours(GR), iface("tap1")], [VX, GR]).empty


def test_diff_fixes_a_wrong_type_or_remote_hypervisor() -> None:
    wrong_type = ours(VX)
    wrong_type.type = "geneve"
    wrong_remote = ours(GR)
    wrong_remote.external_ids = {"hypetunnel-tunnel": "true", "hypetunnel-remote": "hvX"}
    assert diff_tunnels([wrong_type, wrong_remote], [VX, GR]).fix == (GR, VX)


def test_every_tunnel_port_runs_bfd_at_100_ms_times_3() -> None:
    assert dict(VX.bfd) == {"enable": "true", "min_rx": "100", "min_tx": "100", "mult": "3"}
    assert list(VX.bfd) == sorted(VX.bfd)  # as the snapshot rebuilds it from the row


def test_a_port_without_our_bfd_settings_is_fixed_and_one_with_them_is_left_alone() -> None:
    no_bfd = ours(VX)
    no_bfd.bfd = {}
    other_timers = ours(GR)
    other_timers.bfd = {**dict(GR.bfd), "min_rx": "1000"}
    assert diff_tunnels([no_bfd, other_timers, ours(GN)], [VX, GR, GN]).fix == (GR, VX)
    # The snapshot rebuilds the settings from the row: a port we wrote equals its desire.
    obs = build_observation("hv1", "br-int", [bridge("br-int", ours(VX))])
    assert obs.tunnels == frozenset({VX})


def test_bfd_status_is_read_for_our_tunnel_ports_only_and_stays_out_of_the_observation(
        ) -> None:
    up = {"state": "up", "forwarding": "true", "diagnostic": "No Diagnostic",
          "remote_state": "up", "flap_count": "1"}
    down = {"state": "down", "forwarding": "false",
            "diagnostic": "Control Detection Time Expired", "remote_state": "down",
            "flap_count": "2"}
    foreign = iface("vxforeign", [3], type="vxlan", bfd_status=up)
    rows = [bridge("br-int", ours(VX, bfd_status=up), ours(GR, bfd_status=down), ours(GN),
                   foreign)]
    bfd = build_bfd("br-int", rows)
    assert set(bfd) == {VX.name, GR.name}  # GN: OVS reports nothing yet
    assert bfd[VX.name] == BfdStatus("up", True, "No Diagnostic", "up", 1)
    assert bfd[GR.name].forwarding is False and bfd[GR.name].flap_count == 2
    assert bfd[GR.name].diagnostic == "Control Detection Time Expired"
    # A BFD change leaves the observation (what starts a reconcile round) as it was.
    flipped = [bridge("br-int", ours(VX, bfd_status=down), ours(GR, bfd_status=up), ours(GN),
                      foreign)]
    assert build_observation("hv1", "br-int", rows) == build_observation("hv1", "br-int",
                                                                         flipped)
    assert build_bfd("br-int", flipped) != bfd
    assert build_bfd("br-ex", rows) == {}


def test_diff_refuses_to_take_over_a_foreign_port() -> None:
    squatter = iface(VX.name, [3], type="vxlan", options=tunnel_options(VX))
    with pytest.raises(SouthboundError, match="does not own"):
        diff_tunnels([squatter], [VX])


def test_diff_rejects_bad_desires() -> None:
    with pytest.raises(SouthboundError, match="encapsulation"):
        diff_tunnels([], [VX.__class__("x1", "stt", "10.0.0.1", "hv1")])
    with pytest.raises(SouthboundError, match="twice"):
        diff_tunnels([], [VX, VX.__class__(VX.name, "vxlan", "10.0.0.77", "hv2")])


def test_bridge_other_config() -> None:
    spec = BridgeSpec("br-int", "netdev", ("tcp:127.0.0.1:6653",), datapath_id=0x42)
    assert spec.other_config() == {"disable-in-band": "true", "datapath-id": "0000000000000042"}
    assert BridgeSpec("br-int", "netdev", ()).other_config() == {"disable-in-band": "true"}
    with pytest.raises(SouthboundError):
        BridgeSpec("br-int", "netdev", (), datapath_id=1 << 64).other_config()
