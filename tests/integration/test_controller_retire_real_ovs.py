"""Retiring a hypervisor against real Open vSwitch: HypeTunnel's flows and tunnel ports are
removed from it before the controller forgets it, and nothing else of it is touched."""

from __future__ import annotations

import asyncio

from tests.integration.test_controller_real_ovs import (
    BRIDGE,
    TENANT,
    Rig,
    controller,
    converged,
    dump_flows,
    plug,
    pytestmark,  # noqa: F401  (root + OVS, same tier and timeout)
    rig,  # noqa: F401  (the fixture)
    run_test,
    tunnels,
    until,
    until_ovs,
    vid,
)

FOREIGN_COOKIE = 0x1234  # somebody else's flow on br-int: not ours to remove


def test_a_retired_hypervisor_is_left_without_our_flows_and_tunnels(rig: Rig) -> None:  # noqa: F811
    hv1, hv2, hv3 = rig.hvs["hv1"], rig.hvs["hv2"], rig.hvs["hv3"]

    async def body() -> None:
        async with controller(rig) as ctl:
            ctl.service.apply(rig.intent({"web1": "hv1", "web2": "hv2", "web3": "hv3"}))
            for hv, vm in ((hv1, "web1"), (hv2, "web2"), (hv3, "web3")):
                await plug(hv, vm)
            await converged(ctl, rig, {vid("web1"): "hv1", vid("web2"): "hv2",
                                       vid("web3"): "hv3"})
            assert tunnels(hv3) and dump_flows(hv3)

            # hv3 is taken out: its VM goes first (deleted from the intent, port unplugged).
            await asyncio.to_thread(hv3.vsctl, "del-port", BRIDGE, "t-web3")
            ctl.service.delete_vm(TENANT, "web3")
            # A flow somebody else installed stays where it is.
            await asyncio.to_thread(hv3.ovs.ofctl, "add-flow",
                                    f"cookie={FOREIGN_COOKIE:#x},table=99,priority=1,"
                                    "actions=drop", bridge_mgmt=BRIDGE)
            ctl.service.delete_hypervisor("hv3")
            await until(lambda: "hv3" not in ctl.switches and not ctl.switches.retiring,
                        "hv3 retired and forgotten")
            assert list(dump_flows(hv3)) == [FOREIGN_COOKIE]
            assert tunnels(hv3) == {}
            # The others lost their tunnel towards it and still converge.
            await until_ovs(lambda: not tunnels(hv1) or all(
                t["remote_ip"] != "172.31.0.3" for t in tunnels(hv1).values()),
                "hv1's tunnel to hv3 removed")
            remaining = Rig(rig.root, {"hv1": hv1, "hv2": hv2})
            await converged(ctl, remaining, {vid("web1"): "hv1", vid("web2"): "hv2"})

    run_test(body)
