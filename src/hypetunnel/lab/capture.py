"""tcpdump on the lab's underlay: what really crosses the wire between hypervisors."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from hypetunnel.lab.topology import Lab
from hypetunnel.model.intent import MANAGEMENT_VNI, PROBE_VNI

_VXLAN = re.compile(r"VXLAN.*?vni (\d+)")
_GENEVE = re.compile(r"Geneve.*?vni (0x[0-9a-f]+|\d+)")
_GRE = re.compile(r"GRE.*?key=(0x[0-9a-f]+|\d+)")


@dataclass(frozen=True)
class Encapsulated:
    kind: str  # vxlan | gre | geneve
    vni: int


def parse(line: str) -> Encapsulated | None:
    for kind, rx in (("vxlan", _VXLAN), ("geneve", _GENEVE), ("gre", _GRE)):
        m = rx.search(line)
        if m:
            return Encapsulated(kind, int(m.group(1), 0))
    return None


# Tenant tunnels only: the management overlay's VXLAN (udp[12:4] holds VNI<<8) carries the
# controllers' own OpenFlow, OVSDB and etcd traffic, which would pass for tenant frames. BFD
# control packets ride every tenant tunnel with VNI (or GRE key) 0, and the latency prober's
# frames ride every tunnel with the reserved PROBE_VNI, which no network uses either: both
# are the tunnel's own health, not tenant traffic, and reach switches without the tenant by
# design. The GRE key sits at ip[24:4] (a 20-byte IPv4 header, then the GRE flags word; OVS
# sets no GRE checksum).
TENANT_TUNNELS = (f"(udp port 4789 and udp[12:4] != {MANAGEMENT_VNI << 8:#x} "
                  f"and udp[12:4] != {PROBE_VNI << 8:#x} and udp[12:4] != 0) or "
                  f"(udp port 6081 and udp[12:4] & 0xffffff00 != 0 "
                  f"and udp[12:4] & 0xffffff00 != {PROBE_VNI << 8:#x}) or "
                  f"(ip proto 47 and ip[24:4] != 0 and ip[24:4] != {PROBE_VNI:#x})")


def capture(lab: Lab, action: Callable[[], object], bpf: str = TENANT_TUNNELS,
            interface: str | None = None,
            netns: str | None = None, min_packets: int = 1,
            timeout: float = 10.0) -> list[str]:
    """Run tcpdump (on the underlay bridge by default) while `action` runs; return its lines."""
    from hypetunnel.lab.netns import UNDERLAY_BRIDGE

    ns = netns or lab.underlay_netns
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, "tcpdump", "-l", "-nn", "-v", "-i",
         interface or UNDERLAY_BRIDGE, bpf],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # tcpdump says "listening on" on stderr once the capture is armed.
        assert proc.stderr is not None
        first = proc.stderr.readline()
        if "listening" not in first:
            raise RuntimeError(f"tcpdump did not start: {first}")
        action()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=timeout)
    return out.splitlines()


def encapsulations(lines: list[str]) -> set[Encapsulated]:
    return {e for line in lines if (e := parse(line)) is not None}

