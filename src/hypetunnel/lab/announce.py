"""A moved VM announces itself: gratuitous ARP from inside its namespace (as QEMU does after
a live migration), so peers' caches and any learning switch update at once."""

from __future__ import annotations

from hypetunnel.lab.proc import run
from hypetunnel.lab.state import LabVM

# Runs inside the VM: an ARP request for its own address, broadcast, three times.
_GARP = r"""
import socket, struct, sys, time
ifname = sys.argv[1]
mac = bytes.fromhex(sys.argv[2].replace(":", ""))
ip = socket.inet_aton(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip + b"\x00" * 6 + ip
frame = b"\xff" * 6 + mac + b"\x08\x06" + arp
for i in range(3):
    s.send(frame)
    time.sleep(0.05)
"""


def announce(vm: LabVM) -> None:
    run(["python3", "-c", _GARP, vm.ifname, vm.mac, vm.ip], netns=vm.netns, check=False)
