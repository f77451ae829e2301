"""The underlay as every hypervisor's Open vSwitch sees it: one MAC per tunnel endpoint."""

from __future__ import annotations

import re

from hypetunnel.lab.hypervisor import PHYS_BRIDGE
from tests.lab.conftest import LabFabric


def link_mac(fabric: LabFabric, hv: str, dev: str) -> str:
    out = fabric.lab.exec(hv, ["cat", f"/sys/class/net/{dev}/address"]).stdout
    return out.strip().lower()


def test_each_tunnel_endpoint_answers_arp_with_its_bridge_mac_only(fabric: LabFabric) -> None:
    """The uplink is read by the userspace datapath through a packet socket, so the kernel
    sees its frames too; it must not answer ARP there with the uplink's MAC (a peer's native
    tunnelling that learns that MAC sends every tunnel frame where nothing terminates it)."""
    lab = fabric.lab
    names = list(lab.hypervisors)
    for src in names:
        for dst in (n for n in names if n != src):
            endpoint = lab.hypervisor(dst).underlay_ip
            out = lab.exec(src, ["arping", "-c", "3", "-w", "5", "-I", PHYS_BRIDGE, endpoint],
                           check=False).stdout
            answers = {m.lower() for m in re.findall(r"reply from \S+ \[([0-9A-Fa-f:]{17})\]",
                                                     out)}
            assert answers == {link_mac(fabric, dst, PHYS_BRIDGE)}, (src, dst, out)
            neigh = lab.hypervisor(src).ovs.appctl("tnl/neigh/show")
            learned = {ln.split()[1].lower() for ln in neigh.splitlines()
                       if ln.split()[:1] == [endpoint]}
            assert learned <= answers, (src, dst, neigh)
