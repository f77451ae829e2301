"""The controller's move interruption: a figure that can come out non-zero."""

from __future__ import annotations

from hypetunnel.controller.moves import SwitchoverClock


def test_make_before_break_with_the_fabric_ready_first_is_no_interruption() -> None:
    c = SwitchoverClock("hv2", "hv3")
    c.observe(10.000, {"hv2"}, True)
    c.observe(10.010, {"hv2", "hv3"}, False)  # plugged at the destination, peers not yet
    c.observe(10.030, {"hv2", "hv3"}, True)  # every host of the network has the new flows
    c.observe(10.200, {"hv3"}, True)  # the old port goes
    assert c.complete
    assert c.interruption_ms() == 0.0
    assert c.lead_ms() == 170.0


def test_old_port_gone_before_the_peers_have_the_new_flows_is_an_interruption() -> None:
    # Both ports were live (make-before-break), yet the peers still sent to the old one when
    # it went: the destination's own flows being ready is not enough.
    c = SwitchoverClock("hv2", "hv3")
    c.observe(10.000, {"hv2", "hv3"}, False)
    c.observe(10.005, {"hv3"}, False)
    assert not c.complete and c.interruption_ms() is None
    c.observe(10.045, {"hv3"}, True)
    assert c.interruption_ms() == 40.0
    assert c.lead_ms() == -40.0


def test_cold_move_counts_from_the_old_port_going_to_the_fabric_ready_at_the_destination() -> None:
    c = SwitchoverClock("hv2", "hv3")
    c.observe(5.0, set(), True)  # stopped: nowhere, the fabric has nothing left to do
    assert not c.complete  # not ready until the VM is bound at the destination
    c.observe(5.5, {"hv3"}, False)
    c.observe(5.52, {"hv3"}, True)
    assert c.interruption_ms() == 520.0


def test_a_move_never_seen_at_the_destination_has_no_figure() -> None:
    c = SwitchoverClock("hv2", "hv3")
    for t in (1.0, 2.0, 3.0):
        c.observe(t, set(), True)
    assert not c.complete
    assert c.interruption_ms() is None and c.lead_ms() is None
